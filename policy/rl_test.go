package policy

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// rlBatch returns B sequences of T+1 tokens and their (B,T) tokens and targets.
func rlBatch(rng *rand.Rand, B, T, V int) (seqs [][]int32, tokens, targets []int32) {
	for b := 0; b < B; b++ {
		s := randomTokens(rng, T+1, V)
		seqs = append(seqs, s)
		tokens = append(tokens, s[:T]...)
		targets = append(targets, s[1:]...)
	}
	return seqs, tokens, targets
}

// hostEntropy is the entropy of softmax(s*x) in float64.
func hostEntropy(x []float32, s float32) float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v*s))
	}
	var z float64
	for _, v := range x {
		z += math.Exp(float64(v*s) - mx)
	}
	var h float64
	for _, v := range x {
		lp := float64(v*s) - mx - math.Log(z)
		h -= math.Exp(lp) * lp
	}
	return h
}

// TestForwardLogProbs: the training path's log-probs equal LogProbsT's on the
// same sequences, and its entropies those of the (scaled) logits.
func TestForwardLogProbs(t *testing.T) {
	cfg := gradConfig
	m := randomModel(t, cfg, 11, 0.4)
	B, T := 3, cfg.MaxSeqLen-1
	seqs, tokens, targets := rlBatch(rand.New(rand.NewPCG(11, 11)), B, T, cfg.VocabSize)
	for _, temp := range []float32{0, 1, 0.7, 1.3} {
		want, err := m.LogProbsT(seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		logp, ent := m.ForwardLogProbs(tokens, targets, B, T, temp, false)
		if ent != nil {
			t.Fatalf("T=%v: entropies %v without wantEntropy, want nil", temp, ent)
		}
		for b := 0; b < B; b++ {
			for j := 0; j < T; j++ {
				if got, w := logp[b*T+j], want[b][j]; math.Abs(float64(got-w)) > 1e-5 {
					t.Fatalf("temperature %v: logp[%d,%d] = %v, LogProbsT %v", temp, b, j, got, w)
				}
			}
		}
		s := float32(1)
		if temp > 0 && temp != 1 {
			s = 1 / temp
		}
		logits := download(m, m.Forward(tokens, B, T))
		logp2, ent := m.ForwardLogProbs(tokens, targets, B, T, temp, true)
		V := cfg.VocabSize
		for i := range ent {
			if logp2[i] != logp[i] {
				t.Fatalf("temperature %v: logp[%d] is %v with entropy, %v without", temp, i, logp2[i], logp[i])
			}
			w := hostEntropy(logits[i*V:i*V+V], s)
			if math.Abs(float64(ent[i])-w) > 1e-5 || !(w > 0.1) {
				t.Fatalf("temperature %v: ent[%d] = %v, want %v", temp, i, ent[i], w)
			}
		}
	}
}

// TestBackwardLogProbsGradient compares BackwardLogProbs with central
// differences of Σ dlogp·logp + dent·ent, at temperature 1, 0.7 and 0, with and
// without entropy, some rows' coefficients zero.
func TestBackwardLogProbsGradient(t *testing.T) {
	cfg := gradConfig
	B, T := 2, 5
	N := B * T
	for _, tc := range []struct {
		temp    float32
		entropy bool
	}{{1, false}, {0.7, true}, {0, true}, {0.7, false}} {
		t.Run(fmt.Sprintf("T=%v,entropy=%v", tc.temp, tc.entropy), func(t *testing.T) {
			m := randomModel(t, cfg, 12, 0.3)
			rng := rand.New(rand.NewPCG(12, 12))
			_, tokens, targets := rlBatch(rng, B, T, cfg.VocabSize)
			dlogp := make([]float32, N)
			var dent []float32
			for i := range dlogp {
				dlogp[i] = float32(rng.NormFloat64())
			}
			dlogp[1], dlogp[6] = 0, 0
			if tc.entropy {
				dent = make([]float32, N)
				for i := range dent {
					dent[i] = float32(rng.NormFloat64())
				}
				dent[1], dent[4] = 0, 0
			}
			f := func() float64 {
				logp, ent := m.ForwardLogProbs(tokens, targets, B, T, tc.temp, tc.entropy)
				var s float64
				for i := range logp {
					s += float64(dlogp[i]) * float64(logp[i])
					if tc.entropy {
						s += float64(dent[i]) * float64(ent[i])
					}
				}
				return s
			}
			f()
			m.ZeroGrad()
			m.BackwardLogProbs(dlogp, dent)
			grads := download(m, m.Grads)
			checkGrads(t, m, grads, f)
		})
	}
}

// TestBackwardLogProbsAccumulates: a second backward adds the same gradient
// again, and a backward without its forward is refused.
func TestBackwardLogProbsAccumulates(t *testing.T) {
	cfg := gradConfig
	m := randomModel(t, cfg, 13, 0.3)
	B, T := 2, 4
	rng := rand.New(rand.NewPCG(13, 13))
	_, tokens, targets := rlBatch(rng, B, T, cfg.VocabSize)
	dlogp, dent := make([]float32, B*T), make([]float32, B*T)
	for i := range dlogp {
		dlogp[i], dent[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	m.ForwardLogProbs(tokens, targets, B, T, 0.8, true)
	m.ZeroGrad()
	m.BackwardLogProbs(dlogp, dent)
	once := download(m, m.Grads)
	m.BackwardLogProbs(dlogp, dent)
	twice := download(m, m.Grads)
	for i := range twice {
		if d := math.Abs(float64(twice[i] - 2*once[i])); d > 1e-5+1e-5*math.Abs(float64(once[i])) {
			t.Fatalf("grad %d: second pass gives %v, want 2*%v", i, twice[i], once[i])
		}
	}

	refused := func(what string, fn func()) {
		t.Helper()
		defer func() {
			if err, _ := recover().(error); !errors.Is(err, ErrNoForward) {
				t.Fatalf("%s: got panic %v, want ErrNoForward", what, err)
			}
		}()
		fn()
	}
	m.ReleaseWorkspace()
	refused("after ReleaseWorkspace", func() { m.BackwardLogProbs(dlogp, dent) })
	m.ForwardHidden(tokens, B, T)
	refused("after ForwardHidden", func() { m.BackwardLogProbs(dlogp, dent) })
	fresh := randomModel(t, cfg, 14, 0.3)
	fresh.Forward(tokens, B, T)
	refused("after Forward only", func() { fresh.BackwardLogProbs(dlogp, dent) })
}
