// Included twice by gemm_small_cgo.go (the AVX-512 and the AVX2 build, see simd.h); no include guard.
// Products with few rows (a KV-cache decode step multiplies a handful of token
// rows by each weight matrix) are bound by streaming the weights once. OpenBLAS
// packs the whole weight matrix on every call and reached ~45 GFLOP/s at
// (8 x 384 x 1152); these kernels read each weight once, straight from memory,
// keeping an (R x 32) tile of C in vector registers. Run where the CPU has
// AVX-512F or AVX2 (checked at run time); otherwise OpenBLAS does the work.

// nn: C (R,N) = alpha * A (R,K) @ B (K,N) + beta * C, row-major with strides.
// B is read in blocks of TROUPE_KB rows, left to right, so the weights stream from
// memory as a few sequential runs; the (R,32) tile of C being updated lives in
// registers across the block, and C itself (R rows) stays in L1/L2.
#define TROUPE_KB 16
#define TROUPE_NN(R)                                                                          \
static __attribute__((TG_ISA)) void troupe_nn_##R(int N, int K, const float *A,  \
		int lda, const float *B, int ldb, float *C, int ldc, float alpha, float beta) {      \
	__m512 vbeta = _mm512_set1_ps(beta);                                                       \
	for (int k0 = 0; k0 < K; k0 += TROUPE_KB) {                                                \
		int k1 = k0 + TROUPE_KB < K ? k0 + TROUPE_KB : K;                                      \
		float as[TROUPE_KB][R];                                                                \
		for (int k = k0; k < k1; k++)                                                          \
			for (int r = 0; r < R; r++) as[k - k0][r] = alpha * A[r * lda + k];                \
		for (int n0 = 0; n0 < N; n0 += 32) {                                                   \
			int w = N - n0;                                                                    \
			__mmask16 m0 = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);           \
			__mmask16 m1 = w >= 32 ? (__mmask16)0xFFFF                                         \
					: (w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : (__mmask16)0);             \
			__m512 acc0[R], acc1[R];                                                           \
			for (int r = 0; r < R; r++) {                                                      \
				float *c = C + r * ldc + n0;                                                   \
				if (k0 > 0) {                                                                  \
					acc0[r] = _mm512_maskz_loadu_ps(m0, c);                                    \
					acc1[r] = _mm512_maskz_loadu_ps(m1, c + 16);                               \
				} else if (beta != 0.0f) {                                                     \
					acc0[r] = _mm512_mul_ps(vbeta, _mm512_maskz_loadu_ps(m0, c));              \
					acc1[r] = _mm512_mul_ps(vbeta, _mm512_maskz_loadu_ps(m1, c + 16));         \
				} else {                                                                       \
					acc0[r] = _mm512_setzero_ps();                                             \
					acc1[r] = _mm512_setzero_ps();                                             \
				}                                                                              \
			}                                                                                  \
			const float *b = B + (long)k0 * ldb + n0;                                          \
			for (int k = k0; k < k1; k++, b += ldb) {                                          \
				__m512 b0 = _mm512_maskz_loadu_ps(m0, b);                                      \
				__m512 b1 = _mm512_maskz_loadu_ps(m1, b + 16);                                 \
				for (int r = 0; r < R; r++) {                                                  \
					__m512 a = _mm512_set1_ps(as[k - k0][r]);                                  \
					acc0[r] = _mm512_fmadd_ps(a, b0, acc0[r]);                                 \
					acc1[r] = _mm512_fmadd_ps(a, b1, acc1[r]);                                 \
				}                                                                              \
			}                                                                                  \
			for (int r = 0; r < R; r++) {                                                      \
				float *c = C + r * ldc + n0;                                                   \
				_mm512_mask_storeu_ps(c, m0, acc0[r]);                                         \
				_mm512_mask_storeu_ps(c + 16, m1, acc1[r]);                                    \
			}                                                                                  \
		}                                                                                      \
	}                                                                                          \
}

// nt: C (R,N) = alpha * A (R,K) @ B^T + beta * C with B stored (N,K): dot products.
#define TROUPE_NT(R)                                                                          \
static __attribute__((TG_ISA)) void troupe_nt_##R(int N, int K, const float *A,  \
		int lda, const float *B, int ldb, float *C, int ldc, float alpha, float beta) {      \
	for (int n = 0; n < N; n++) {                                                              \
		const float *b = B + (long)n * ldb;                                                    \
		__m512 acc[R];                                                                         \
		for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();                              \
		for (int k = 0; k < K; k += 16) {                                                      \
			int w = K - k;                                                                     \
			__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);            \
			__m512 bv = _mm512_maskz_loadu_ps(m, b + k);                                       \
			for (int r = 0; r < R; r++)                                                        \
				acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, A + r * lda + k), bv, acc[r]); \
		}                                                                                      \
		for (int r = 0; r < R; r++) {                                                          \
			float v = alpha * _mm512_reduce_add_ps(acc[r]);                                    \
			float *c = C + r * ldc + n;                                                        \
			*c = beta != 0.0f ? v + beta * *c : v;                                             \
		}                                                                                      \
	}                                                                                          \
}

TROUPE_NN(1) TROUPE_NN(2) TROUPE_NN(3) TROUPE_NN(4) TROUPE_NN(5) TROUPE_NN(6) TROUPE_NN(7) TROUPE_NN(8)
TROUPE_NT(1) TROUPE_NT(2) TROUPE_NT(3) TROUPE_NT(4) TROUPE_NT(5) TROUPE_NT(6) TROUPE_NT(7) TROUPE_NT(8)

typedef void (*troupe_small_fn)(int, int, const float *, int, const float *, int, float *, int, float, float);
static const troupe_small_fn troupe_nn[9] = {0, troupe_nn_1, troupe_nn_2, troupe_nn_3, troupe_nn_4,
	troupe_nn_5, troupe_nn_6, troupe_nn_7, troupe_nn_8};
static const troupe_small_fn troupe_nt[9] = {0, troupe_nt_1, troupe_nt_2, troupe_nt_3, troupe_nt_4,
	troupe_nt_5, troupe_nt_6, troupe_nt_7, troupe_nt_8};

// troupe_gemm_small runs M rows in groups of up to 8.
static void troupe_gemm_small(int transB, int M, int N, int K, float alpha, const float *A, int lda,
		const float *B, int ldb, float beta, float *C, int ldc) {
	for (int m0 = 0; m0 < M; m0 += 8) {
		int r = M - m0 < 8 ? M - m0 : 8;
		const troupe_small_fn *t = transB ? troupe_nt : troupe_nn;
		t[r](N, K, A + (long)m0 * lda, lda, B, ldb, C + (long)m0 * ldc, ldc, alpha, beta);
	}
}

