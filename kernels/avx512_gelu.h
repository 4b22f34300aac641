// GELU (tanh form) and its derivative on 16 lanes, with an inlined expf,
// shared by the GELU passes of vecmath_cgo.go and the packed sgemm's
// epilogues in gemm_avx512_cgo.go (both include this header, so the fused
// and the separate GELU are the same code and give the same bits). glibc's
// libmvec expf is a call: in a register-tiled kernel's store every zmm
// register is caller-saved around it, and the GELU epilogue made the MLP's
// first product 27% slower than the same product without it.
#ifndef TROUPE_AVX512_GELU_H
#define TROUPE_AVX512_GELU_H
#include <immintrin.h>

// tg_expf is e^x lane by lane: x = n ln2 + r with |r| <= ln2/2 (ln2 split
// Cody-Waite, so r is accurate for every n), e^r by its degree-7 Taylor
// polynomial (truncation < 1e-8 relative) and 2^n applied by vscalefps, as
// exp32 in fastmath.go. Within 2 ulp of the exact value on [-87, 88]
// (TestExpfAVX512); x is clamped to [-104, 128] (e^-104 is under the
// smallest denormal: 0; past 88.72 the result overflows to +Inf either way),
// so no lane computes garbage; NaN stays NaN.
static inline __attribute__((TG_ISA, always_inline)) __m512 tg_expf(__m512 x) {
	x = _mm512_min_ps(_mm512_set1_ps(128.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x)); // NaN passes
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
		_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.0f / 5040);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}
// tg_gelu is GELU at x: x * sigmoid(2u), u = c (x + 0.044715 x^3), with
// e = exp(-2|u|) (sigmoid(2u) = 1/(1+e) for u >= 0, e/(1+e) below), so
// nothing cancels for large |u|.
static inline __attribute__((always_inline, TG_ISA)) __m512 tg_gelu(__m512 x) {
	const __m512 one = _mm512_set1_ps(1.0f);
	__m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
	__m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
	__m512 e = tg_expf(_mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_abs_ps(u)));
	__m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
	__mmask16 neg = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ);
	return _mm512_mul_ps(x, _mm512_mask_mul_ps(inv, neg, inv, e));
}

// tg_dgelu is GELU's derivative at v: sigmoid(2u) + 0.5 v sech^2(u) c (1 +
// 3k v^2), with 1 - tanh^2 u = 4e/(1+e)^2 from the same e.
static inline __attribute__((always_inline, TG_ISA)) __m512 tg_dgelu(__m512 v) {
	const __m512 one = _mm512_set1_ps(1.0f);
	__m512 v2 = _mm512_mul_ps(v, v);
	__m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), v2), v, v));
	__m512 e = tg_expf(_mm512_mul_ps(_mm512_set1_ps(-2.0f), _mm512_abs_ps(u)));
	__m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
	__mmask16 neg = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ);
	__m512 sech2 = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(4.0f), e), _mm512_mul_ps(inv, inv));
	__m512 sg = _mm512_mask_mul_ps(inv, neg, inv, e);
	__m512 du = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(_mm512_set1_ps(3 * 0.044715f), v2, one));
	return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), sech2), du, sg);
}
#endif
