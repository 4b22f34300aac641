//go:build cuda

package kernels

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/cu"
)

// profileCUDA returns the device with TF32 on for a timing test, skipping
// unless TROUPE_CUDA_PROFILE is set; TF32 goes back off at the end.
func profileCUDA(t *testing.T) *cudaDevice {
	t.Helper()
	if os.Getenv("TROUPE_CUDA_PROFILE") == "" {
		t.Skip("set TROUPE_CUDA_PROFILE=1 to time the products")
	}
	d := testCUDA(t)
	d.setTF32(true)
	t.Cleanup(func() { d.setTF32(false) })
	return d
}

// perCall runs f once (warm-up), then reps times, and returns the seconds a
// call took on the device.
func perCall(d *cudaDevice, reps int, f func()) float64 {
	f()
	d.Sync()
	t0 := time.Now()
	for r := 0; r < reps; r++ {
		f()
	}
	d.Sync()
	return time.Since(t0).Seconds() / float64(reps)
}

// rawRate times one cuBLAS Sgemm as cuBLAS reads it (column-major, no operand
// swap, none of Gemm's transposes) and returns TFLOP/s.
func rawRate(d *cudaDevice, ta, tb bool, m, n, k, lda, ldb, ldc int, beta float32) (float64, float64) {
	op := func(t bool) blas.Transpose {
		if t {
			return blas.Trans
		}
		return blas.NoTrans
	}
	acols, bcols := k, n
	if ta {
		acols = m
	}
	if tb {
		bcols = k
	}
	A, B, C := d.Alloc(lda*acols), d.Alloc(ldb*bcols), d.Alloc(ldc*n)
	defer func() { d.Free(A); d.Free(B); d.Free(C) }()
	call := func() {
		defer d.enterGemm()()
		d.blas.Sgemm(op(ta), op(tb), m, n, k, 1, devSlice(A), lda, devSlice(B), ldb, beta, devSlice(C), ldc)
		d.check(d.blas.Err(), "rate Sgemm")
	}
	el := perCall(d, 5, call)
	return el * 1e3, 2 * float64(m) * float64(n) * float64(k) / el / 1e12
}

// TestCUDALMHeadRates (TROUPE_CUDA_PROFILE=1) times the LM head's three
// products at GPT-2's B*T = 8192 with the vocabulary's odd 50257 as it is and
// with the leading dimensions, or the dimension itself, padded to 50304: what
// a padded scratch buffer inside Gemm would buy.
func TestCUDALMHeadRates(t *testing.T) {
	d := profileCUDA(t)
	const N, C, V, Vp = 8192, 768, 50257, 50304
	type c struct {
		name                string
		ta, tb              bool
		m, n, k, la, lb, lc int
		beta                float32
	}
	cases := []c{
		// forward logits (N,V) row-major = col-major (V x N): W^T(V x C) X(C x N)
		{"fwd  M=V  ldc=V", true, false, V, N, C, C, C, V, 0},
		{"fwd  M=V  ldc=Vp", true, false, V, N, C, C, C, Vp, 0},
		{"fwd  M=Vp ldc=Vp", true, false, Vp, N, C, C, C, Vp, 0},
		// dx (N,C) = D (N,V) W (V,C): col-major dx'(C x N) = W'(C x V) D'(V x N)
		{"dx   k=V  ldd=V", false, false, C, N, V, C, V, C, 0},
		{"dx   k=V  ldd=Vp", false, false, C, N, V, C, Vp, C, 0},
		{"dx   k=Vp ldd=Vp", false, false, C, N, Vp, C, Vp, C, 0},
		{"dx   k=V  DT ld=N", false, true, C, N, V, C, N, C, 0},
		{"dx   k=Vp DT ld=N", false, true, C, N, Vp, C, N, C, 0},
		// dW (V,C) = D^T X: col-major dW'(C x V) = X'(C x N) D (N x V) [D' is V x N, op T]
		{"dW   n=V  ldd=V", false, true, C, V, N, C, V, C, 0},
		{"dW   n=V  ldd=Vp", false, true, C, V, N, C, Vp, C, 0},
		{"dW   n=Vp ldd=Vp", false, true, C, Vp, N, C, Vp, C, 0},
		{"dW   n=V  DT ld=N", false, false, C, V, N, C, N, C, 0},
		{"dW   n=Vp DT ld=N", false, false, C, Vp, N, C, N, C, 0},
		{"dW   n=V  DT beta=1", false, false, C, V, N, C, N, C, 1},
		// cut to the largest multiple of 64 (50240) at the odd leading dimension V, and the tail:
		// slow too (H200: 130 TFLOP/s), the odd leading dimension itself is what cuBLAS runs slowly
		{"fwd  M=50240 ldc=V", true, false, 50240, N, C, C, C, V, 0},
		{"fwd  M=17 tail ldc=V", true, false, 17, N, C, C, C, V, 0},
		{"dx   k=50240 ldd=V", false, false, C, N, 50240, C, V, C, 0},
		{"dx   k=17 tail ldd=V b=1", false, false, C, N, 17, C, V, C, 1},
		{"dW   n=50240 ldd=V b=1", false, true, C, 50240, N, C, V, C, 1},
		{"dW   n=17 tail ldd=V b=1", false, true, C, 17, N, C, V, C, 1},
		{"fc dW 768x3072x8192 b=0", false, true, 3072, 768, N, 3072, 768, 3072, 0},
		{"fc dW 768x3072x8192 b=1", false, true, 3072, 768, N, 3072, 768, 3072, 1},
	}
	var b strings.Builder
	for _, x := range cases {
		ms, tf := rawRate(d, x.ta, x.tb, x.m, x.n, x.k, x.la, x.lb, x.lc, x.beta)
		fmt.Fprintf(&b, "  %-26s %5dx%5dx%5d lda=%5d ldb=%5d ldc=%5d  %7.3f ms  %6.1f TFLOP/s\n", x.name, x.m, x.n, x.k, x.la, x.lb, x.lc, ms, tf)
	}
	t.Log("\n" + b.String())
}

// TestCUDAAttentionRates (TROUPE_CUDA_PROFILE=1) times attention's batched
// products at GPT-2's B=32, T=256, NH=12, hs=64: on the permuted (B,NH,T,hs)
// copies (strided batched) and straight on the qkv layout through pointer
// arrays (row stride 3C), which would save the permutes.
func TestCUDAAttentionRates(t *testing.T) {
	d := profileCUDA(t)
	const B, T, NH, hs = 32, 256, 12, 64
	C := NH * hs
	qkv, att, y := d.Alloc(B*T*3*C), d.Alloc(B*NH*T*T), d.Alloc(B*T*C)
	defer func() { d.Free(qkv); d.Free(att); d.Free(y) }()
	count := B * NH
	// pointer arrays: q, k, v of (b,h) in qkv; att of (b,h); y of (b,h) in (B,T,C)
	mk := func(base uintptr, sb, sh int) Tensor {
		host := make([]uint64, count)
		for i := range host {
			host[i] = uint64(base) + uint64(((i/NH)*sb+(i%NH)*sh)*4)
		}
		buf := d.Alloc(2 * count)
		func() {
			defer d.enter()()
			d.check(cu.MemcpyHtoD(cu.DevicePtr(buf.Ptr), unsafe.Pointer(&host[0]), int64(count)*8), "ptrs")
		}()
		return buf
	}
	qp, kp, vp := mk(qkv.Ptr, T*3*C, hs), mk(qkv.Ptr+uintptr(C)*4, T*3*C, hs), mk(qkv.Ptr+uintptr(2*C)*4, T*3*C, hs)
	ap, yp := mk(att.Ptr, NH*T*T, T*T), mk(y.Ptr, T*C, hs)
	var b strings.Builder
	timeIt := func(name string, flops float64, f func()) {
		el := perCall(d, 10, f)
		fmt.Fprintf(&b, "  %-44s %7.3f ms  %6.1f TFLOP/s\n", name, el*1e3, flops/el/1e12)
	}
	fl := 2 * float64(count) * T * T * hs
	// strided on contiguous (T,hs) blocks: the current layout
	q, k := qkv.Ptr, qkv.Ptr+uintptr(B*T*C)*4
	timeIt("preatt strided (T,hs) contiguous", fl, func() {
		defer d.enterGemm()()
		d.gemmStrided(false, true, T, T, hs, 0.125, q, hs, T*hs, k, hs, T*hs, 0, att.Ptr, T, T*T, count)
	})
	timeIt("att@v  strided (T,hs) contiguous", fl, func() {
		defer d.enterGemm()()
		d.gemmStrided(false, false, T, hs, T, 1, att.Ptr, T, T*T, k, hs, T*hs, 0, y.Ptr, hs, T*hs, count)
	})
	timeIt("dv=att^T dy strided contiguous", fl, func() {
		defer d.enterGemm()()
		d.gemmStrided(true, false, T, hs, T, 1, att.Ptr, T, T*T, k, hs, T*hs, 0, y.Ptr, hs, T*hs, count)
	})
	// pointer arrays on the qkv layout (row-major; same swap as Gemm: C^T = op(B)^T op(A)^T)
	timeIt("preatt ptr-array on qkv (ld 3C)", fl, func() {
		defer d.enterGemm()()
		d.check(cublasSgemmBatched(d.handle, true, false, T, T, hs, 0.125, kp.Ptr, 3*C, qp.Ptr, 3*C, 0, ap.Ptr, T, count), "batched")
	})
	timeIt("att@v  ptr-array v on qkv, y in (B,T,C)", fl, func() {
		defer d.enterGemm()()
		d.check(cublasSgemmBatched(d.handle, false, false, hs, T, T, 1, vp.Ptr, 3*C, ap.Ptr, T, 0, yp.Ptr, C, count), "batched")
	})
	timeIt("dv=att^T dy ptr-array (dy in (B,T,C))", fl, func() {
		defer d.enterGemm()()
		d.check(cublasSgemmBatched(d.handle, false, true, hs, T, T, 1, yp.Ptr, C, ap.Ptr, T, 0, vp.Ptr, 3*C, count), "batched")
	})
	// per-batch strided over heads on the qkv layout (B launches)
	timeIt("preatt B x strided-over-heads on qkv", fl, func() {
		defer d.enterGemm()()
		for bb := 0; bb < B; bb++ {
			off := uintptr(bb*T*3*C) * 4
			d.gemmStrided(false, true, T, T, hs, 0.125, qkv.Ptr+off, 3*C, hs, qkv.Ptr+off+uintptr(C)*4, 3*C, hs, 0,
				att.Ptr+uintptr(bb*NH*T*T)*4, T, T*T, NH)
		}
	})
	for _, n := range []string{"softmax_causal_kernel"} {
		timeIt(n+" (rows B*NH*T)", 0, func() {
			defer d.enter()()
			d.launchRows(n, B*NH*T, devPtr(att), B*NH*T, T)
		})
	}
	for _, p := range []Tensor{qp, kp, vp, ap, yp} {
		d.Free(p)
	}
	t.Log("\n" + b.String())
}
