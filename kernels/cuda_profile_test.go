//go:build cuda

package kernels_test

import (
	"fmt"
	"math"
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
	tokens64, targets64 := append(append([]int32(nil), tokens...), tokens...), append(append([]int32(nil), targets...), targets...)
	// run times steps training steps (the best after the first); hook, if set,
	// is called before each step.
	run := func(d kernels.Device, steps, B int, hook func(step int)) (time.Duration, float32) {
		m, err := policy.New(cfg, d)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		opt := policy.NewAdamW(m, policy.DefaultAdamWConfig())
		var best time.Duration
		var first float32
		for s := 0; s < steps; s++ {
			if hook != nil {
				hook(s)
			}
			t0 := time.Now()
			m.ZeroGrad()
			loss := m.LossAndBackward(tokens64[:B*T], targets64[:B*T], nil, B, T)
			opt.Update(m, 3e-4)
			d.Sync()
			if s == 0 {
				first = loss
			}
			if el := time.Since(t0); s > 0 && (best == 0 || el < best) {
				best = el
			}
		}
		m.ReleaseWorkspace()
		return best, first
	}
	// Same binary, same GPU, one variant after another: what each of the
	// device's training-step paths is worth. The wrapper hides the fused ops
	// (an embedded Device has only Device's methods).
	type hidden struct{ kernels.Device }
	var b strings.Builder
	if be, ok := dev.(interface{ Backend() string }); ok {
		t.Log(be.Backend())
	}
	// model FLOPs of a step, counted as troupe bench counts them (PaLM's way)
	nonEmb := cfg.NewLayout().Total - cfg.VocabSize*cfg.Channels - cfg.MaxSeqLen*cfg.Channels
	flops := float64(B*T) * (6*float64(nonEmb+cfg.VocabSize*cfg.Channels) + 12*float64(cfg.NumLayers*T*cfg.Channels))
	var ref float32
	def := kernels.DefaultCUDAOptions()
	with := func(f func(*kernels.CUDAOptions)) kernels.CUDAOptions { o := def; f(&o); return o }
	for i, v := range []struct {
		name string
		dev  kernels.Device
		o    kernels.CUDAOptions
		B    int
	}{
		{"default", dev, def, B},
		{"as before (none of these)", hidden{dev}, kernels.CUDAOptions{}, B},
		{"without the fused ops (incl. cublasLt bias)", hidden{dev}, def, B},
		{"without the padded LM head", dev, with(func(o *kernels.CUDAOptions) { o.PadVocab = false }), B},
		{"without in-place attention", dev, with(func(o *kernels.CUDAOptions) { o.AttnPtrs = false }), B},
		{"without transposed tall weight gradients", dev, with(func(o *kernels.CUDAOptions) { o.TallGrad = false }), B},
		{"without cublasLt (bias, residual epilogues)", dev, with(func(o *kernels.CUDAOptions) { o.LtBias = false }), B},
		{"without the fused LM head", dev, with(func(o *kernels.CUDAOptions) { o.FuseHead = false }), B},
		{"without the float4 kernels (GELU, AdamW, bias grad, softmax, CE)", dev, with(func(o *kernels.CUDAOptions) { o.Vec4 = false }), B},
		{"without the transposed LM-head dW", dev, with(func(o *kernels.CUDAOptions) { o.HeadDWT = false }), B},
		{"default, B=64", dev, def, 2 * B},
		{"with the fused attention kernels (WMMA)", dev, with(func(o *kernels.CUDAOptions) { o.FusedAttn = true }), B},
		{"with the fused attention kernels, B=64", dev, with(func(o *kernels.CUDAOptions) { o.FusedAttn = true }), 2 * B},
	} {
		kernels.SetCUDAOptions(dev, v.o)
		el, loss := run(v.dev, 4, v.B, nil)
		fl := flops * float64(v.B) / float64(B)
		t.Logf("  %-44s B=%d: %6.1f ms/step  %8.0f tokens/s  ~%5.1f TFLOP/s  first loss %.6f",
			v.name, v.B, el.Seconds()*1e3, float64(v.B*T)/el.Seconds(), fl/el.Seconds()/1e12, loss)
		if i == 0 {
			ref = loss
		} else if v.B == B && math.Abs(float64(loss-ref)) > 1e-3*math.Abs(float64(ref)) {
			t.Errorf("%s: first loss %v, default %v", v.name, loss, ref)
		}
	}
	kernels.SetCUDAOptions(dev, def)
	// The default without the tuned cublasLt products (a switch apart from the
	// options): Gemm's products on cuBLAS's first choice, as before.
	kernels.SetCUDALtTune(dev, false)
	el, loss := run(dev, 4, B, nil)
	t.Logf("  %-44s B=%d: %6.1f ms/step  %8.0f tokens/s  ~%5.1f TFLOP/s  first loss %.6f",
		"without the tuned cublasLt products", B, el.Seconds()*1e3, float64(B*T)/el.Seconds(), flops/el.Seconds()/1e12, loss)
	if math.Abs(float64(loss-ref)) > 1e-3*math.Abs(float64(ref)) {
		t.Errorf("without the tuned cublasLt products: first loss %v, default %v", loss, ref)
	}
	kernels.SetCUDALtTune(dev, true)
	// The default path op by op, timed on the GPU (events, no syncs): where the
	// step's GPU time goes, and how long the GPU waits for the CPU.
	for _, bb := range []int{B, 2 * B} {
		var t0 time.Time
		run(dev, 4, bb, func(s int) {
			if s == 2 {
				dev.Sync()
				kernels.StartCUDAOpTimes(dev)
				t0 = time.Now()
			}
		})
		wall := time.Since(t0) // the last two steps (and the model's release)
		times := kernels.StopCUDAOpTimes(dev)
		var gpu float64
		for _, o := range times {
			gpu += o.Ms
		}
		var eb strings.Builder
		fmt.Fprintf(&eb, "default path B=%d, GPU time by op (events; the last 2 of 4 steps): %.1f ms/step busy of %.1f ms/step wall\n",
			bb, gpu/2, wall.Seconds()*1e3/2)
		for _, o := range times {
			if o.Ms/gpu < 0.002 {
				continue
			}
			fmt.Fprintf(&eb, "  %-48s %8.3f ms/step %5d calls/step  %4.1f%%\n", o.Name, o.Ms/2, o.Calls/2, 100*o.Ms/gpu)
		}
		t.Log(eb.String())
	}
	plain, _ := run(dev, 4, B, nil)
	p := &timedDevice{Device: dev, total: map[string]time.Duration{}, calls: map[string]int{}}
	run(p, 2, B, nil)
	var names []string
	var sum time.Duration
	for n, d := range p.total {
		names = append(names, n)
		sum += d
	}
	sort.Slice(names, func(i, j int) bool { return p.total[names[i]] > p.total[names[j]] })
	fmt.Fprintf(&b, "GPT-2 124M B=%d T=%d: %.1f ms/step unprofiled; profiled (2 steps, synced per op; the fused ops show as their parts):\n", B, T, plain.Seconds()*1e3)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-32s %8.2f ms/step %5d calls/step  %4.1f%%\n", n, p.total[n].Seconds()*1e3/2, p.calls[n]/2, 100*p.total[n].Seconds()/sum.Seconds())
	}
	t.Log(b.String())
}
