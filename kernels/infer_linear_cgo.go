//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include <immintrin.h>

// The inference linear layer for a few rows (a KV-cache decode step): columns
// [n0,n1) of C (R,N) = A (R,K) @ B (K,N) + bias, or C += that with acc_in. As
// in gemm_small_cgo.go the weights stream once in blocks of INFER_KB rows with
// an (R,32) tile of C in registers, but: the bias (and the residual for acc_in)
// is the tile's first value, so no pass over C follows; every accumulator lives
// in a register for a fixed R (no spills, checked with objdump); and each row of
// the weight tile prefetches the next tile's, which brought one core from ~18 to
// ~23 GB/s of weights read (L3-resident, 42 MB per decode step of "small").
// Every element's sum runs over k in the same order whatever R or [n0,n1), so a
// row's result does not depend on its batch or on the column split.
#define INFER_KB 16
#define INFER_NN(R)                                                                              \
static __attribute__((target("avx512f"))) void troupe_infer_nn_##R(int n0, int n1, int K,        \
		const float *A, int lda, const float *B, int ldb, const float *bias, float *C, int ldc,  \
		int acc_in) {                                                                            \
	for (int k0 = 0; k0 < K; k0 += INFER_KB) {                                                   \
		int kb = K - k0 < INFER_KB ? K - k0 : INFER_KB;                                          \
		float as[INFER_KB][R];                                                                   \
		for (int k = 0; k < kb; k++)                                                             \
			for (int r = 0; r < R; r++) as[k][r] = A[r * lda + k0 + k];                          \
		for (int n = n0; n < n1; n += 32) {                                                      \
			int w = n1 - n;                                                                      \
			__mmask16 m0 = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);             \
			__mmask16 m1 = w >= 32 ? (__mmask16)0xFFFF                                           \
					: (w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : (__mmask16)0);               \
			__m512 c0[R], c1[R];                                                                 \
			if (k0 == 0) {                                                                       \
				__m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias + n) : _mm512_setzero_ps();    \
				__m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + n + 16) : _mm512_setzero_ps(); \
				for (int r = 0; r < R; r++) {                                                    \
					c0[r] = b0;                                                                  \
					c1[r] = b1;                                                                  \
					if (acc_in) {                                                                \
						c0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, C + r * ldc + n), b0);     \
						c1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, C + r * ldc + n + 16), b1); \
					}                                                                            \
				}                                                                                \
			} else {                                                                             \
				for (int r = 0; r < R; r++) {                                                    \
					c0[r] = _mm512_maskz_loadu_ps(m0, C + r * ldc + n);                          \
					c1[r] = _mm512_maskz_loadu_ps(m1, C + r * ldc + n + 16);                     \
				}                                                                                \
			}                                                                                    \
			const float *b = B + (long)k0 * ldb + n;                                             \
			for (int k = 0; k < kb; k++, b += ldb) {                                             \
				_mm_prefetch((const char *)(b + 32), _MM_HINT_T0);                               \
				_mm_prefetch((const char *)(b + 48), _MM_HINT_T0);                               \
				__m512 v0 = _mm512_maskz_loadu_ps(m0, b);                                        \
				__m512 v1 = _mm512_maskz_loadu_ps(m1, b + 16);                                   \
				for (int r = 0; r < R; r++) {                                                    \
					__m512 a = _mm512_set1_ps(as[k][r]);                                         \
					c0[r] = _mm512_fmadd_ps(a, v0, c0[r]);                                       \
					c1[r] = _mm512_fmadd_ps(a, v1, c1[r]);                                       \
				}                                                                                \
			}                                                                                    \
			for (int r = 0; r < R; r++) {                                                        \
				_mm512_mask_storeu_ps(C + r * ldc + n, m0, c0[r]);                               \
				_mm512_mask_storeu_ps(C + r * ldc + n + 16, m1, c1[r]);                          \
			}                                                                                    \
		}                                                                                        \
	}                                                                                            \
}

INFER_NN(1) INFER_NN(2) INFER_NN(3) INFER_NN(4) INFER_NN(5) INFER_NN(6) INFER_NN(7) INFER_NN(8)

typedef void (*troupe_infer_fn)(int, int, int, const float *, int, const float *, int, const float *, float *, int, int);
static const troupe_infer_fn troupe_infer_nn[9] = {0, troupe_infer_nn_1, troupe_infer_nn_2, troupe_infer_nn_3,
	troupe_infer_nn_4, troupe_infer_nn_5, troupe_infer_nn_6, troupe_infer_nn_7, troupe_infer_nn_8};

// troupe_infer_small runs M rows in groups of up to 8.
static void troupe_infer_small(int M, int n0, int n1, int K, const float *A, int lda, const float *B, int ldb,
		const float *bias, float *C, int ldc, int acc_in) {
	for (int m0 = 0; m0 < M; m0 += 8) {
		int r = M - m0 < 8 ? M - m0 : 8;
		troupe_infer_nn[r](n0, n1, K, A + (long)m0 * lda, lda, B, ldb, bias, C + (long)m0 * ldc, ldc, acc_in);
	}
}
*/
import "C"

import "unsafe"

// inferSmallRows is the most rows inferSmall takes (the weights are read once
// per 8 rows; above this OpenBLAS's packed kernels win).
const inferSmallRows = 16

// inferSmallOK reports whether inferSmall runs here (the CPU has AVX-512F).
var inferSmallOK = hasAVX512

// inferSmall sets columns [n0,n1) of c (m,n) at row stride ldc to a (m,k) @ b
// (k,n) + bias (nil: none), or adds that to them with accIn, with the streaming
// AVX-512 kernels. It reports false (doing nothing) when the CPU lacks AVX-512
// or m is out of range.
func inferSmall(m, n0, n1, k int, a []float32, lda int, b []float32, ldb int, bias, c []float32, ldc int, accIn bool) bool {
	if !hasAVX512 || m < 1 || m > inferSmallRows || n0 >= n1 || k < 1 {
		return false
	}
	var pb *C.float
	if bias != nil {
		pb = (*C.float)(unsafe.Pointer(&bias[0]))
	}
	acc := C.int(0)
	if accIn {
		acc = 1
	}
	C.troupe_infer_small(C.int(m), C.int(n0), C.int(n1), C.int(k), (*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), pb, (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc), acc)
	return true
}
