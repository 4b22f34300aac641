// Included twice by infer_linear_cgo.go (the AVX-512 and the AVX2 build, see simd.h); no include guard.
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

// The pieces both few-row kernels share (here and troupe_panel_nn_R below):
// the masks of a 32-column tile with w valid columns, the tile's start value
// (the bias, plus C with acc_in), the R x 32 FMA step for one k, and the store.
#define INFER_MASKS(w)                                                                           \
	__mmask16 m0 = (w) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w)) - 1);                 \
	__mmask16 m1 = (w) >= 32 ? (__mmask16)0xFFFF                                                 \
			: ((w) > 16 ? (__mmask16)((1u << ((w) - 16)) - 1) : (__mmask16)0);
#define INFER_TILE_START(R, n)                                                                   \
	{                                                                                            \
		__m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias + (n)) : _mm512_setzero_ps();          \
		__m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + (n) + 16) : _mm512_setzero_ps();     \
		for (int r = 0; r < R; r++) {                                                            \
			c0[r] = b0;                                                                          \
			c1[r] = b1;                                                                          \
			if (acc_in) {                                                                        \
				c0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, C + r * ldc + (n)), b0);         \
				c1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, C + r * ldc + (n) + 16), b1);    \
			}                                                                                    \
		}                                                                                        \
	}
// One k: v0, v1 are the weight row's two vectors, A_RK(r) the row-r value of A.
#define INFER_FMA(R, v0, v1, A_RK)                                                               \
	for (int r = 0; r < R; r++) {                                                                \
		__m512 a = _mm512_set1_ps(A_RK(r));                                                      \
		c0[r] = _mm512_fmadd_ps(a, v0, c0[r]);                                                   \
		c1[r] = _mm512_fmadd_ps(a, v1, c1[r]);                                                   \
	}
#define INFER_TILE_STORE(R, n)                                                                   \
	for (int r = 0; r < R; r++) {                                                                \
		_mm512_mask_storeu_ps(C + r * ldc + (n), m0, c0[r]);                                     \
		_mm512_mask_storeu_ps(C + r * ldc + (n) + 16, m1, c1[r]);                                \
	}

#define INFER_AS(r) as[k][r]
#define INFER_NN(R)                                                                              \
static __attribute__((TG_ISA)) void troupe_infer_nn_##R(int n0, int n1, int K,        \
		const float *A, int lda, const float *B, int ldb, const float *bias, float *C, int ldc,  \
		int acc_in) {                                                                            \
	for (int k0 = 0; k0 < K; k0 += INFER_KB) {                                                   \
		int kb = K - k0 < INFER_KB ? K - k0 : INFER_KB;                                          \
		float as[INFER_KB][R];                                                                   \
		for (int k = 0; k < kb; k++)                                                             \
			for (int r = 0; r < R; r++) as[k][r] = A[r * lda + k0 + k];                          \
		for (int n = n0; n < n1; n += 32) {                                                      \
			INFER_MASKS(n1 - n)                                                                  \
			__m512 c0[R], c1[R];                                                                 \
			if (k0 == 0) {                                                                       \
				INFER_TILE_START(R, n)                                                           \
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
				INFER_FMA(R, v0, v1, INFER_AS)                                                   \
			}                                                                                    \
			INFER_TILE_STORE(R, n)                                                               \
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

// troupe_panel_nn_R: panels [p0,p1) of C (R,OC) = A (R,K) @ W + bias, or C +=
// that with acc_in, where P is W's panel-packed copy (infer_panels.go). An (R,32)
// tile of C stays in registers for the whole K while the panel streams by once,
// 128 contiguous bytes per k; the prefetch runs 16 rows (2 KB) ahead. Each
// element starts from the bias (plus C) and adds the k terms in order with FMA,
// exactly as troupe_infer_nn_R does, so the two agree bit for bit.
#define INFER_AK(r) A[r * lda + k]
#define PANEL_NN(R)                                                                              \
static __attribute__((TG_ISA)) void troupe_panel_nn_##R(int p0, int p1, int K, int OC, \
		const float *A, int lda, const float *P, const float *bias, float *C, int ldc, int acc_in) { \
	for (int p = p0; p < p1; p++) {                                                              \
		int n = p * PANEL_COLS;                                                                  \
		INFER_MASKS(OC - n)                                                                      \
		__m512 c0[R], c1[R];                                                                     \
		INFER_TILE_START(R, n)                                                                   \
		const float *pp = P + (long)p * K * PANEL_COLS;                                          \
		for (int k = 0; k < K; k++, pp += PANEL_COLS) {                                          \
			_mm_prefetch((const char *)(pp + 512), _MM_HINT_T0);                                 \
			_mm_prefetch((const char *)(pp + 528), _MM_HINT_T0);                                 \
			__m512 v0 = _mm512_loadu_ps(pp);                                                     \
			__m512 v1 = _mm512_loadu_ps(pp + 16);                                                \
			INFER_FMA(R, v0, v1, INFER_AK)                                                       \
		}                                                                                        \
		INFER_TILE_STORE(R, n)                                                                   \
	}                                                                                            \
}

#ifndef TROUPE_SIMD_AVX2_H
// PANEL_COLS is the width of this build's panels (infer_linear_cgo.go hands it
// to PackPanels): 32 columns, two zmm registers.
#undef PANEL_COLS
#define PANEL_COLS 32
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
#else
#undef PANEL_COLS
#define PANEL_COLS 16
// The AVX2 build packs 16-column panels (PANEL_COLS): an
// (R,32) tile would want 4R ymm accumulators of 16 registers
// (troupe_panel_nn_8 spilled them, 2.5-2.7 ms for a decode step's 42 MB of
// products), so each panel is one 16-column tile, gone through in chunks of
// PANEL_KC rows (8 KB, in L1), each chunk in groups of at most 6 rows
// (troupe_panel_h_R: 2R accumulators, two weight vectors and the broadcast A
// value, 15 registers at R = 6, the BLIS Haswell shape). A thread's panels are
// contiguous, so its first pass over each chunk reads memory in one sequential
// stream; with 32-column panels read as two halves it skipped every other
// line and came back for the rest, and a decode step's 24 products took 7-19%
// longer (medians, C harness, alternating). Every pass over a chunk also
// prefetches its share of the chunk PANEL_AHEAD chunks on into L2 (48 KB
// ahead), so memory sees one steady stream per thread, not a burst each chunk.
// Between chunks the partial sums wait in C, which is exact, so each element
// still starts from the bias (plus C) and adds the k terms in order with FMA,
// as troupe_infer_nn_R does: the same bits.
#define PANEL_KC 128
#define PANEL_AHEAD 6
// A full panel (w >= 16) loads and stores plainly: AMD's masked moves cost many
// micro-ops, and a pass starts and ends with 2R of each.
#define PANEL_LOAD(full, p, l) ((full) ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, l))
#define PANEL_STORE(full, p, l, v)                                                               \
	do {                                                                                         \
		if (full)                                                                                \
			_mm256_storeu_ps(p, v);                                                              \
		else                                                                                     \
			_mm256_maskstore_ps(p, l, v);                                                        \
	} while (0)
// troupe_panel_h_R: rows [0,R) x 16 columns (w of them valid) of C += A[:, :kn]
// @ the kn panel rows at pp (row stride PANEL_COLS); start: the first chunk, so C
// starts from the bias (plus C with acc_in); each k prefetches pfp, then steps
// it by pfs bytes.
// The k loop is unrolled 4 times (a k at R = 4 is 8 FMAs, 6 loads, a prefetch
// and 4 uops of loop control): a decode step's 24 products of "small" from
// panels, alternating in one process on the 2-vCPU Zen 3 (2026-11-29), took
// 3.70 -> 3.57 and 3.98 -> 3.81 ms (medians of 3000); unrolled 8, level
// with 4. Same bits.
#define PANEL_H(R)                                                                               \
static __attribute__((TG_ISA)) void troupe_panel_h_##R(int kn, const float *A, int lda, const float *pp, \
		const float *bias, float *C, int ldc, int start, int acc_in, const char *pfp, int pfs, int w) { \
	__m256i l0 = _mm256_castps_si256(tg2_lanes(w >= 8 ? 0xFF : (1u << w) - 1));                 \
	__m256i l1 = _mm256_castps_si256(tg2_lanes(w >= 16 ? 0xFF : (w > 8 ? (1u << (w - 8)) - 1 : 0))); \
	int full = w >= 16;                                                                          \
	__m256 c0[R], c1[R];                                                                         \
	__m256 b0 = bias && start ? PANEL_LOAD(full, bias, l0) : _mm256_setzero_ps();                \
	__m256 b1 = bias && start ? PANEL_LOAD(full, bias + 8, l1) : _mm256_setzero_ps();            \
	_Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                        \
		c0[r] = b0;                                                                              \
		c1[r] = b1;                                                                              \
		if (acc_in || !start) {                                                                  \
			c0[r] = PANEL_LOAD(full, C + r * ldc, l0);                                           \
			c1[r] = PANEL_LOAD(full, C + r * ldc + 8, l1);                                       \
			if (start) {                                                                         \
				c0[r] = _mm256_add_ps(c0[r], b0);                                                \
				c1[r] = _mm256_add_ps(c1[r], b1);                                                \
			}                                                                                    \
		}                                                                                        \
	}                                                                                            \
	_Pragma("GCC unroll 4")                                                                      \
	for (int k = 0; k < kn; k++, pp += PANEL_COLS, pfp += pfs) {                                 \
		_mm_prefetch(pfp, _MM_HINT_T1);                                                          \
		__m256 v0 = _mm256_loadu_ps(pp);                                                         \
		__m256 v1 = _mm256_loadu_ps(pp + 8);                                                     \
		_Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                    \
			__m256 a = _mm256_broadcast_ss(A + r * lda + k);                                     \
			c0[r] = _mm256_fmadd_ps(a, v0, c0[r]);                                               \
			c1[r] = _mm256_fmadd_ps(a, v1, c1[r]);                                               \
		}                                                                                        \
	}                                                                                            \
	_Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                        \
		PANEL_STORE(full, C + r * ldc, l0, c0[r]);                                               \
		PANEL_STORE(full, C + r * ldc + 8, l1, c1[r]);                                           \
	}                                                                                            \
}

PANEL_H(1) PANEL_H(2) PANEL_H(3) PANEL_H(4) PANEL_H(5) PANEL_H(6)

typedef void (*troupe_panel_h_fn)(int, const float *, int, const float *, const float *, float *, int, int, int,
	const char *, int, int);
static const troupe_panel_h_fn troupe_panel_h[7] = {0, troupe_panel_h_1, troupe_panel_h_2, troupe_panel_h_3,
	troupe_panel_h_4, troupe_panel_h_5, troupe_panel_h_6};

// troupe_panel_small: panels [p0,p1) (PANEL_COLS each), chunk by chunk, M rows
// in balanced groups of <= 6; the passes over a chunk share out the prefetch of
// the chunk PANEL_AHEAD on (a chunk's 64-byte rows, evenly over their k steps).
static void troupe_panel_small(int M, int p0, int p1, int K, int OC, const float *A, int lda, const float *P,
		const float *bias, float *C, int ldc, int acc_in) {
	int passes = (M + 5) / 6;
	for (int p = p0; p < p1; p++) {
		int n = p * PANEL_COLS;
		for (int k0 = 0; k0 < K; k0 += PANEL_KC) {
			int kn = K - k0 < PANEL_KC ? K - k0 : PANEL_KC, pfs = (4 * PANEL_COLS + passes - 1) / passes;
			const char *pfp = (const char *)(P + ((long)p * K + k0 + (long)PANEL_AHEAD * kn) * PANEL_COLS);
			const float *pp = P + ((long)p * K + k0) * PANEL_COLS;
			for (int m0 = 0; m0 < M;) {
				int g = (M - m0 + 5) / 6, r = (M - m0 + g - 1) / g;
				troupe_panel_h[r](kn, A + (long)m0 * lda + k0, lda, pp, bias ? bias + n : 0, C + (long)m0 * ldc + n,
					ldc, k0 == 0, acc_in, pfp, pfs, OC - n);
				pfp += (long)pfs * kn;
				m0 += r;
			}
		}
	}
}
#endif
