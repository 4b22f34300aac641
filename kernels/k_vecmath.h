// Included twice by vecmath_cgo.go (the AVX-512 and the AVX2 build, see simd.h); no include guard.
#include "avx512_gelu.h"

// GELU in AVX-512 (in scalar Go it was the largest non-matmul cost of a
// training step): tg_gelu and tg_dgelu (avx512_gelu.h), which the packed
// sgemm's GELU epilogues share. The softmax below takes its exp from glibc's
// vector math library (libmvec, glibc >= 2.22), a 16-lane AVX-512 expf.

static __attribute__((TG_ISA)) void troupe_gelu_fwd(float *out, const float *x, long n) {
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		_mm512_mask_storeu_ps(out + i, m, tg_gelu(_mm512_maskz_loadu_ps(m, x + i)));
	}
}

// dinp += gelu'(x) * dout, or = without acc (then dinp may alias dout).
static __attribute__((TG_ISA)) void troupe_gelu_bwd(float *dinp, const float *x, const float *dout, long n, int acc) {
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		__m512 g = tg_dgelu(_mm512_maskz_loadu_ps(m, x + i));
		__m512 d = acc ? _mm512_maskz_loadu_ps(m, dinp + i) : _mm512_setzero_ps();
		_mm512_mask_storeu_ps(dinp + i, m, _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, dout + i), d));
	}
}

// x[0:n] = softmax(x[0:n]) in place.
static __attribute__((TG_ISA)) void troupe_softmax(float *x, long n) {
	__m512 mx = _mm512_set1_ps(-__builtin_inff());
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
	}
	__m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
	__m512 sum = _mm512_setzero_ps();
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		__m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax));
		e = _mm512_maskz_mov_ps(m, e);
		sum = _mm512_add_ps(sum, e);
		_mm512_mask_storeu_ps(x + i, m, e);
	}
	__m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		_mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(inv, _mm512_maskz_loadu_ps(m, x + i)));
	}
}

// tg_adamw16 is troupe_adamw on the 16 values at i (lanes k), written with
// streaming stores with nt (k all ones, p + i on a 64-byte line). Its
// arguments are troupe_adamw's broadcast constants one by one: gathered in a
// struct and run through one loop for head, lines and tail, the streamed pass
// measured 48-72 GB/s against this form's 82 (BenchmarkAdamWStream, 124M).
static __attribute__((TG_ISA)) inline void tg_adamw16(float *p, float *g, float *mm, float *vv, long i,
		__mmask16 k, int nt, __m512 b1, __m512 b2, __m512 c1, __m512 c2, __m512 vlr, __m512 veps, __m512 vwd,
		__m512 i1, __m512 i2, float gscale) {
	__m512 gi = _mm512_maskz_loadu_ps(k, g + i);
	if (gscale != 1.0f) {
		gi = _mm512_mul_ps(gi, _mm512_set1_ps(gscale));
		if (nt) _mm512_stream_ps(g + i, gi); else _mm512_mask_storeu_ps(g + i, k, gi);
	}
	__m512 mi = _mm512_fmadd_ps(b1, _mm512_maskz_loadu_ps(k, mm + i), _mm512_mul_ps(c1, gi));
	__m512 vi = _mm512_fmadd_ps(b2, _mm512_maskz_loadu_ps(k, vv + i), _mm512_mul_ps(c2, _mm512_mul_ps(gi, gi)));
	__m512 pi = _mm512_maskz_loadu_ps(k, p + i);
	__m512 upd = _mm512_div_ps(_mm512_mul_ps(mi, i1), _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, i2)), veps));
	upd = _mm512_fmadd_ps(vwd, pi, upd);
	__m512 po = _mm512_fnmadd_ps(vlr, upd, pi);
	if (nt) {
		_mm512_stream_ps(mm + i, mi);
		_mm512_stream_ps(vv + i, vi);
		_mm512_stream_ps(p + i, po);
	} else {
		_mm512_mask_storeu_ps(mm + i, k, mi);
		_mm512_mask_storeu_ps(vv + i, k, vi);
		_mm512_mask_storeu_ps(p + i, k, po);
	}
}

// One AdamW step over n values (see (*CPU).AdamW for the formula); the bias
// corrections come in as 1/bc1 and 1/bc2. With gscale != 1 the gradients are
// first multiplied by gscale in place (gradient clipping folded into the pass).
// With nt, where the four buffers share their alignment, the whole 64-byte
// lines are written with streaming stores (no read of the lines before the
// write, nothing evicted for them: the buffers are far larger than the caches
// and read again only at the next step); then sfence.
static __attribute__((TG_ISA)) void troupe_adamw(float *p, float *g, float *mm, float *vv, long n,
		float lr, float beta1, float beta2, float eps, float wd, float ibc1, float ibc2, float gscale, int nt) {
	const __m512 b1 = _mm512_set1_ps(beta1), b2 = _mm512_set1_ps(beta2);
	const __m512 c1 = _mm512_set1_ps(1 - beta1), c2 = _mm512_set1_ps(1 - beta2);
	const __m512 vlr = _mm512_set1_ps(lr), veps = _mm512_set1_ps(eps), vwd = _mm512_set1_ps(wd);
	const __m512 i1 = _mm512_set1_ps(ibc1), i2 = _mm512_set1_ps(ibc2);
	long i = 0, a = 0, e = n;
	uintptr_t mis = (uintptr_t)p & 63;
	if (nt && ((uintptr_t)g & 63) == mis && ((uintptr_t)mm & 63) == mis && ((uintptr_t)vv & 63) == mis && !(mis & 3)) {
		a = mis ? (64 - (long)mis) / 4 : 0; // floats before p's first whole line
		if (a > n) a = n;
		e = a + (n - a) / 16 * 16;
	} else {
		nt = 0;
		a = e = n;
	}
	// Head (to the first whole line), whole lines (streamed with nt), tail.
	for (; i < a; i += 16) {
		long w = a - i;
		tg_adamw16(p, g, mm, vv, i, w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1), 0, b1, b2, c1, c2, vlr,
			veps, vwd, i1, i2, gscale);
	}
	for (i = a; i < e; i += 16)
		tg_adamw16(p, g, mm, vv, i, (__mmask16)0xFFFF, nt, b1, b2, c1, c2, vlr, veps, vwd, i1, i2, gscale);
	for (i = e; i < n; i += 16) {
		long w = n - i;
		tg_adamw16(p, g, mm, vv, i, w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1), 0, b1, b2, c1, c2, vlr,
			veps, vwd, i1, i2, gscale);
	}
	if (nt) _mm_sfence();
}

// out[0:n] = tg_expf(x[0:n]), for TestExpfAVX512.
static __attribute__((TG_ISA)) void troupe_expf_n(float *out, const float *x, long n) {
	for (long i = 0; i < n; i += 16) {
		long w = n - i;
		__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
		_mm512_mask_storeu_ps(out + i, m, tg_expf(_mm512_maskz_loadu_ps(m, x + i)));
	}
}
