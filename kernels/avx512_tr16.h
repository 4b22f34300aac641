// A 16x16 float transpose in AVX-512 registers, shared by the cgo preambles
// of gemm_avx512_cgo.go (packing) and train_cgo.go (the attention's panels).
#ifndef TROUPE_AVX512_TR16_H
#define TROUPE_AVX512_TR16_H
#include <immintrin.h>

// tg_tr16 transposes the 16x16 block r in place (r[i] lane j <- r[j] lane i):
// unpack pairs of rows, then pairs of pairs, then two 128-bit lane shuffles.
static inline __attribute__((TG_ISA, always_inline)) void tg_tr16(__m512 r[16]) {
	__m512 t[16], u[16];
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
	for (int i = 0; i < 4; i++) {
		__m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
		__m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
		u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
		u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
		u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
		u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
	}
	// u[4i+j], 128-bit lane L, holds column 4L+j of rows 4i..4i+3.
	for (int j = 0; j < 4; j++) {
		__m512 v = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), w = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
		__m512 v2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), w2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
		r[j] = _mm512_shuffle_f32x4(v, v2, 0x88);
		r[8 + j] = _mm512_shuffle_f32x4(v, v2, 0xdd);
		r[4 + j] = _mm512_shuffle_f32x4(w, w2, 0x88);
		r[12 + j] = _mm512_shuffle_f32x4(w, w2, 0xdd);
	}
}

#endif
