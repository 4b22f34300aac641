package policy

import (
	"math/rand/v2"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// TestOverfitOneBatch: AdamW on one fixed batch of random tokens drives the loss
// near zero, which proves forward, backward and the optimizer together learn.
func TestOverfitOneBatch(t *testing.T) {
	cfg := Config{VocabSize: 64, MaxSeqLen: 16, NumLayers: 2, NumHeads: 2, Channels: 32, LayerNormEps: 1e-5}
	m, err := New(cfg, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	B, T := 4, 16
	rng := rand.New(rand.NewPCG(9, 9))
	seq := randomTokens(rng, B*(T+1), cfg.VocabSize)
	tokens, targets := make([]int32, 0, B*T), make([]int32, 0, B*T)
	for b := 0; b < B; b++ {
		row := seq[b*(T+1) : (b+1)*(T+1)]
		tokens = append(tokens, row[:T]...)
		targets = append(targets, row[1:]...)
	}
	opt := NewAdamW(m, AdamWConfig{LR: 1e-2, WeightDecay: 0.1, GradClip: 1})
	var first, loss float32
	for step := 0; step < 300; step++ {
		m.ZeroGrad()
		loss = m.LossAndBackward(tokens, targets, nil, B, T)
		if step == 0 {
			first = loss
		}
		norm := opt.Update(m, opt.Config.LR)
		if !(norm > 0) {
			t.Fatalf("step %d: grad norm %v", step, norm)
		}
		if loss < 0.05 {
			t.Logf("loss %.3f -> %.4f in %d steps", first, loss, step+1)
			break
		}
	}
	if !(loss < 0.05) {
		t.Fatalf("loss %.3f -> %.4f after 300 steps, want < 0.05", first, loss)
	}
	if eval := m.Loss(tokens, targets, nil, B, T); eval > 0.1 {
		t.Fatalf("eval loss %v after training", eval)
	}
}

// TestAdamWDecay: a step with zero gradients moves only decayed tensors (by
// lr*wd*p), leaving biases and LayerNorm untouched.
func TestAdamWDecay(t *testing.T) {
	m := randomModel(t, gradConfig, 21, 0.2)
	before := download(m, m.Params)
	m.ZeroGrad()
	opt := NewAdamW(m, AdamWConfig{WeightDecay: 0.5})
	if opt.Config.Beta1 != 0.9 || opt.Config.Beta2 != 0.95 || opt.Config.Eps != 1e-8 {
		t.Fatalf("defaults not applied: %+v", opt.Config)
	}
	opt.Update(m, 0.1)
	after := download(m, m.Params)
	for _, s := range m.Layout.Specs {
		for i := s.Offset; i < s.Offset+s.Size; i++ {
			want := before[i]
			if s.Decay {
				want = before[i] * (1 - 0.1*0.5)
			}
			if d := after[i] - want; d > 1e-6 || d < -1e-6 {
				t.Fatalf("%s[%d]: %v -> %v, want %v", s.Name, i-s.Offset, before[i], after[i], want)
			}
		}
	}
	if opt.Step != 1 {
		t.Fatalf("Step %d, want 1", opt.Step)
	}
}
