//go:build cuda

package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
)

// timedDevice wraps a Device and charges each op's wall time, synchronised, to
// its name (Gemm to its shape): where a training step's GPU time goes. The
// syncs add a few microseconds per op, so totals exceed the unprofiled step.
type timedDevice struct {
	kernels.Device
	total map[string]time.Duration
	calls map[string]int
}

func (p *timedDevice) time(name string) func() {
	t0 := time.Now()
	return func() {
		p.Device.Sync()
		p.total[name] += time.Since(t0)
		p.calls[name]++
	}
}

func (p *timedDevice) Zero(t kernels.Tensor)    { defer p.time("Zero")(); p.Device.Zero(t) }
func (p *timedDevice) Copy(a, b kernels.Tensor) { defer p.time("Copy")(); p.Device.Copy(a, b) }
func (p *timedDevice) Scale(t kernels.Tensor, s float32) {
	defer p.time("Scale")()
	p.Device.Scale(t, s)
}
func (p *timedDevice) AddInto(a, b kernels.Tensor) { defer p.time("AddInto")(); p.Device.AddInto(a, b) }
func (p *timedDevice) SumSquares(t kernels.Tensor) float64 {
	defer p.time("SumSquares")()
	return p.Device.SumSquares(t)
}
func (p *timedDevice) Download(dst []float32, src kernels.Tensor) {
	defer p.time("Download")()
	p.Device.Download(dst, src)
}
func (p *timedDevice) Gemm(ta, tb bool, m, n, k int, alpha float32, a kernels.Tensor, lda int, b kernels.Tensor, ldb int, beta float32, c kernels.Tensor, ldc int) {
	defer p.time(fmt.Sprintf("Gemm %v%v %dx%dx%d", b2s(ta), b2s(tb), m, n, k))()
	p.Device.Gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
func b2s(b bool) string {
	if b {
		return "T"
	}
	return "N"
}
func (p *timedDevice) AddBias(out, bias kernels.Tensor, N, OC int) {
	defer p.time("AddBias")()
	p.Device.AddBias(out, bias, N, OC)
}
func (p *timedDevice) BiasBackward(db, dout kernels.Tensor, N, OC int) {
	defer p.time("BiasBackward")()
	p.Device.BiasBackward(db, dout, N, OC)
}
func (p *timedDevice) EncoderForward(out kernels.Tensor, tok, pos []int32, wte, wpe kernels.Tensor, N, C int) {
	defer p.time("EncoderForward")()
	p.Device.EncoderForward(out, tok, pos, wte, wpe, N, C)
}
func (p *timedDevice) EncoderBackward(dwte, dwpe, dout kernels.Tensor, tok, pos []int32, N, C int) {
	defer p.time("EncoderBackward")()
	p.Device.EncoderBackward(dwte, dwpe, dout, tok, pos, N, C)
}
func (p *timedDevice) LayerNormForward(out, mean, rstd, inp, w, b kernels.Tensor, N, C int, eps float32) {
	defer p.time("LayerNormForward")()
	p.Device.LayerNormForward(out, mean, rstd, inp, w, b, N, C, eps)
}
func (p *timedDevice) LayerNormBackward(dinp, dw, db, dout, inp, w, mean, rstd kernels.Tensor, N, C int) {
	defer p.time("LayerNormBackward")()
	p.Device.LayerNormBackward(dinp, dw, db, dout, inp, w, mean, rstd, N, C)
}
func (p *timedDevice) GeluForward(out, inp kernels.Tensor, n int) {
	defer p.time("GeluForward")()
	p.Device.GeluForward(out, inp, n)
}
func (p *timedDevice) GeluBackward(dinp, inp, dout kernels.Tensor, n int) {
	defer p.time("GeluBackward")()
	p.Device.GeluBackward(dinp, inp, dout, n)
}
func (p *timedDevice) AttentionForward(out, att, qkv kernels.Tensor, B, T, C, NH int) {
	defer p.time("AttentionForward")()
	p.Device.AttentionForward(out, att, qkv, B, T, C, NH)
}
func (p *timedDevice) AttentionBackward(dqkv, dout, qkv, att kernels.Tensor, B, T, C, NH int) {
	defer p.time("AttentionBackward")()
	p.Device.AttentionBackward(dqkv, dout, qkv, att, B, T, C, NH)
}
func (p *timedDevice) LogProbForward(logp, logits kernels.Tensor, targets []int32, N, V int) {
	defer p.time("LogProbForward")()
	p.Device.LogProbForward(logp, logits, targets, N, V)
}
func (p *timedDevice) LogProbBackward(dlogits, logits kernels.Tensor, targets []int32, dlogp []float32, N, V int) {
	defer p.time("LogProbBackward")()
	p.Device.LogProbBackward(dlogits, logits, targets, dlogp, N, V)
}
func (p *timedDevice) AdamW(params, grads, m, v kernels.Tensor, step int, lr, b1, b2, eps, wd float32) {
	defer p.time("AdamW")()
	p.Device.AdamW(params, grads, m, v, step, lr, b1, b2, eps, wd)
}

// TestCUDAProfileGPT2 (TROUPE_CUDA_PROFILE=1) times GPT-2 124M training steps
// at B=32, T=256 plainly and op by op.
func TestCUDAProfileGPT2(t *testing.T) {
	if os.Getenv("TROUPE_CUDA_PROFILE") == "" {
		t.Skip("set TROUPE_CUDA_PROFILE=1 to profile a GPT-2 training step")
	}
	dev := cudaOrSkip(t)
	cfg := policy.GPT2Small()
	cfg.MaxSeqLen = 256
	B, T := 32, 256
	rng := rand.New(rand.NewPCG(1, 2))
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	for i := range tokens {
		tokens[i], targets[i] = int32(rng.IntN(cfg.VocabSize)), int32(rng.IntN(cfg.VocabSize))
	}
	run := func(d kernels.Device, steps int) time.Duration {
		m, err := policy.New(cfg, d)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		opt := policy.NewAdamW(m, policy.DefaultAdamWConfig())
		var best time.Duration
		for s := 0; s < steps; s++ {
			t0 := time.Now()
			m.ZeroGrad()
			m.LossAndBackward(tokens, targets, nil, B, T)
			opt.Update(m, 3e-4)
			d.Sync()
			if el := time.Since(t0); s > 0 && (best == 0 || el < best) {
				best = el
			}
		}
		m.ReleaseWorkspace()
		return best
	}
	plain := run(dev, 4)
	p := &timedDevice{Device: dev, total: map[string]time.Duration{}, calls: map[string]int{}}
	run(p, 2)
	var names []string
	var sum time.Duration
	for n, d := range p.total {
		names = append(names, n)
		sum += d
	}
	sort.Slice(names, func(i, j int) bool { return p.total[names[i]] > p.total[names[j]] })
	var b strings.Builder
	fmt.Fprintf(&b, "GPT-2 124M B=%d T=%d: %.1f ms/step unprofiled; profiled (2 steps, synced per op):\n", B, T, plain.Seconds()*1e3)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-32s %8.2f ms/step %5d calls/step  %4.1f%%\n", n, p.total[n].Seconds()*1e3/2, p.calls[n]/2, 100*p.total[n].Seconds()/sum.Seconds())
	}
	t.Log(b.String())
}
