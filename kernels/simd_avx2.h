// The AVX-512 intrinsics the kernel headers (k_*.h, avx512_gelu.h,
// avx512_tr16.h) use, on pairs of AVX2 registers: included once per cgo
// preamble, after the AVX-512 build of its kernels and before the second
// inclusion that makes their AVX2 build (see simd.h). A 16-lane __m512 is
// {lo: lanes 0-7, hi: lanes 8-15}; a mask is the same 16-bit __mmask16, turned
// into lane masks where it is used (full masks, the common case, skip that).
// Most operations act on each half; the in-lane shuffles (unpack) do the same
// on halves as on zmm, and shuffle_f32x4 picks 128-bit lanes by permute2f128.
// Reductions add (or max) the halves, then within the ymm. Bits may differ
// from the AVX-512 build only where the order of a reduction does.
#ifndef TROUPE_SIMD_AVX2_H
#define TROUPE_SIMD_AVX2_H
#include "simd.h"

typedef struct { __m256 lo, hi; } tg_v16;
typedef struct { __m256d lo, hi; } tg_v8d;

#define TG_A2 static inline __attribute__((always_inline, target("avx2,fma")))

// tg2_lanes is the lane mask (all ones where set) of mask bits m (8 lanes).
TG_A2 __m256 tg2_lanes(unsigned m) {
	const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
	return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)m), bit), bit));
}
TG_A2 tg_v16 tg2_pair(__m256 lo, __m256 hi) {
	tg_v16 r = {lo, hi};
	return r;
}
TG_A2 tg_v16 tg2_set1_ps(float x) { return tg2_pair(_mm256_set1_ps(x), _mm256_set1_ps(x)); }
TG_A2 tg_v16 tg2_setzero_ps(void) { return tg2_pair(_mm256_setzero_ps(), _mm256_setzero_ps()); }
TG_A2 tg_v16 tg2_loadu_ps(const void *p) {
	return tg2_pair(_mm256_loadu_ps((const float *)p), _mm256_loadu_ps((const float *)p + 8));
}
TG_A2 tg_v16 tg2_load_ps(const void *p) {
	return tg2_pair(_mm256_load_ps((const float *)p), _mm256_load_ps((const float *)p + 8));
}
TG_A2 void tg2_storeu_ps(void *p, tg_v16 v) {
	_mm256_storeu_ps((float *)p, v.lo);
	_mm256_storeu_ps((float *)p + 8, v.hi);
}
TG_A2 void tg2_stream_ps(void *p, tg_v16 v) {
	_mm256_stream_ps((float *)p, v.lo);
	_mm256_stream_ps((float *)p + 8, v.hi);
}
// Masked loads read no lane past the mask (maskload does not fault there).
TG_A2 tg_v16 tg2_maskz_loadu_ps(__mmask16 m, const void *p) {
	const float *f = (const float *)p;
	if (m == 0xFFFF) return tg2_loadu_ps(f);
	__m256 hi = (m >> 8) ? _mm256_maskload_ps(f + 8, _mm256_castps_si256(tg2_lanes(m >> 8))) : _mm256_setzero_ps();
	return tg2_pair(_mm256_maskload_ps(f, _mm256_castps_si256(tg2_lanes(m & 0xFF))), hi);
}
TG_A2 void tg2_mask_storeu_ps(void *p, __mmask16 m, tg_v16 v) {
	float *f = (float *)p;
	if (m == 0xFFFF) {
		tg2_storeu_ps(f, v);
		return;
	}
	if (m & 0xFF) _mm256_maskstore_ps(f, _mm256_castps_si256(tg2_lanes(m & 0xFF)), v.lo);
	if (m >> 8) _mm256_maskstore_ps(f + 8, _mm256_castps_si256(tg2_lanes(m >> 8)), v.hi);
}

#define TG2_BIN(name, op)                                                          \
	TG_A2 tg_v16 tg2_##name(tg_v16 a, tg_v16 b) { return tg2_pair(op(a.lo, b.lo), op(a.hi, b.hi)); }
TG2_BIN(add_ps, _mm256_add_ps)
TG2_BIN(sub_ps, _mm256_sub_ps)
TG2_BIN(mul_ps, _mm256_mul_ps)
TG2_BIN(div_ps, _mm256_div_ps)
TG2_BIN(min_ps, _mm256_min_ps)
TG2_BIN(max_ps, _mm256_max_ps)
TG2_BIN(unpacklo_ps, _mm256_unpacklo_ps)
TG2_BIN(unpackhi_ps, _mm256_unpackhi_ps)
TG_A2 tg_v16 tg2_fmadd_ps(tg_v16 a, tg_v16 b, tg_v16 c) {
	return tg2_pair(_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi));
}
TG_A2 tg_v16 tg2_fnmadd_ps(tg_v16 a, tg_v16 b, tg_v16 c) {
	return tg2_pair(_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi));
}
TG_A2 tg_v16 tg2_sqrt_ps(tg_v16 a) { return tg2_pair(_mm256_sqrt_ps(a.lo), _mm256_sqrt_ps(a.hi)); }
TG_A2 tg_v16 tg2_abs_ps(tg_v16 a) {
	const __m256 m = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	return tg2_pair(_mm256_and_ps(a.lo, m), _mm256_and_ps(a.hi, m));
}
// Masked forms: lanes off the mask are zero (maskz) or src's (mask).
TG_A2 tg_v16 tg2_maskz_mov_ps(__mmask16 m, tg_v16 a) {
	if (m == 0xFFFF) return a;
	return tg2_pair(_mm256_and_ps(a.lo, tg2_lanes(m & 0xFF)), _mm256_and_ps(a.hi, tg2_lanes(m >> 8)));
}
TG_A2 tg_v16 tg2_maskz_sub_ps(__mmask16 m, tg_v16 a, tg_v16 b) { return tg2_maskz_mov_ps(m, tg2_sub_ps(a, b)); }
TG_A2 tg_v16 tg2_blend(tg_v16 src, __mmask16 m, tg_v16 a) {
	if (m == 0xFFFF) return a;
	return tg2_pair(_mm256_blendv_ps(src.lo, a.lo, tg2_lanes(m & 0xFF)), _mm256_blendv_ps(src.hi, a.hi, tg2_lanes(m >> 8)));
}
TG_A2 tg_v16 tg2_mask_max_ps(tg_v16 src, __mmask16 m, tg_v16 a, tg_v16 b) { return tg2_blend(src, m, tg2_max_ps(a, b)); }
TG_A2 tg_v16 tg2_mask_mul_ps(tg_v16 src, __mmask16 m, tg_v16 a, tg_v16 b) { return tg2_blend(src, m, tg2_mul_ps(a, b)); }
#define tg2_cmp_ps_mask(a, b, imm)                                                                            \
	((__mmask16)(_mm256_movemask_ps(_mm256_cmp_ps((a).lo, (b).lo, (imm))) |                                   \
		(_mm256_movemask_ps(_mm256_cmp_ps((a).hi, (b).hi, (imm))) << 8)))
#define tg2_roundscale_ps(a, imm) tg2_pair(_mm256_round_ps((a).lo, (imm) & 0x0F), _mm256_round_ps((a).hi, (imm) & 0x0F))

// tg2_scalef_ps is a * 2^n for integral n in [-252, 254] (tg_expf's range),
// as two exact power-of-two factors, so a result below the normal range is
// rounded once, as vscalefps does; a NaN a stays NaN.
TG_A2 __m256 tg2_scalef8(__m256 a, __m256 n) {
	__m256i ni = _mm256_cvtps_epi32(n);
	__m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
	const __m256i bias = _mm256_set1_epi32(127);
	__m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
	__m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
	return _mm256_mul_ps(_mm256_mul_ps(a, f1), f2);
}
TG_A2 tg_v16 tg2_scalef_ps(tg_v16 a, tg_v16 n) { return tg2_pair(tg2_scalef8(a.lo, n.lo), tg2_scalef8(a.hi, n.hi)); }

TG_A2 float tg2_hsum8(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}
TG_A2 float tg2_reduce_add_ps(tg_v16 v) { return tg2_hsum8(_mm256_add_ps(v.lo, v.hi)); }
TG_A2 float tg2_reduce_max_ps(tg_v16 v) {
	__m256 m = _mm256_max_ps(v.lo, v.hi);
	__m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
	s = _mm_max_ps(s, _mm_movehl_ps(s, s));
	s = _mm_max_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}
TG_A2 tg_v16 tg2_expf_mvec(tg_v16 x) { return tg2_pair(_ZGVdN8v_expf(x.lo), _ZGVdN8v_expf(x.hi)); }

// Doubles (the sum of squares) and the casts between the two.
TG_A2 tg_v8d tg2_setzero_pd(void) {
	tg_v8d r = {_mm256_setzero_pd(), _mm256_setzero_pd()};
	return r;
}
TG_A2 tg_v8d tg2_add_pd(tg_v8d a, tg_v8d b) {
	tg_v8d r = {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)};
	return r;
}
TG_A2 tg_v8d tg2_fmadd_pd(tg_v8d a, tg_v8d b, tg_v8d c) {
	tg_v8d r = {_mm256_fmadd_pd(a.lo, b.lo, c.lo), _mm256_fmadd_pd(a.hi, b.hi, c.hi)};
	return r;
}
TG_A2 double tg2_reduce_add_pd(tg_v8d v) {
	__m256d s = _mm256_add_pd(v.lo, v.hi);
	__m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
	return _mm_cvtsd_f64(_mm_add_sd(t, _mm_unpackhi_pd(t, t)));
}
TG_A2 tg_v8d tg2_cvtps_pd(__m256 a) {
	tg_v8d r = {_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1))};
	return r;
}
TG_A2 __m256 tg2_castps512_ps256(tg_v16 a) { return a.lo; }
TG_A2 tg_v8d tg2_castps_pd(tg_v16 a) {
	tg_v8d r = {_mm256_castps_pd(a.lo), _mm256_castps_pd(a.hi)};
	return r;
}
TG_A2 tg_v16 tg2_castpd_ps(tg_v8d a) { return tg2_pair(_mm256_castpd_ps(a.lo), _mm256_castpd_ps(a.hi)); }
#define tg2_extractf64x4_pd(a, imm) ((imm) ? (a).hi : (a).lo)
TG_A2 tg_v8d tg2_unpacklo_pd(tg_v8d a, tg_v8d b) {
	tg_v8d r = {_mm256_unpacklo_pd(a.lo, b.lo), _mm256_unpacklo_pd(a.hi, b.hi)};
	return r;
}
TG_A2 tg_v8d tg2_unpackhi_pd(tg_v8d a, tg_v8d b) {
	tg_v8d r = {_mm256_unpackhi_pd(a.lo, b.lo), _mm256_unpackhi_pd(a.hi, b.hi)};
	return r;
}
// shuffle_f32x4: result 128-bit lanes 0 and 1 from a's lanes imm[1:0] and
// imm[3:2], lanes 2 and 3 from b's lanes imm[5:4] and imm[7:6].
#define TG2_LANE(v, s) (((s) & 2) ? (v).hi : (v).lo)
#define TG2_PICK(x, s0, y, s1) _mm256_permute2f128_ps(TG2_LANE(x, s0), TG2_LANE(y, s1), ((s0) & 1) | ((2 | ((s1) & 1)) << 4))
#define tg2_shuffle_f32x4(a, b, imm) \
	tg2_pair(TG2_PICK(a, (imm) & 3, a, ((imm) >> 2) & 3), TG2_PICK(b, ((imm) >> 4) & 3, b, ((imm) >> 6) & 3))

// The AVX-512 names, as used in the kernel headers, for the second inclusion.
#undef TG_ISA
#define TG_ISA target("avx2,fma")
#define __m512 tg_v16
#define __m512d tg_v8d
#define _mm512_set1_ps tg2_set1_ps
#define _mm512_setzero_ps tg2_setzero_ps
#define _mm512_loadu_ps tg2_loadu_ps
#define _mm512_load_ps tg2_load_ps
#define _mm512_storeu_ps tg2_storeu_ps
#define _mm512_stream_ps tg2_stream_ps
#define _mm512_maskz_loadu_ps tg2_maskz_loadu_ps
#define _mm512_mask_storeu_ps tg2_mask_storeu_ps
#define _mm512_add_ps tg2_add_ps
#define _mm512_sub_ps tg2_sub_ps
#define _mm512_mul_ps tg2_mul_ps
#define _mm512_div_ps tg2_div_ps
#define _mm512_min_ps tg2_min_ps
#define _mm512_max_ps tg2_max_ps
#define _mm512_unpacklo_ps tg2_unpacklo_ps
#define _mm512_unpackhi_ps tg2_unpackhi_ps
#define _mm512_fmadd_ps tg2_fmadd_ps
#define _mm512_fnmadd_ps tg2_fnmadd_ps
#define _mm512_sqrt_ps tg2_sqrt_ps
#define _mm512_abs_ps tg2_abs_ps
#define _mm512_maskz_mov_ps tg2_maskz_mov_ps
#define _mm512_maskz_sub_ps tg2_maskz_sub_ps
#define _mm512_mask_max_ps tg2_mask_max_ps
#define _mm512_mask_mul_ps tg2_mask_mul_ps
#undef _mm512_cmp_ps_mask
#define _mm512_cmp_ps_mask tg2_cmp_ps_mask
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps tg2_roundscale_ps
#define _mm512_scalef_ps tg2_scalef_ps
#define _mm512_reduce_add_ps tg2_reduce_add_ps
#define _mm512_reduce_max_ps tg2_reduce_max_ps
#define _ZGVeN16v_expf tg2_expf_mvec
#define _mm512_setzero_pd tg2_setzero_pd
#define _mm512_add_pd tg2_add_pd
#define _mm512_fmadd_pd tg2_fmadd_pd
#define _mm512_reduce_add_pd tg2_reduce_add_pd
#define _mm512_cvtps_pd tg2_cvtps_pd
#define _mm512_castps512_ps256 tg2_castps512_ps256
#define _mm512_castps_pd tg2_castps_pd
#define _mm512_castpd_ps tg2_castpd_ps
#undef _mm512_extractf64x4_pd
#define _mm512_extractf64x4_pd tg2_extractf64x4_pd
#define _mm512_unpacklo_pd tg2_unpacklo_pd
#define _mm512_unpackhi_pd tg2_unpackhi_pd
#undef _mm512_shuffle_f32x4
#define _mm512_shuffle_f32x4 tg2_shuffle_f32x4

// The attention's tiles: (6,16), 12 ymm accumulators, as the sgemm's. An
// (R,32) tile is 4R ymm accumulators of the 16 registers: R = 8 spilled
// (troupe_mmp_8 took 9% of a small step's samples), and R = 3, which fits,
// loads 4 ymm of B a k for 3 rows where (6,16) loads 2 for 6: half the
// loads of B a flop.
#ifndef TG_AVX2_ROWS
#define TG_AVX2_ROWS 6
#endif
#ifndef TG_AVX2_MMW
#define TG_AVX2_MMW 16
#endif
#undef TG_ROWS
#define TG_ROWS TG_AVX2_ROWS
#undef TG_MMW
#define TG_MMW TG_AVX2_MMW

// The packed sgemm (k_gemm.h) in 6 x 16 register tiles: 12 ymm accumulators,
// two for B and one for A's broadcast, as BLIS's Haswell/Zen kernels; one
// packed block of B of 256 KB (half of Zen 2/3's 512 KB L2).
#ifndef TG_AVX2_MR
#define TG_AVX2_MR 6
#endif
#ifndef TG_AVX2_L2
#define TG_AVX2_L2 (64 * 1024)
#endif
// A transposed A (a weight gradient's X^T) is packed, never read in place:
// the 6 values a k of an AVX2 tile reads are 24 bytes of a row of X, and at
// small's row strides (1.5 and 6 KB) a tile's 512 rows fall in 2-8 L1 sets,
// so nearly every k came from L2. On 2 threads (BenchmarkGemmDirectT,
// alternating, medians of 30, 2026-11-29) packed ran small's N = 384
// weight gradients 13-28% faster (1536x384x2048: 92 against 72 GFLOP/s);
// gpt2's (N >= 768) pack either way.
#ifndef TG_AVX2_DIRECT_T
#define TG_AVX2_DIRECT_T 0
#endif
#undef TG_DIRECT_T
#define TG_DIRECT_T TG_AVX2_DIRECT_T
// The micro-kernel's k loop unrolled 4 times: one pass of a k is 12 FMAs,
// 8 loads, a prefetch and 3 uops of loop control, and the VM's vCPUs share
// their cores' front ends with other guests. On the 2-vCPU Zen 3
// (alternating in one process, 2026-11-29) the small training step ran
// 1230 -> 1196, 1268 -> 1224 and 1374 -> 1374 ms (medians of 40), the
// scoring bench's products 117.0 -> 114.8 and 113.9 -> 112.2 ms (medians
// of 200); unrolling 8 measured level with 4; without the B prefetch as
// well, the training step was 7% slower. Same bits (each accumulator's
// sum in the same order).
#ifndef TG_AVX2_KU
#define TG_AVX2_KU 4
#endif
#undef TG_KU
#define TG_KU TG_AVX2_KU
#undef TG_MR
#define TG_MR TG_AVX2_MR
#undef TG_NR
#define TG_NR 16
#undef TG_L2
#define TG_L2 TG_AVX2_L2

// The shared headers again, for this build.
#undef TROUPE_AVX512_GELU_H
#undef TROUPE_AVX512_TR16_H

#include "simd_avx2_names.h"
#endif
