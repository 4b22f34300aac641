//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include <immintrin.h>

// troupe_panel_nn_R: panels [p0,p1) of C (R,OC) = A (R,K) @ W + bias, or C +=
// that with acc_in, where P is W's panel-packed copy (infer_panels.go). An (R,32)
// tile of C stays in registers for the whole K while the panel streams by once,
// 128 contiguous bytes per k; the prefetch runs 16 rows (2 KB) ahead. Each
// element starts from the bias (plus C) and adds the k terms in order with FMA,
// exactly as troupe_infer_nn_R does, so the two agree bit for bit.
#define PANEL_NN(R)                                                                              \
static __attribute__((target("avx512f"))) void troupe_panel_nn_##R(int p0, int p1, int K, int OC, \
		const float *A, int lda, const float *P, const float *bias, float *C, int ldc, int acc_in) { \
	for (int p = p0; p < p1; p++) {                                                              \
		int n = p * 32, w = OC - n;                                                              \
		__mmask16 m0 = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);                 \
		__mmask16 m1 = w >= 32 ? (__mmask16)0xFFFF                                               \
				: (w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : (__mmask16)0);                   \
		__m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias + n) : _mm512_setzero_ps();            \
		__m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + n + 16) : _mm512_setzero_ps();       \
		__m512 c0[R], c1[R];                                                                     \
		for (int r = 0; r < R; r++) {                                                            \
			c0[r] = b0;                                                                          \
			c1[r] = b1;                                                                          \
			if (acc_in) {                                                                        \
				c0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, C + r * ldc + n), b0);           \
				c1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, C + r * ldc + n + 16), b1);      \
			}                                                                                    \
		}                                                                                        \
		const float *pp = P + (long)p * K * 32;                                                  \
		for (int k = 0; k < K; k++, pp += 32) {                                                  \
			_mm_prefetch((const char *)(pp + 512), _MM_HINT_T0);                                 \
			_mm_prefetch((const char *)(pp + 528), _MM_HINT_T0);                                 \
			__m512 v0 = _mm512_loadu_ps(pp);                                                     \
			__m512 v1 = _mm512_loadu_ps(pp + 16);                                                \
			for (int r = 0; r < R; r++) {                                                        \
				__m512 a = _mm512_set1_ps(A[r * lda + k]);                                       \
				c0[r] = _mm512_fmadd_ps(a, v0, c0[r]);                                           \
				c1[r] = _mm512_fmadd_ps(a, v1, c1[r]);                                           \
			}                                                                                    \
		}                                                                                        \
		for (int r = 0; r < R; r++) {                                                            \
			_mm512_mask_storeu_ps(C + r * ldc + n, m0, c0[r]);                                   \
			_mm512_mask_storeu_ps(C + r * ldc + n + 16, m1, c1[r]);                              \
		}                                                                                        \
	}                                                                                            \
}

PANEL_NN(1) PANEL_NN(2) PANEL_NN(3) PANEL_NN(4) PANEL_NN(5) PANEL_NN(6) PANEL_NN(7) PANEL_NN(8)

typedef void (*troupe_panel_fn)(int, int, int, int, const float *, int, const float *, const float *, float *, int, int);
static const troupe_panel_fn troupe_panel_nn[9] = {0, troupe_panel_nn_1, troupe_panel_nn_2, troupe_panel_nn_3,
	troupe_panel_nn_4, troupe_panel_nn_5, troupe_panel_nn_6, troupe_panel_nn_7, troupe_panel_nn_8};

// troupe_panel_small runs M rows in groups of up to 8.
static void troupe_panel_small(int M, int p0, int p1, int K, int OC, const float *A, int lda, const float *P,
		const float *bias, float *C, int ldc, int acc_in) {
	for (int m0 = 0; m0 < M; m0 += 8) {
		int r = M - m0 < 8 ? M - m0 : 8;
		troupe_panel_nn[r](p0, p1, K, OC, A + (long)m0 * lda, lda, P, bias, C + (long)m0 * ldc, ldc, acc_in);
	}
}
*/
import "C"

import "unsafe"

// inferPanelsOK reports whether the panel kernels run here (the CPU has AVX-512F).
var inferPanelsOK = hasAVX512

// panelSmall sets panels [p0,p1) of c (m,oc) at row stride ldc to a (m,k) @ W +
// bias (nil: none), or adds that with accIn, W given as its packed panels.
func panelSmall(m, p0, p1, k, oc int, a []float32, lda int, panels, bias, c []float32, ldc int, accIn bool) {
	if p0 >= p1 {
		return
	}
	var pb *C.float
	if bias != nil {
		pb = (*C.float)(unsafe.Pointer(&bias[0]))
	}
	acc := C.int(0)
	if accIn {
		acc = 1
	}
	C.troupe_panel_small(C.int(m), C.int(p0), C.int(p1), C.int(k), C.int(oc), (*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
		(*C.float)(unsafe.Pointer(&panels[0])), pb, (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc), acc)
}
