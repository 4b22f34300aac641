//go:build cuda

package kernels

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
)

// Every op of the cuda device against the CPU reference (reference.go), on
// shapes with odd sizes and offsets. The tolerance is relative to the largest
// value of the reference: 1e-3 at most. The matrix products run in full FP32
// here; TF32 (the default, 10-bit mantissas) gets its own, looser checks on Gemm
// and attention, and the model tests (cuda_model_test.go) run with it.

var (
	cudaOnce sync.Once
	cudaDev  *cudaDevice
	cudaErr  error
)

// testCUDA returns the shared device, skipping the test without one.
func testCUDA(t *testing.T) *cudaDevice {
	t.Helper()
	cudaOnce.Do(func() {
		if cudaDev, cudaErr = newCUDA(0); cudaErr == nil {
			cudaDev.setTF32(false)
		}
	})
	if cudaErr != nil {
		t.Skipf("no CUDA device: %v", cudaErr)
	}
	return cudaDev
}

// up puts host values on the device; at an offset into a larger buffer when off
// > 0, so that kernels see addresses that are not 16-byte aligned.
func up(d *cudaDevice, x []float32, off int) Tensor {
	buf := d.Alloc(len(x) + off)
	t := buf.Slice(off, len(x))
	d.Upload(t, x)
	return t
}

// down copies a device tensor to the host.
func down(d *cudaDevice, t Tensor) []float32 {
	x := make([]float32, t.N)
	d.Download(x, t)
	return x
}

// relClose fails unless max|got-want| <= rtol * max|want| (and nothing is NaN).
func relClose(t *testing.T, what string, got, want []float32, rtol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	var scale, worst float64
	at := -1
	for i := range want {
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	for i := range got {
		e := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(e) {
			t.Fatalf("%s[%d]: got %v, want %v", what, i, got[i], want[i])
		}
		if e > worst {
			worst, at = e, i
		}
	}
	if scale == 0 {
		scale = 1
	}
	if worst > rtol*scale {
		t.Fatalf("%s[%d]: got %v, want %v (max error %.3g of max |want| %.3g, tolerance %.0e)", what, at, got[at], want[at], worst, scale, rtol)
	}
}

// cudaRtol is the tolerance of the ops whose float32 sums run in another
// order than the reference's; tf32Rtol that of products on TF32 tensor cores,
// whose inputs keep 10 of float32's 23 mantissa bits (relative error ~1e-3 per
// product, ~1e-3 of the typical output after summing k of them).
const (
	cudaRtol = 1e-3
	tf32Rtol = 5e-3
)

func TestCUDAElementwise(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(101)
	for _, n := range []int{1, 7, 1000, 100003} {
		a, b := randn(rng, n, 1), randn(rng, n, 1)
		ta, tb, out := up(d, a, 3), up(d, b, 0), d.Alloc(n)
		d.Add(out, ta, tb)
		want := make([]float32, n)
		for i := range want {
			want[i] = a[i] + b[i]
		}
		relClose(t, fmt.Sprintf("Add n=%d", n), down(d, out), want, 0)
		d.AddInto(out, ta)
		for i := range want {
			want[i] += a[i]
		}
		relClose(t, fmt.Sprintf("AddInto n=%d", n), down(d, out), want, 0)
		d.Scale(out, -0.5)
		for i := range want {
			want[i] *= -0.5
		}
		relClose(t, fmt.Sprintf("Scale n=%d", n), down(d, out), want, 0)
		got, ref := d.SumSquares(out), refSumSquares(want)
		if math.Abs(got-ref) > 1e-12*ref {
			t.Fatalf("SumSquares n=%d: got %v, want %v", n, got, ref)
		}
		cp := d.Alloc(n)
		d.Copy(cp, out)
		d.Zero(out)
		relClose(t, "Copy", down(d, cp), want, 0)
		if d.SumSquares(out) != 0 {
			t.Fatalf("Zero: got nonzero, want 0")
		}
	}
	if got := d.Alloc(0); !got.Empty() {
		t.Fatalf("Alloc(0): got %+v, want empty", got)
	}
}

func TestCUDAGemm(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(102)
	defer d.setTF32(false)
	for _, tf32 := range []bool{false, true} {
		d.setTF32(tf32)
		rtol := 1e-5
		if tf32 {
			rtol = tf32Rtol
		}
		for _, s := range [][3]int{{1, 1, 1}, {7, 5, 3}, {64, 48, 96}, {130, 257, 77}, {256, 768, 512}} {
			m, n, k := s[0], s[1], s[2]
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				for _, beta := range []float32{0, 1} {
					ta, tb, ldc := tr[0], tr[1], n+1
					a, lda, b, ldb, c := gemmOperands(rng, m, n, k, ta, tb, 3, ldc)
					want := clone(c)
					refGemm(ta, tb, m, n, k, 0.7, a, lda, b, ldb, beta, want, ldc)
					dc := up(d, c, 1)
					d.Gemm(ta, tb, m, n, k, 0.7, up(d, a, 0), lda, up(d, b, 2), ldb, beta, dc, ldc)
					relClose(t, fmt.Sprintf("Gemm tf32=%v %v trans=%v beta=%v", tf32, s, tr, beta), down(d, dc), want, rtol)
				}
			}
		}
	}
	// k == 0 scales C by beta.
	c := []float32{1, 2, 3, 4}
	dc := up(d, c, 0)
	d.Gemm(false, false, 2, 2, 0, 1, up(d, []float32{1}, 0), 1, up(d, []float32{1}, 0), 2, 0.5, dc, 2)
	relClose(t, "Gemm k=0", down(d, dc), []float32{0.5, 1, 1.5, 2}, 0)
}

// TestCUDAGemmRates (TROUPE_CUDA_PROFILE=1) times cuBLAS at GPT-2's shapes in
// each transpose and math mode: where the products' ceiling lies.
func TestCUDAGemmRates(t *testing.T) {
	d := profileCUDA(t)
	var b strings.Builder
	for _, tf32 := range []bool{true, false} {
		d.setTF32(tf32)
		for _, s := range [][3]int{{8192, 8192, 8192}, {8192, 2304, 768}, {8192, 768, 3072}, {768, 3072, 8192}, {768, 768, 8192},
			{8192, 50257, 768}, {8192, 768, 50257}, {50257, 768, 8192}, {8192, 50304, 768}, {50304, 768, 8192}} {
			if !tf32 && s[0] != 8192 || !tf32 && s[1] != 8192 {
				continue // FP32 only for the square reference
			}
			m, n, k := s[0], s[1], s[2]
			A, B, C := d.Alloc(m*k), d.Alloc(k*n), d.Alloc(m*n)
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				lda, ldb := k, n
				if tr[0] {
					lda = m
				}
				if tr[1] {
					ldb = k
				}
				el := perCall(d, 3, func() { d.Gemm(tr[0], tr[1], m, n, k, 1, A, lda, B, ldb, 0, C, n) })
				fmt.Fprintf(&b, "  tf32=%-5v %5dx%5dx%5d trans=%s%s  %7.3f ms  %6.1f TFLOP/s\n", tf32, m, n, k,
					map[bool]string{false: "N", true: "T"}[tr[0]], map[bool]string{false: "N", true: "T"}[tr[1]], el*1e3, 2*float64(m)*float64(n)*float64(k)/el/1e12)
			}
			d.Free(A)
			d.Free(B)
			d.Free(C)
		}
	}
	t.Log("\n" + b.String())
}

// TestCUDAGemmTransposed: the long-k products that Gemm runs on a transposed
// copy of A, and the reuse of that copy while A is unchanged (the LM head's
// backward pattern: A B with an odd k, then A^T B on the same stored matrix).
// Any other op drops the copy, so the products under test run back to back.
func TestCUDAGemmTransposed(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(113)
	// A stored (R, K): A B has the odd k = K (a transposed copy is made), A^T B
	// has k = R and reuses it, unless a product wrote A in between.
	R, K, n := 2048, 2051, 8
	a := randn(rng, R*K, 1)
	da := up(d, a, 1)
	b1, b2, x, y := randn(rng, K*n, 1), randn(rng, R*n, 1), randn(rng, R, 1), randn(rng, K, 1)
	db1, db2, dx, dy := up(d, b1, 0), up(d, b2, 0), up(d, x, 0), up(d, y, 0)
	for _, writeA := range []bool{false, true} {
		c1, c2 := d.Alloc(R*n), d.Alloc(K*n)
		d.Gemm(false, false, R, n, K, 0.5, da, K, db1, n, 0, c1, n) // copy made
		w1 := make([]float32, R*n)
		refGemm(false, false, R, n, K, 0.5, a, K, b1, n, 0, w1, n)
		if writeA {
			d.Gemm(false, false, R, K, 1, 1, dx, 1, dy, K, 1, da, K) // A += x y: the copy is stale
			refGemm(false, false, R, K, 1, 1, x, 1, y, K, 1, a, K)
		}
		d.Gemm(true, false, K, n, R, 0.5, da, K, db2, n, 0, c2, n) // copy reused, or remade
		w2 := make([]float32, K*n)
		refGemm(true, false, K, n, R, 0.5, a, K, b2, n, 0, w2, n)
		relClose(t, fmt.Sprintf("A B (A written after: %v)", writeA), down(d, c1), w1, 1e-5)
		relClose(t, fmt.Sprintf("A^T B (A written before: %v)", writeA), down(d, c2), w2, 1e-5)
	}
	// A weight gradient's shape: A^T B with A stored (k,m) = (4096, 300), beta = 1.
	w, b := randn(rng, 4096*300, 1), randn(rng, 4096*40, 1)
	c := randn(rng, 300*40, 1)
	want := clone(c)
	refGemm(true, false, 300, 40, 4096, 0.5, w, 300, b, 40, 1, want, 40)
	dc := up(d, c, 0)
	d.Gemm(true, false, 300, 40, 4096, 0.5, up(d, w, 3), 300, up(d, b, 0), 40, 1, dc, 40)
	relClose(t, "weight gradient", down(d, dc), want, 1e-5)
}

func TestCUDABias(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(103)
	for _, s := range [][2]int{{1, 1}, {7, 53}, {300, 37}, {2048, 129}, {4096, 768}} {
		N, OC := s[0], s[1]
		out, bias := randn(rng, N*OC, 1), randn(rng, OC, 1)
		want := clone(out)
		dout := up(d, out, 1)
		d.AddBias(dout, up(d, bias, 0), N, OC)
		refAddBias(want, bias, N, OC)
		relClose(t, fmt.Sprintf("AddBias %v", s), down(d, dout), want, 1e-6)
		db := randn(rng, OC, 1)
		wantDb := clone(db)
		ddb := up(d, db, 3)
		d.BiasBackward(ddb, up(d, out, 0), N, OC)
		refBiasBackward(wantDb, out, N, OC)
		relClose(t, fmt.Sprintf("BiasBackward %v", s), down(d, ddb), wantDb, 1e-5)
	}
}

func TestCUDAEncoder(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(104)
	V, maxT, C, N := 50, 20, 37, 64
	wte, wpe := randn(rng, V*C, 1), randn(rng, maxT*C, 1)
	tokens, pos := randTokens(rng, N, V), randTokens(rng, N, maxT)
	tokens[1], tokens[5] = 3, 3 // repeated ids add up
	want := make([]float32, N*C)
	refEncoderForward(want, tokens, pos, wte, wpe, N, C)
	out := d.Alloc(N * C)
	d.EncoderForward(out, tokens, pos, up(d, wte, 1), up(d, wpe, 2), N, C)
	relClose(t, "EncoderForward", down(d, out), want, 0)
	dout := randn(rng, N*C, 1)
	dwte, dwpe := randn(rng, V*C, 1), randn(rng, maxT*C, 1)
	wantWte, wantWpe := clone(dwte), clone(dwpe)
	refEncoderBackward(wantWte, wantWpe, dout, tokens, pos, N, C)
	gw, gp := up(d, dwte, 0), up(d, dwpe, 0)
	d.EncoderBackward(gw, gp, up(d, dout, 0), tokens, pos, N, C)
	relClose(t, "EncoderBackward dwte", down(d, gw), wantWte, 1e-6)
	relClose(t, "EncoderBackward dwpe", down(d, gp), wantWpe, 1e-6)
}

func TestCUDALayerNorm(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(105)
	for _, s := range [][2]int{{1, 5}, {33, 48}, {300, 768}, {2000, 1024}, {5, 1600}} {
		N, C := s[0], s[1]
		inp, w, b := randn(rng, N*C, 2), randn(rng, C, 1), randn(rng, C, 1)
		for i := range inp {
			inp[i] += 3 // a mean far from 0, as the two-pass variance expects
		}
		out, mean, rstd := make([]float32, N*C), make([]float32, N), make([]float32, N)
		refLayerNormForward(out, mean, rstd, inp, w, b, N, C, 1e-5)
		dinp, dw, db := up(d, inp, 1), up(d, w, 0), up(d, b, 2)
		gout, gmean, grstd := d.Alloc(N*C), d.Alloc(N), d.Alloc(N)
		d.LayerNormForward(gout, gmean, grstd, dinp, dw, db, N, C, 1e-5)
		relClose(t, fmt.Sprintf("LayerNormForward %v out", s), down(d, gout), out, cudaRtol)
		relClose(t, fmt.Sprintf("LayerNormForward %v mean", s), down(d, gmean), mean, cudaRtol)
		relClose(t, fmt.Sprintf("LayerNormForward %v rstd", s), down(d, grstd), rstd, cudaRtol)
		g2 := d.Alloc(N * C)
		d.LayerNormForward(g2, Tensor{}, Tensor{}, dinp, dw, db, N, C, 1e-5)
		relClose(t, fmt.Sprintf("LayerNormForward %v without stats", s), down(d, g2), out, cudaRtol)

		dout := randn(rng, N*C, 1)
		gi, gw, gb := randn(rng, N*C, 1), randn(rng, C, 1), randn(rng, C, 1)
		wi, ww, wb := clone(gi), clone(gw), clone(gb)
		refLayerNormBackward(wi, ww, wb, dout, inp, w, mean, rstd, N, C)
		ti, tw, tb := up(d, gi, 0), up(d, gw, 1), up(d, gb, 0)
		d.LayerNormBackward(ti, tw, tb, up(d, dout, 0), dinp, dw, gmean, grstd, N, C)
		relClose(t, fmt.Sprintf("LayerNormBackward %v dinp", s), down(d, ti), wi, cudaRtol)
		relClose(t, fmt.Sprintf("LayerNormBackward %v dweight", s), down(d, tw), ww, cudaRtol)
		relClose(t, fmt.Sprintf("LayerNormBackward %v dbias", s), down(d, tb), wb, cudaRtol)
		// Without the parameter gradients.
		ti2 := up(d, gi, 0)
		d.LayerNormBackward(ti2, Tensor{}, Tensor{}, up(d, dout, 0), dinp, dw, gmean, grstd, N, C)
		relClose(t, fmt.Sprintf("LayerNormBackward %v dinp only", s), down(d, ti2), wi, cudaRtol)
	}
}

func TestCUDAGelu(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(106)
	n := 10007
	x := randn(rng, n, 3)
	want := make([]float32, n)
	refGeluForward(want, x, n)
	dx, out := up(d, x, 1), d.Alloc(n)
	d.GeluForward(out, dx, n)
	relClose(t, "GeluForward", down(d, out), want, 1e-5)
	dout, din := randn(rng, n, 1), randn(rng, n, 1)
	wantIn := clone(din)
	refGeluBackward(wantIn, x, dout, n)
	gi := up(d, din, 0)
	d.GeluBackward(gi, dx, up(d, dout, 2), n)
	relClose(t, "GeluBackward", down(d, gi), wantIn, 1e-5)
}

func TestCUDAAttention(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(107)
	defer d.setTF32(false)
	defer SetCUDAOptions(d, DefaultCUDAOptions())
	// s[5]: 0 misaligned operands (permuted copies), 1 aligned (in place through
	// address arrays), 2 aligned with the fused kernels on (used with TF32 at
	// head size 64 and T a multiple of 64).
	for _, s := range [][6]int{{1, 1, 8, 2, 0, 1}, {2, 37, 48, 3, 0, 1}, {2, 38, 48, 3, 0, 1}, {3, 128, 64, 4, 0, 1}, {2, 256, 768, 12, 0, 1}, {2, 256, 768, 12, 1, 1},
		{2, 37, 48, 3, 0, 0}, {2, 256, 768, 12, 1, 0}, {1, 512, 128, 2, 0, 1}, {1, 1024, 64, 1, 0, 1}, {1, 1024, 64, 1, 0, 0},
		{2, 256, 768, 12, 1, 2}, {3, 128, 128, 2, 1, 2}, {1, 64, 64, 1, 1, 2}, {2, 192, 256, 4, 1, 2}, {1, 512, 128, 2, 1, 2}} {
		B, T, C, NH := s[0], s[1], s[2], s[3]
		tf32 := s[4] == 1
		d.setTF32(tf32)
		o := DefaultCUDAOptions()
		o.AttnPtrs, o.FusedAttn = s[5] >= 1, s[5] == 2
		if s[5] == 2 && d.attnErr != nil {
			t.Fatalf("the fused attention kernels did not compile: %v", d.attnErr)
		}
		SetCUDAOptions(d, o)
		rtol := 1e-4
		if tf32 {
			rtol = tf32Rtol
		}
		qkv := randn(rng, B*T*3*C, 1)
		out, att := make([]float32, B*T*C), make([]float32, B*NH*T*T)
		refAttentionForward(out, att, qkv, B, T, C, NH)
		// The in-place path needs 16-byte aligned operands (cuBLAS reads the
		// address arrays unchecked); misaligned ones take the permuted path.
		off := 0
		if s[5] == 0 {
			off = 1
		}
		gq, gout, gatt := up(d, qkv, off), d.Alloc(B*T*C), up(d, randn(rng, B*NH*T*T, 1), 0) // att starts as garbage
		if s[5] == 2 && !d.useFusedAttention(T, C/NH, gq, gout, gatt) {
			t.Fatalf("%v: the fused kernels do not take this shape", s)
		}
		d.AttentionForward(gout, gatt, gq, B, T, C, NH)
		relClose(t, fmt.Sprintf("AttentionForward %v out", s), down(d, gout), out, rtol)
		relClose(t, fmt.Sprintf("AttentionForward %v att", s), down(d, gatt), att, rtol)

		dout := randn(rng, B*T*C, 1)
		dqkv := randn(rng, B*T*3*C, 1)
		want := clone(dqkv)
		refAttentionBackward(want, dout, qkv, att, B, T, C, NH)
		gd := up(d, dqkv, 0)
		d.AttentionBackward(gd, up(d, dout, 3*off), gq, gatt, B, T, C, NH)
		relClose(t, fmt.Sprintf("AttentionBackward %v", s), down(d, gd), want, rtol)
	}
}

func TestCUDAAttentionCached(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(108)
	C, NH, maxT, S := 48, 3, 40, 3
	for _, tc := range []struct {
		name      string
		slot, pos []int32
	}{
		{"prefill", []int32{0, 0, 0, 0, 0}, []int32{0, 1, 2, 3, 4}},
		{"ragged prefill", []int32{2, 2, 0, 1, 1, 1}, []int32{0, 1, 0, 0, 1, 2}},
		{"decode", []int32{0, 1, 2}, []int32{5, 9, 39}},
		{"rewrite in order", []int32{1, 1, 1, 1}, []int32{3, 4, 3, 4}}, // a later row overwrites a read position
	} {
		N := len(tc.slot)
		qkv := randn(rng, N*3*C, 1)
		kc, vc := randn(rng, S*maxT*C, 1), randn(rng, S*maxT*C, 1)
		out := make([]float32, N*C)
		wk, wv := clone(kc), clone(vc)
		refAttentionCached(out, qkv, wk, wv, tc.slot, tc.pos, N, C, NH, maxT)
		gk, gv, gout := up(d, kc, 0), up(d, vc, 1), d.Alloc(N*C)
		d.AttentionCached(gout, up(d, qkv, 2), gk, gv, tc.slot, tc.pos, N, C, NH, maxT)
		relClose(t, tc.name+" out", down(d, gout), out, cudaRtol)
		relClose(t, tc.name+" kcache", down(d, gk), wk, 0)
		relClose(t, tc.name+" vcache", down(d, gv), wv, 0)
	}
}

func TestCUDALogProb(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(109)
	for _, s := range [][2]int{{1, 2}, {9, 1000}, {5, 50257}} {
		N, V := s[0], s[1]
		logits := randn(rng, N*V, 3)
		targets := randTokens(rng, N, V)
		want := make([]float32, N)
		refLogProbForward(want, logits, targets, N, V)
		gl, gp := up(d, logits, 1), d.Alloc(N)
		d.LogProbForward(gp, gl, targets, N, V)
		relClose(t, fmt.Sprintf("LogProbForward %v", s), down(d, gp), want, 1e-5)

		dlogp := randn(rng, N, 1)
		dlogp[0] = 0 // skipped row
		dl := randn(rng, N*V, 0.01)
		wantD := clone(dl)
		refLogProbBackward(wantD, logits, targets, dlogp, N, V)
		gd := up(d, dl, 0)
		d.LogProbBackward(gd, gl, targets, dlogp, N, V)
		relClose(t, fmt.Sprintf("LogProbBackward %v", s), down(d, gd), wantD, 1e-5)
	}
}

// entropyRef and entropyGradRef are float64 references for the entropy ops:
// H = -sum p log p, dH/dx_j = -p_j (log p_j + H).
func entropyRef(x []float32) (H float64, logp []float64) {
	logp = refLogSoftmax(x)
	for _, l := range logp {
		H -= math.Exp(l) * l
	}
	return H, logp
}

func TestCUDAEntropy(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(110)
	for _, s := range [][2]int{{1, 3}, {7, 1000}, {4, 50257}} {
		N, V := s[0], s[1]
		logits := randn(rng, N*V, 2)
		if N > 1 {
			logits[V+5] = 40 // a nearly one-hot row: entropy close to 0
		}
		want := make([]float32, N)
		dent := randn(rng, N, 1)
		dent[N-1] = 0
		dl := randn(rng, N*V, 0.01)
		wantD := clone(dl)
		for i := 0; i < N; i++ {
			H, logp := entropyRef(logits[i*V : (i+1)*V])
			want[i] = float32(H)
			if dent[i] == 0 {
				continue
			}
			for j, l := range logp {
				wantD[i*V+j] += float32(float64(dent[i]) * -math.Exp(l) * (l + H))
			}
		}
		gl, ge := up(d, logits, 2), d.Alloc(N)
		d.EntropyForward(ge, gl, N, V)
		relClose(t, fmt.Sprintf("EntropyForward %v", s), down(d, ge), want, 1e-5)
		gd := up(d, dl, 0)
		d.EntropyBackward(gd, gl, dent, N, V)
		relClose(t, fmt.Sprintf("EntropyBackward %v", s), down(d, gd), wantD, 1e-5)
	}
}

func TestCUDAAdamW(t *testing.T) {
	d := testCUDA(t)
	rng := newRNG(111)
	n := 100003
	p, g, m := randn(rng, n, 1), randn(rng, n, 1), randn(rng, n, 0.1)
	v := randn(rng, n, 0.1)
	for i := range v {
		v[i] *= v[i]
	}
	gp, gg, gm, gv := up(d, p, 1), up(d, g, 0), up(d, m, 3), up(d, v, 0)
	for step := 1; step <= 3; step++ {
		refAdamW(p, g, m, v, step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
		d.AdamW(gp, gg, gm, gv, step, 1e-3, 0.9, 0.95, 1e-8, 0.1)
	}
	relClose(t, "AdamW params", down(d, gp), p, 1e-5)
	relClose(t, "AdamW m", down(d, gm), m, 1e-5)
	relClose(t, "AdamW v", down(d, gv), v, 1e-5)
}

// TestCUDAShapes: host tensors and short device tensors are programmer errors.
func TestCUDAShapes(t *testing.T) {
	d := testCUDA(t)
	for name, fn := range map[string]func(){
		"host tensor": func() { d.Scale(Host([]float32{1, 2}), 2) },
		"short C":     func() { d.Gemm(false, false, 2, 2, 2, 1, d.Alloc(4), 2, d.Alloc(4), 2, 0, d.Alloc(3), 2) },
		"bad target":  func() { d.LogProbForward(d.Alloc(1), d.Alloc(4), []int32{4}, 1, 4) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatalf("%s: no panic", name)
				}
			}()
			fn()
		}()
	}
}
