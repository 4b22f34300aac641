//go:build cuda

package kernels

import (
	"fmt"
	"runtime"
	"testing"

	"gorgonia.org/cu"
)

// The cuda device's fused training ops and its padded and in-place product
// paths, each against the CPU device running the same package function (or
// the reference), and against the cuda device's own unfused path.

// CUDAOptions are the cuda device's switchable product paths (see the fields
// of cudaDevice), for same-binary comparisons in the kernels_test profiles.
type CUDAOptions struct {
	PadVocab, AttnPtrs, TallGrad, LtBias, FusedAttn, FuseHead, Vec4, HeadDWT bool
}

// DefaultCUDAOptions is what NewCUDA starts with.
func DefaultCUDAOptions() CUDAOptions {
	d := cudaDevice{}
	d.defaultOptions()
	return CUDAOptions{d.padVocab, d.attnPtrs, d.tallGrad, d.ltBias, d.fusedAttn, d.fuseHead, d.vec4, d.headDWT}
}

// StartCUDAOpTimes times every op dev queues from now on, on the GPU.
func StartCUDAOpTimes(dev Device) {
	d := dev.(*cudaDevice)
	defer d.enter()()
	if d.opTimes == nil {
		d.opTimes = &opTimer{}
	}
}

// StopCUDAOpTimes waits for the timed ops and returns their GPU times by name.
func StopCUDAOpTimes(dev Device) []OpTime {
	d := dev.(*cudaDevice)
	d.mu.Lock()
	defer d.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	d.check(cu.SetCurrentContext(d.ctx), "making the context current")
	o := d.opTimes
	d.opTimes = nil
	if o == nil {
		return nil
	}
	t := o.times(d)
	for i := range o.free {
		cu.DestroyEvent(&o.free[i])
	}
	return t
}

// SetCUDAOptions switches dev's product paths.
func SetCUDAOptions(dev Device, o CUDAOptions) {
	d := dev.(*cudaDevice)
	defer d.enter()()
	d.padVocab, d.attnPtrs, d.tallGrad, d.ltBias, d.fusedAttn = o.PadVocab, o.AttnPtrs, o.TallGrad, o.LtBias, o.FusedAttn && d.attnErr == nil
	d.fuseHead, d.vec4, d.headDWT = o.FuseHead, o.Vec4, o.HeadDWT
}

// TestCUDAGemmPadded: C = A B^T with a long n that is not a multiple of 64
// runs on zero-padded copies; the result, and C's columns past n (ldc > n),
// must be as without them.
func TestCUDAGemmPadded(t *testing.T) {
	d := testCUDA(t)
	defer SetCUDAOptions(d, DefaultCUDAOptions())
	rng := newRNG(131)
	// Long odd dimensions (the LM head's shapes: the padded path for n, the
	// transposed copy for k and m) and a tall A^T B (run transposed), in every
	// transpose.
	for _, s := range [][3]int{{300, 4099, 64}, {260, 72, 4133}, {4111, 70, 40}, {520, 264, 2100}} {
		m, n, k := s[0], s[1], s[2]
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			ta, tb, ldc := tr[0], tr[1], n+5
			a, lda, b, ldb, c := gemmOperands(rng, m, n, k, ta, tb, 3, ldc)
			for _, beta := range []float32{0, 0.5} {
				want := clone(c)
				refGemm(ta, tb, m, n, k, 0.7, a, lda, b, ldb, beta, want, ldc)
				for _, o := range []CUDAOptions{{PadVocab: true, TallGrad: true}, {}} {
					SetCUDAOptions(d, o)
					dc := up(d, c, 1)
					d.Gemm(ta, tb, m, n, k, 0.7, up(d, a, 0), lda, up(d, b, 2), ldb, beta, dc, ldc)
					relClose(t, fmt.Sprintf("Gemm %v trans=%v beta=%v %+v", s, tr, beta, o), down(d, dc), want, 1e-5)
				}
			}
		}
	}
}

// twinRun runs op on the CPU and on the GPU with the same inputs and returns
// each device's copy of the tensors it names after the call. The GPU copies
// sit at offsets that misalign most of them, unless aligned.
func twinRun(t *testing.T, d *cudaDevice, inputs [][]float32, aligned bool, op func(dev Device, ts []Tensor)) (cpu, gpu [][]float32) {
	t.Helper()
	c := NewCPU(1)
	var ct, gt []Tensor
	for i, x := range inputs {
		tc := c.Alloc(len(x))
		c.Upload(tc, x)
		ct = append(ct, tc)
		off := i % 3
		if aligned {
			off = 0
		}
		gt = append(gt, up(d, x, off))
	}
	op(c, ct)
	op(d, gt)
	for i := range inputs {
		cpu = append(cpu, clone(ct[i].F))
		gpu = append(gpu, down(d, gt[i]))
	}
	return cpu, gpu
}

func TestCUDAFused(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(137)
	t.Run("MatmulForwardResidual", func(t *testing.T) {
		// aligned operands take cublasLt (bias and residual in its epilogue),
		// misaligned ones a fill pass and a product with beta = 1
		N, C, OC := ltMinRows+6, 48, 96
		for _, withBias := range []bool{true, false} {
			for _, aligned := range []bool{true, false} {
				in := [][]float32{randn(rng, N*OC, 1), randn(rng, N*C, 1), randn(rng, C*OC, 1), randn(rng, OC, 1), randn(rng, N*OC, 1)}
				cpu, gpu := twinRun(t, d, in, aligned, func(dev Device, ts []Tensor) {
					bias := ts[3]
					if !withBias {
						bias = Tensor{}
					}
					MatmulForwardResidual(dev, ts[0], ts[1], ts[2], bias, ts[4], N, C, OC)
				})
				relClose(t, fmt.Sprintf("MatmulForwardResidual bias=%v aligned=%v", withBias, aligned), gpu[0], cpu[0], 1e-5)
			}
		}
	})
	t.Run("MatmulForward", func(t *testing.T) {
		// aligned operands of ltMinRows rows or more take cublasLt's bias
		// epilogue; misaligned ones and fewer rows a bias pass
		for _, s := range [][3]int{{ltMinRows + 6, 48, 96}, {ltMinRows, 768, 2304}, {256, 768, 2304}, {33, 20, 12}} {
			N, C, OC := s[0], s[1], s[2]
			for _, aligned := range []bool{true, false} {
				in := [][]float32{randn(rng, N*OC, 1), randn(rng, N*C, 1), randn(rng, C*OC, 1), randn(rng, OC, 1)}
				cpu, gpu := twinRun(t, d, in, aligned, func(dev Device, ts []Tensor) {
					MatmulForward(dev, ts[0], ts[1], ts[2], ts[3], N, C, OC)
				})
				relClose(t, fmt.Sprintf("MatmulForward %v aligned=%v", s, aligned), gpu[0], cpu[0], 1e-5)
			}
		}
	})
	t.Run("GeluBackwardOverwrite", func(t *testing.T) {
		n := 1000
		in := [][]float32{randn(rng, n, 1), randn(rng, n, 2), randn(rng, n, 1)} // dinp (garbage), inp, dout
		cpu, gpu := twinRun(t, d, in, false, func(dev Device, ts []Tensor) { GeluBackwardOverwrite(dev, ts[0], ts[1], ts[2], n) })
		relClose(t, "GeluBackwardOverwrite", gpu[0], cpu[0], cudaRtol)
	})
	t.Run("CrossEntropyForwardBackward", func(t *testing.T) {
		N, V := 9, 1031
		targets := randTokens(rng, N, V)
		mask := []float32{1, 0, 1, 0.5, 1, 1, 0, 1, 1}
		in := [][]float32{make([]float32, N), randn(rng, N*V, 1), randn(rng, N*V, 3)} // losses, dlogits (garbage), logits
		var losses [2]float32
		cpu, gpu := twinRun(t, d, in, false, func(dev Device, ts []Tensor) {
			l := CrossEntropyForwardBackward(dev, ts[0], ts[1], ts[2], targets, mask, 0.5, N, V)
			if _, ok := dev.(*CPU); ok {
				losses[0] = l
			} else {
				losses[1] = l
			}
		})
		relClose(t, "CrossEntropyForwardBackward losses", gpu[0], cpu[0], cudaRtol)
		relClose(t, "CrossEntropyForwardBackward dlogits", gpu[1], cpu[1], cudaRtol)
		relClose(t, "CrossEntropyForwardBackward mean loss", []float32{losses[1]}, []float32{losses[0]}, cudaRtol)
	})
	t.Run("AdamWScaled", func(t *testing.T) {
		n := 5000
		for _, gscale := range []float32{1, 0.37} {
			v := randn(rng, n, 1)
			for i := range v {
				v[i] *= v[i]
			}
			in := [][]float32{randn(rng, n, 1), randn(rng, n, 1), randn(rng, n, 0.1), v}
			cpu, gpu := twinRun(t, d, in, false, func(dev Device, ts []Tensor) {
				AdamWScaled(dev, ts[0], ts[1], ts[2], ts[3], gscale, 3, 1e-3, 0.9, 0.95, 1e-8, 0.1)
			})
			for i, name := range []string{"params", "grads", "m", "v"} {
				relClose(t, fmt.Sprintf("AdamWScaled gscale=%v %s", gscale, name), gpu[i], cpu[i], 1e-5)
			}
		}
	})
}

// TestCUDALMHeadBackward: the LM head's backward as the model runs it (fused
// cross-entropy, then dx and dW from dlogits) at a vocabulary that is long and
// odd, where the products read the padded copy the cross-entropy kept; against
// the CPU, and with the copy dropped by an op in between.
func TestCUDALMHeadBackward(t *testing.T) {
	d := testCUDA(t)
	defer SetCUDAOptions(d, DefaultCUDAOptions())
	rng := newRNG(139)
	N, C, V := 300, 64, 4099
	targets := randTokens(rng, N, V)
	mask := modMask(N) // a third of the rows masked out
	// losses, dlogits (garbage), logits, dinp (garbage), dweight, inp, weight (V,C)
	in := [][]float32{make([]float32, N), randn(rng, N*V, 1), randn(rng, N*V, 2), randn(rng, N*C, 1),
		randn(rng, V*C, 0.1), randn(rng, N*C, 1), randn(rng, V*C, 0.5)}
	for _, o := range []CUDAOptions{DefaultCUDAOptions(), {AttnPtrs: true}} {
		SetCUDAOptions(d, o)
		for _, between := range []bool{false, true} {
			cpu, gpu := twinRun(t, d, in, false, func(dev Device, ts []Tensor) {
				CrossEntropyForwardBackward(dev, ts[0], ts[1], ts[2], targets, mask, 1, N, V)
				if between {
					dev.Scale(ts[1], 2) // writes dlogits: the kept copy must not be used
				}
				MatmulTransBackwardOverwrite(dev, ts[3], ts[4], ts[1], ts[5], ts[6], N, C, V)
			})
			what := fmt.Sprintf("%+v scaled in between: %v", o, between)
			relClose(t, "dlogits "+what, gpu[1], cpu[1], cudaRtol)
			relClose(t, "dinp "+what, gpu[3], cpu[3], cudaRtol)
			relClose(t, "dweight "+what, gpu[4], cpu[4], cudaRtol)
		}
	}
}

// TestCUDALMHeadFused: LMHeadLossAndBackward on the cuda device (the head on
// padded scratch, the cross-entropy in place) against the CPU's composition, at
// a vocabulary that needs padding and one that does not, with masked rows.
func TestCUDALMHeadFused(t *testing.T) {
	d := testCUDA(t)
	if !LMHeadFused(d) {
		t.Fatal("the cuda device does not fuse the LM head by default")
	}
	rng := newRNG(141)
	N, C := 300, 64
	for _, V := range []int{4099, 4096} {
		targets := randTokens(rng, N, V)
		mask := modMask(N) // a third of the rows masked out
		// losses, dx (garbage), dwte (accumulated into), x, wte (V,C), logits scratch (the CPU's)
		in := [][]float32{make([]float32, N), randn(rng, N*C, 1), randn(rng, V*C, 0.1), randn(rng, N*C, 1),
			randn(rng, V*C, 0.5), make([]float32, N*V)}
		var loss [2]float32
		cpu, gpu := twinRun(t, d, in, false, func(dev Device, ts []Tensor) {
			l := LMHeadLossAndBackward(dev, ts[0], ts[1], ts[2], ts[5], ts[5], ts[3], ts[4], targets, mask, 0.5, N, C, V)
			if _, ok := dev.(*CPU); ok {
				loss[0] = l
			} else {
				loss[1] = l
			}
		})
		what := fmt.Sprintf("V=%d", V)
		relClose(t, "losses "+what, gpu[0], cpu[0], cudaRtol)
		relClose(t, "dx "+what, gpu[1], cpu[1], cudaRtol)
		relClose(t, "dwte "+what, gpu[2], cpu[2], cudaRtol)
		relClose(t, "mean loss "+what, loss[1:], loss[:1], cudaRtol)
	}
}

// TestCUDAVec4: the float4 GELU, AdamW and bias-gradient kernels against the
// cuda device's scalar kernels (Vec4 off), on aligned sizes that take them
// (and an odd width, which falls back). The float4 softmax and cross-entropy
// are checked against the CPU in TestCUDAAttention and TestCUDALMHeadFused.
func TestCUDAVec4(t *testing.T) {
	d := testCUDA(t)
	defer SetCUDAOptions(d, DefaultCUDAOptions())
	rng := newRNG(143)
	off := DefaultCUDAOptions()
	off.Vec4 = false
	n := 4 * 3001
	x, dout, acc := randn(rng, n, 2), randn(rng, n, 1), randn(rng, n, 1)
	v := randn(rng, n, 1)
	for i := range v {
		v[i] *= v[i]
	}
	p, g, m := randn(rng, n, 1), randn(rng, n, 1), randn(rng, n, 0.1)
	run := func(o CUDAOptions) (res [][]float32) {
		SetCUDAOptions(d, o)
		tx, out := up(d, x, 0), d.Alloc(n)
		d.GeluForward(out, tx, n)
		res = append(res, down(d, out))
		ta := up(d, acc, 0)
		d.GeluBackward(ta, tx, up(d, dout, 0), n)
		res = append(res, down(d, ta))
		GeluBackwardOverwrite(d, ta, tx, up(d, dout, 0), n)
		res = append(res, down(d, ta))
		tp, tg, tm, tv := up(d, p, 0), up(d, g, 0), up(d, m, 0), up(d, v, 0)
		AdamWScaled(d, tp, tg, tm, tv, 0.37, 3, 1e-3, 0.9, 0.95, 1e-8, 0.1)
		res = append(res, down(d, tp), down(d, tg), down(d, tm), down(d, tv))
		return res
	}
	want, got := run(off), run(DefaultCUDAOptions())
	for i, name := range []string{"GeluForward", "GeluBackward", "GeluBackwardOverwrite", "AdamW params", "AdamW grads", "AdamW m", "AdamW v"} {
		relClose(t, name, got[i], want[i], 1e-6)
	}
	for _, s := range [][2]int{{8192, 768}, {300, 3072}, {77, 96}, {40, 1602}} {
		N, OC := s[0], s[1]
		dout, db := randn(rng, N*OC, 1), randn(rng, OC, 1)
		bias := func(o CUDAOptions) []float32 {
			SetCUDAOptions(d, o)
			tb := up(d, db, 0)
			d.BiasBackward(tb, up(d, dout, 0), N, OC)
			return down(d, tb)
		}
		relClose(t, fmt.Sprintf("BiasBackward N=%d OC=%d", N, OC), bias(DefaultCUDAOptions()), bias(off), 1e-5)
	}
}

// TestCUDAAdamWRuns: AdamWRuns on the cuda device (one kernel over all runs
// when they fall on float4 boundaries, run by run when not) against the CPU's
// run-by-run AdamWScaled.
func TestCUDAAdamWRuns(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(153)
	for _, sizes := range [][]int{{768, 4096, 768, 768, 2304 * 8, 12}, {7, 64, 5}} {
		var runs []AdamWRun
		n := 0
		for i, s := range sizes {
			runs = append(runs, AdamWRun{Off: n, N: s, WeightDecay: float32(i%2) * 0.1})
			n += s
		}
		v := randn(rng, n, 1)
		for i := range v {
			v[i] *= v[i]
		}
		in := [][]float32{randn(rng, n, 1), randn(rng, n, 1), randn(rng, n, 0.1), v}
		for _, gscale := range []float32{1, 0.37} {
			cpu, gpu := twinRun(t, d, in, true, func(dev Device, ts []Tensor) {
				AdamWRuns(dev, ts[0], ts[1], ts[2], ts[3], runs, gscale, 3, 1e-3, 0.9, 0.95, 1e-8)
			})
			for i, name := range []string{"params", "grads", "m", "v"} {
				relClose(t, fmt.Sprintf("AdamWRuns %v gscale=%v %s", sizes, gscale, name), gpu[i], cpu[i], 1e-5)
			}
		}
	}
}
