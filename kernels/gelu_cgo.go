//go:build cgo && !purego

package kernels

/*
#cgo LDFLAGS: -lm
#include <immintrin.h>

// glibc's vector math library (libmvec, glibc >= 2.22) has a 16-lane AVX-512
// expf, accurate to a few ulp; calling it directly vectorises GELU, which in
// scalar Go was the largest non-matmul cost of a training step. As in the Go
// version, 0.5(1+tanh u) = sigmoid(2u) and 1-tanh^2 u = 4e/(1+e)^2 are formed
// from e = exp(-2|u|), so nothing cancels for large |u|.
extern __m512 _ZGVeN16v_expf(__m512 x);

#define TROUPE_GELU_C 0.7978845608028654f

// troupe_gelu_s returns s = sigmoid(2u) and, through sech2, 1 - tanh^2 u.
static inline __attribute__((always_inline, target("avx512f"))) __m512 troupe_gelu_s(__m512 u, __m512 *sech2) {
	const __m512 one = _mm512_set1_ps(1.0f);
	__m512 au = _mm512_abs_ps(u);
	__m512 e = _ZGVeN16v_expf(_mm512_mul_ps(_mm512_set1_ps(-2.0f), au));
	__m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
	__mmask16 neg = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ);
	if (sech2) *sech2 = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(4.0f), e), _mm512_mul_ps(inv, inv));
	return _mm512_mask_mul_ps(inv, neg, inv, e); // u < 0: e/(1+e)
}

static __attribute__((target("avx512f"))) void troupe_gelu_fwd(float *out, const float *x, long n) {
	const __m512 c = _mm512_set1_ps(TROUPE_GELU_C), k = _mm512_set1_ps(0.044715f);
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		__m512 v = _mm512_maskz_loadu_ps(m, x + i);
		__m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
		__m512 s = troupe_gelu_s(_mm512_mul_ps(c, _mm512_fmadd_ps(k, v3, v)), 0);
		_mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, s));
	}
}

// dinp += (s + 0.5 x sech2 c (1 + 3k x^2)) * dout.
static __attribute__((target("avx512f"))) void troupe_gelu_bwd(float *dinp, const float *x, const float *dout, long n) {
	const __m512 c = _mm512_set1_ps(TROUPE_GELU_C), k = _mm512_set1_ps(0.044715f);
	const __m512 k3 = _mm512_set1_ps(3 * 0.044715f);
	const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		__m512 v = _mm512_maskz_loadu_ps(m, x + i);
		__m512 v2 = _mm512_mul_ps(v, v);
		__m512 sech2;
		__m512 s = troupe_gelu_s(_mm512_mul_ps(c, _mm512_fmadd_ps(_mm512_mul_ps(k, v2), v, v)), &sech2);
		__m512 du = _mm512_mul_ps(c, _mm512_fmadd_ps(k3, v2, one));
		__m512 g = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(half, v), sech2), du, s);
		__m512 d = _mm512_maskz_loadu_ps(m, dinp + i);
		_mm512_mask_storeu_ps(dinp + i, m, _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, dout + i), d));
	}
}
*/
import "C"

import "unsafe"

// geluVector runs GELU forward (dout == nil) or backward on [lo,hi) with the
// AVX-512 kernels; false when the CPU lacks AVX-512.
func geluVector(out, x, dout []float32) bool {
	if !hasGemmSmall || len(x) == 0 {
		return hasGemmSmall
	}
	n := C.long(len(x))
	if dout == nil {
		C.troupe_gelu_fwd((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])), n)
	} else {
		C.troupe_gelu_bwd((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])),
			(*C.float)(unsafe.Pointer(&dout[0])), n)
	}
	return true
}
