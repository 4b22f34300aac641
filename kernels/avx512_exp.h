// An inlined 16-lane expf for the GELU passes and epilogues of
// vecmath_cgo.go and gemm_avx512_cgo.go (both include it, so the fused and
// the separate GELU stay bit-identical). glibc's libmvec expf is a call: in
// a register-tiled kernel's store every zmm register is caller-saved around
// it, and the GELU epilogue made the MLP's first product 27% slower than the
// same product without it.
#ifndef TROUPE_AVX512_EXP_H
#define TROUPE_AVX512_EXP_H
#include <immintrin.h>

// tg_expf is e^x lane by lane: x = n ln2 + r with |r| <= ln2/2 (ln2 split
// Cody-Waite, so r is accurate for every n), e^r by its degree-7 Taylor
// polynomial (truncation < 1e-8 relative) and 2^n applied by vscalefps, as
// exp32 in fastmath.go. Within 2 ulp of the exact value on [-87, 88]
// (TestExpfAVX512); x is clamped to [-104, 128] (e^-104 is under the
// smallest denormal: 0; past 88.72 the result overflows to +Inf either way),
// so no lane computes garbage; NaN stays NaN.
static inline __attribute__((target("avx512f"), always_inline)) __m512 tg_expf(__m512 x) {
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
#endif
