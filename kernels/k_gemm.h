// Included twice by gemm_avx512_cgo.go (the AVX-512 and the AVX2 build, see
// simd.h); no include guard (the types are defined once).
#include "avx512_tr16.h"
#include "avx512_gelu.h"

// A packed AVX-512 sgemm for the model's products (row-major C (M,N) = alpha *
// op(A) (M,K) @ op(B) (K,N) + beta * C). Its AVX2 build (simd_avx2.h) has
// MR = 6 and 16-column tiles (TG_NR; TG_H2 drops the second 16 columns'
// code) and a 256 KB block of B; what follows describes the AVX-512 one.
// In the BLIS layout seen row-major:
//
//   for each depth block pc of KC:                 (KC <= 512, or all of K <= 768)
//     pack op(A)[:, pc] into MR-row micro-panels    (k-major: MR values per k)
//     for each column block jc of NC:               (KC x NC of B ~ 1 MB, in L2)
//       pack op(B)[pc, jc] into 32-column micro-panels (32 values per k)
//       for each MR-row micro-panel (MR x KC, ~18 KB, stays in L1):
//         for each 32-column micro-panel: the MR x 32 micro-kernel
//
// The micro-kernel keeps an (MR x 32) tile of C in 2*MR zmm registers (MR = 12:
// 24 accumulators, 2 for B; no spills, checked with objdump), loads two B
// vectors per k and broadcasts each A value straight from the packed panel
// (vbroadcastss from memory: one load uop, no shuffle), software-prefetching
// the B panel TG_PF floats ahead and the C tile before the k loop. Edges: A
// panels are zero-padded to MR rows and B panels to 32 columns, and the tile's
// store is limited to the valid rows and masked to the valid columns. alpha is
// applied when packing A; beta on the first depth block's store (beta == 0
// never reads C), later blocks add; an optional bias (first block) and GELU
// (last block) run on the tile in registers before its one store. Each
// element's sum runs over k in blocks of KC, in order, whatever the threading.
//
// Packing transposes 16x16 blocks through registers (op(A) not transposed,
// op(B) transposed); scalar packing of A cost ~8% of a product at N = 384.
// Where A is not transposed, A is mostly not packed at all (tg_direct: N <=
// TG_DIRECT_N, or A's rows not at a multiple of 2 KB): the kernel broadcasts
// from A's rows (troupe_kernel_d; 12 row pointers, one index). A narrow
// product uses each packed A value for only 2N flops, so packing (write and
// read back, from L3) was a visible share: skipping it took the deep narrow
// products (K >= 1152, N <= 384) from 0.95-1.0x OpenBLAS to 1.05-1.15x
// (BenchmarkGemmPacked). At wider N it measured level on one thread, and
// 2-8% faster on two (shared products, whose packed A one thread writes and
// the other reads). Also tried and within noise on the 2-vCPU dev box: MR = 14, no B
// prefetch, a 512 KB B block, KC 384/768/whole K. On the 2-vCPU Zen 3 (AVX2
// build, 2026-11-29, alternating in one process): the small training step
// with a chunk's B micro-panel stationary (column panels outer), with 48-row
// chunks, and with KC 256, all level with this order (medians of 20 steps
// within +-5% both ways); software-prefetching a transposed A's rows 4-16
// ahead while packing them made the weight-gradient products 1-10% slower.
// The macros stay overridable (e.g. CGO_CFLAGS=-DTG_MR=14) for such
// comparisons.

#ifndef TG_MR
#define TG_MR 12
#endif
#ifndef TG_NR
#define TG_NR 32
#endif
#ifndef TG_KC
#define TG_KC 512
#endif
#ifndef TG_DIRECT_N
#define TG_DIRECT_N 512
#endif
// TG_PACK_KB is how many depths of a transposed A (a weight gradient's X^T)
// pack_a copies into a panel before the next (tg_pack_kb). On the 2-vCPU
// Zen 3 (AVX2 build, 2026-11-29, alternating in one process on 2 threads,
// medians of 20, BenchmarkGemmPackKB), against depth by depth across all
// panels: small's weight gradients 1536x384x2048 79 -> 108 GFLOP/s,
// 384x384x2048 90 -> 113, 384x1152x2048 118 -> 128, 384x1536x2048 117 ->
// 124; gpt2's 768x768x1024 110 -> 126, 3072x768x1024 112 -> 128,
// 768x3072x1024 124 -> 128; the small training step (BenchmarkTrainPackKB,
// medians of 30) 1422 -> 1361, 1436 -> 1313 and 1429 -> 1383 ms, a gpt2
// step (medians of 8) 7218 -> 7086 ms. Blocks of 8, 16 and 32 measured
// level; 4 slower. Same packed panels, same bits.
#ifndef TG_PACK_KB
#define TG_PACK_KB 16
#endif
#ifndef TG_PF
#define TG_PF 256
#endif
// TG_KU is how many depth steps one pass of the micro-kernel's k loop runs
// (GCC's unroll; 1: none): the AVX2 build unrolls 4 (simd_avx2.h).
#ifndef TG_KU
#define TG_KU 1
#endif
#undef TG_PRAGMA
#undef TG_UNROLL
#define TG_PRAGMA(x) _Pragma(#x)
#define TG_UNROLL(n) TG_PRAGMA(GCC unroll n)
// TG_L2 is the budget in floats for one packed block of B (1 MB of SPR's 2 MB L2).
#ifndef TG_L2
#define TG_L2 (256 * 1024)
#endif

// tg_direct says whether a product reads A in place (troupe_kernel_d) instead
// of packing it: A not transposed, and N at most TG_DIRECT_N or A's row stride
// not a multiple of 2 KB. The kernel reads 12 rows of A at stride lda; at a
// stride that is a multiple of 4 KB they all fall in one L1 set (12 ways) and
// evict each other and B (gpt2's K = 3072: 5-10% slower in place), while at
// other strides reading in place saves packing A (gpt2's K = 768 and 2304
// products 2-8% faster on 2 threads, BenchmarkGemmDirect). Where A is
// transposed (a weight gradient's X^T), it reads A in place at N <=
// TG_DIRECT_N: the kernel takes the tile's MR values of each k straight from
// A's row k (troupe_kernel_t). Alternating in one process on 2 threads
// (2026-11-29, BenchmarkGemmDirectT), the N = 384 weight gradients of `small`
// ran 1.5-6% faster so (1536x384x2048: 345-357 GFLOP/s against 324-344
// packed), N = 768 level (+-1%), and N >= 1152 1-5% slower: packing A costs a
// product 1/N of its work, so it pays only where N is narrow. The result is
// how A is read: TG_A_PACKED, TG_A_ROWS (in place, not transposed) or
// TG_A_COLS (in place, transposed). TG_DIRECT_T is whether the transposed
// case reads in place at all: the AVX2 build packs (simd_avx2.h).
#ifndef TROUPE_GEMM_ENUM
#define TROUPE_GEMM_ENUM
enum { TG_A_PACKED = 0, TG_A_ROWS = 1, TG_A_COLS = 2 };
#endif
#ifndef TG_DIRECT_T
#define TG_DIRECT_T 1
#endif
static int tg_direct_wide = 1;
static int tg_direct_t = TG_DIRECT_T;
static int tg_direct(int transA, int N, long lda) {
	if (transA) return tg_direct_t && N <= TG_DIRECT_N ? TG_A_COLS : TG_A_PACKED;
	return N <= TG_DIRECT_N || (tg_direct_wide && lda % 512 != 0) ? TG_A_ROWS : TG_A_PACKED;
}
static void troupe_set_direct_wide(int on) { tg_direct_wide = on; }
static void troupe_set_direct_t(int on) { tg_direct_t = on; }

// TG_H2(...) is a 32-column tile's second 16 columns' code (none in a build
// of 16-column tiles).
#undef TG_H2
#if TG_NR > 16
#define TG_H2(...) __VA_ARGS__
#else
#define TG_H2(...)
#endif

// tg_kc_whole is the depth up to which a product takes its whole K as one
// depth block (else blocks of at most TG_KC): 768 where L1d holds 48 KB (the
// MR x 768 A panel is 36 KB), else TG_KC (troupe_kc_init). One block fewer
// saves a read and a write of all of C: GPT-2's LM head forward (1024 x 768
// x 50257, C = 206 MB) took 244-259 ms a step in one block against 269-305 in
// two of 384. A whole gpt2 step (B4 T256; BenchmarkKCWhole, same process,
// alternating, three runs) gained less than the noise: best step 1.5-2.2%
// faster, median -2.3% to +0.4%. A whole K of 1024 (a 48 KB panel) was 20%
// slower.
static int tg_kc_whole = TG_KC;
static int tg_pack_kb = TG_PACK_KB;
static void troupe_set_pack_kb(int k) { tg_pack_kb = k; }
static void troupe_set_kc_whole(int k) { tg_kc_whole = k; }
static int troupe_kc_init(void) {
	long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
	tg_kc_whole = l1 >= 48 * 1024 ? 768 : TG_KC;
	return tg_kc_whole;
}

// troupe_sgemm_kc is the depth block for K: K whole up to tg_kc_whole, else
// blocks of equal size of at most TG_KC.
static int troupe_sgemm_kc(int K) {
	if (K <= tg_kc_whole) return K;
	int nk = (K + TG_KC - 1) / TG_KC;
	return (K + nk - 1) / nk;
}

// troupe_sgemm_nc is the column block for depth kc (a multiple of TG_NR; blocks of
// about equal size).
static int troupe_sgemm_nc(int N, int kc) {
	int nc = TG_L2 / kc / TG_NR * TG_NR;
	if (nc < TG_NR) nc = TG_NR;
	int nb = (N + nc - 1) / nc;
	int per = (N + nb - 1) / nb;
	return (per + TG_NR - 1) / TG_NR * TG_NR;
}

// troupe_sgemm_ws is the workspace the product needs, in floats.
static long troupe_sgemm_ws(int M, int N, int K) {
	int kc = troupe_sgemm_kc(K);
	long mp = (long)(M + TG_MR - 1) / TG_MR * TG_MR;
	long nc = troupe_sgemm_nc(N, kc);
	return mp * kc + nc * kc + 16;
}

// pack_a: rows [0,M) of op(A), depth [pc,pc+kc), times alpha, into micro-panels
// ap[panel][k][MR], zero rows past M.
static __attribute__((TG_ISA)) void troupe_pack_a(int transA, int M, int pc, int kc,
		float alpha, const float *A, long lda, float *ap) {
	if (transA) {
		// A stored (K,M): row k of A holds depth k of every row, the MR
		// values of a panel contiguous. Depths go in blocks of tg_pack_kb
		// rows of A, and each panel gets its MR values of the block's rows
		// before the next panel: the rows' lines stay in L1 from one panel
		// to the next, and a panel's block is one run of writes. Depth by
		// depth across all panels (tg_pack_kb 1) wrote the same slot of
		// every panel in turn, panels kc * MR floats apart (12 or 24 KB at
		// kc 512: a multiple of 4 KB, so all in one L1 set and a few L2
		// ones), evicting each other before their lines were whole; a panel
		// at a time over all of kc read each row's line once per panel at
		// a stride of lda (1.5-8 KB here: a few L1 sets, from L2 at every
		// k). A slot is written 16 lanes wide, its spill past MR overwritten
		// by the next k's slot (a panel's depths go in order), except where
		// it would reach past the panel (masked there: AVX2's masked store
		// is slow).
		__m512 va = _mm512_set1_ps(alpha);
		for (int k0 = 0; k0 < kc; k0 += tg_pack_kb) {
			int k1 = kc - k0 < tg_pack_kb ? kc : k0 + tg_pack_kb;
			for (int i0 = 0; i0 < M; i0 += TG_MR) {
				int rows = M - i0 < TG_MR ? M - i0 : TG_MR;
				for (int k = k0; k < k1; k++) {
					const float *s = A + (long)(pc + k) * lda;
					int wide = (long)k * TG_MR + 16 <= (long)kc * TG_MR;
					__m512 v = i0 + 16 <= M ? _mm512_loadu_ps(s + i0) : _mm512_maskz_loadu_ps(TROUPE_MASK(rows), s + i0);
					if (alpha != 1.0f) v = _mm512_mul_ps(va, v);
					float *dst = ap + (long)i0 * kc + (long)k * TG_MR;
					if (wide)
						_mm512_storeu_ps(dst, v);
					else
						_mm512_mask_storeu_ps(dst, (__mmask16)((1u << TG_MR) - 1), v);
				}
			}
		}
		return;
	}
	for (int i0 = 0; i0 < M; i0 += TG_MR) {
		int rows = M - i0 < TG_MR ? M - i0 : TG_MR;
		float *dst = ap + (long)i0 * kc;
		// A stored (M,K): transpose 16-value runs of the MR rows through
		// registers (rows past M and values past kc are zero).
		__m512 va = _mm512_set1_ps(alpha);
		for (int k0 = 0; k0 < kc; k0 += 16) {
			int w = kc - k0 < 16 ? kc - k0 : 16;
			__mmask16 m = TROUPE_MASK(w);
			__m512 r[16];
			for (int i = 0; i < 16; i++) {
				r[i] = i < rows ? _mm512_maskz_loadu_ps(m, A + (long)(i0 + i) * lda + pc + k0) : _mm512_setzero_ps();
				if (alpha != 1.0f) r[i] = _mm512_mul_ps(r[i], va);
			}
			tg_tr16(r);
			for (int c = 0; c < w; c++)
				_mm512_mask_storeu_ps(dst + (long)(k0 + c) * TG_MR, (__mmask16)((1u << TG_MR) - 1), r[c]);
		}
	}
}

// pack_b: columns [jc,jc+nc) of op(B) (at most N), depth [pc,pc+kc), into
// micro-panels bp[panel][k][32], zero columns past N. With cs (B not
// transposed only), cs[j - jc] also gets the sum over the depth block of
// column j (k in order; zero past N): a bias gradient's partial column sums,
// taken from the values packing loads anyway.
static __attribute__((TG_ISA)) void troupe_pack_b(int transB, int N, int jc, int nc, int pc, int kc,
		const float *B, long ldb, float *bp, float *cs) {
	int j1 = jc + nc < N ? jc + nc : N;
	for (int j0 = jc; j0 < j1; j0 += TG_NR) {
		int w = j1 - j0;
		float *dst = bp + (long)(j0 - jc) * kc;
		if (!transB) {
			__mmask16 m0 = TROUPE_MASK(w), m1 = TROUPE_MASK(w - 16);
			const float *s = B + (long)pc * ldb + j0;
			__m512 s0 = _mm512_setzero_ps();
			TG_H2(__m512 s1 = _mm512_setzero_ps();)
			for (int k = 0; k < kc; k++, s += ldb) { // cs is loop-invariant: -O3 unswitches the loop
				__m512 v0 = _mm512_maskz_loadu_ps(m0, s);
				TG_H2(__m512 v1 = _mm512_maskz_loadu_ps(m1, s + 16);)
				_mm512_storeu_ps(dst + k * TG_NR, v0);
				TG_H2(_mm512_storeu_ps(dst + k * TG_NR + 16, v1);)
				if (cs) {
					s0 = _mm512_add_ps(s0, v0);
					TG_H2(s1 = _mm512_add_ps(s1, v1);)
				}
			}
			if (cs) {
				_mm512_storeu_ps(cs + (j0 - jc), s0);
				TG_H2(_mm512_storeu_ps(cs + (j0 - jc) + 16, s1);)
			}
			continue;
		}
		// B stored (N,K): column j of op(B) is row j of B; transpose 16x16
		// blocks through registers (columns past N and values past kc are zero).
		for (int k0 = 0; k0 < kc; k0 += 16) {
			int kw = kc - k0 < 16 ? kc - k0 : 16;
			__mmask16 m = TROUPE_MASK(kw);
			for (int h = 0; h < TG_NR; h += 16) {
				__m512 r[16];
				for (int i = 0; i < 16; i++)
					r[i] = h + i < w ? _mm512_maskz_loadu_ps(m, B + (long)(j0 + h + i) * ldb + pc + k0) : _mm512_setzero_ps();
				tg_tr16(r);
				for (int c = 0; c < kw; c++) _mm512_storeu_ps(dst + (long)(k0 + c) * TG_NR + h, r[c]);
			}
		}
	}
}

// tg_epi is a tile's epilogue beyond alpha and beta, its pointers at the
// tile's element (0,0): bias (row of 32) and res (rows at stride ldr, added as
// res + bias before the product, as a C pre-filled with them would be) on the
// first depth block; on the last, the result times GELU'(dgx) (rows at ldx)
// when dgx is set, then GELU when gelu is set, the GELU going to gout (rows at
// ldg) while C keeps the value before it when gout is set.
#ifndef TROUPE_GEMM_EPI
#define TROUPE_GEMM_EPI
typedef struct {
	const float *bias, *res, *dgx;
	float *gout;
	long ldr, ldx, ldg;
	int gelu;
} tg_epi;
#endif

// tg_store is the kernels' epilogue: rows [0,rows) of the C tile at c get
// alpha * (c0|c1) + bias and residual (first k-block only, see tg_epi) + vb *
// C (C not read on the first k-block when beta is 0), then what e asks for
// on the last block, stored under the column masks m0, m1. Inlined, so the
// accumulators stay in registers.
static inline __attribute__((always_inline, TG_ISA)) void tg_store(const __m512 *c0, const __m512 *c1,
		float *c, long ldc, int rows, __mmask16 m0, __mmask16 m1, int first, int last, float alpha, float beta,
		const tg_epi *e) {
	__m512 vb = _mm512_set1_ps(first ? beta : 1.0f), va = _mm512_set1_ps(alpha);
	int load = !first || beta != 0.0f;
	__m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
	const float *bias = first && e ? e->bias : 0, *res = first && e ? e->res : 0;
	const float *dgx = last && e ? e->dgx : 0;
	int gelu = last && e && e->gelu;
	float *gout = gelu ? e->gout : 0;
	if (bias) {
		bias0 = _mm512_maskz_loadu_ps(m0, bias);
		TG_H2(bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);)
	}
#pragma GCC unroll 16
	for (int r = 0; r < TG_MR; r++) {
		if (r >= rows) break;
		float *p = c + (long)r * ldc;
		__m512 t0 = bias0, t1 = bias1;
		if (res) {
			t0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, res + (long)r * e->ldr), bias0);
			TG_H2(t1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, res + (long)r * e->ldr + 16), bias1);)
		}
		__m512 v0 = _mm512_fmadd_ps(va, c0[r], t0);
		TG_H2(__m512 v1 = _mm512_fmadd_ps(va, c1[r], t1);)
		if (load) {
			v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, p), v0);
			TG_H2(v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, p + 16), v1);)
		}
		if (dgx) {
			const float *x = dgx + (long)r * e->ldx;
			v0 = _mm512_mul_ps(tg_dgelu(_mm512_maskz_loadu_ps(m0, x)), v0);
			TG_H2(v1 = _mm512_mul_ps(tg_dgelu(_mm512_maskz_loadu_ps(m1, x + 16)), v1);)
		}
		if (gelu) {
			if (gout) {
				_mm512_mask_storeu_ps(p, m0, v0);
				TG_H2(_mm512_mask_storeu_ps(p + 16, m1, v1);)
				p = gout + (long)r * e->ldg;
			}
			v0 = tg_gelu(v0);
			TG_H2(v1 = tg_gelu(v1);)
		}
		_mm512_mask_storeu_ps(p, m0, v0);
		TG_H2(_mm512_mask_storeu_ps(p + 16, m1, v1);)
	}
}

// tg_prefetch_rows prefetches the 32 values at p of each of rows rows (row
// stride ld); nothing for a NULL p.
static inline __attribute__((always_inline)) void tg_prefetch_rows(const float *p, long ld, int rows) {
	if (!p) return;
	for (int r = 0; r < rows; r++) {
		_mm_prefetch((const char *)(p + (long)r * ld), _MM_HINT_T0);
		_mm_prefetch((const char *)(p + (long)r * ld + 31), _MM_HINT_T0);
	}
}

// tg_kernel is the MR x 32 micro-kernel: C tile (rows valid rows, columns
// masked by m0/m1) = alpha * A B + beta * C + bias over kc on the first depth
// block (beta == 0: C not read), C += alpha * A B on later ones, with the
// epilogue e (may be NULL) as tg_store applies it. A's element (r, k) is
// a[r*rs + k*ks]; with clamp, rows past `rows` repeat the last valid row
// (never stored) instead of reading padding. Inlined into its two callers with
// constant rs/ks/clamp, so each gets its own addressing.
static inline __attribute__((always_inline, TG_ISA)) void tg_kernel(int kc, const float *a, long rs,
		long ks, int clamp, const float *bp, float *c, long ldc, int rows, __mmask16 m0, __mmask16 m1, int first,
		int last, float alpha, float beta, const tg_epi *e) {
	__m512 c0[TG_MR], c1[TG_MR];
	const float *ar[TG_MR];
#pragma GCC unroll 16
	for (int r = 0; r < TG_MR; r++) {
		c0[r] = _mm512_setzero_ps();
		TG_H2(c1[r] = _mm512_setzero_ps();)
		ar[r] = a + (long)(clamp && r >= rows ? rows - 1 : r) * rs;
	}
	// The C tile's lines come in while the k loop runs (its store would
	// otherwise wait on them from L3 or memory).
#pragma GCC unroll 16
	for (int r = 0; r < TG_MR; r++) {
		if (r < rows) {
			_mm_prefetch((const char *)(c + (long)r * ldc), _MM_HINT_T0);
			_mm_prefetch((const char *)(c + (long)r * ldc + 31), _MM_HINT_T0);
		}
	}
	// So do the epilogue's other rows (residual, GELU input, GELU output).
	if (e) {
		tg_prefetch_rows(first ? e->res : 0, e->ldr, rows);
		tg_prefetch_rows(last ? e->dgx : 0, e->ldx, rows);
		tg_prefetch_rows(last && e->gelu ? e->gout : 0, e->ldg, rows);
	}
	TG_UNROLL(TG_KU)
	for (int k = 0; k < kc; k++) {
#if TG_PF > 0
		_mm_prefetch((const char *)(bp + TG_PF), _MM_HINT_T0);
		TG_H2(_mm_prefetch((const char *)(bp + TG_PF + 16), _MM_HINT_T0);)
#endif
		__m512 b0 = _mm512_load_ps(bp);
		TG_H2(__m512 b1 = _mm512_load_ps(bp + 16);)
#pragma GCC unroll 16
		for (int r = 0; r < TG_MR; r++) {
			__m512 av = _mm512_set1_ps(ar[r][(long)k * ks]);
			c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
			TG_H2(c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);)
		}
		bp += TG_NR;
	}
	tg_store(c0, c1, c, ldc, rows, m0, m1, first, last, alpha, beta, e);
}

// troupe_kernel: A from a packed panel ap (TG_MR values per depth step, rows
// past `rows` zero; alpha already applied by the packing).
static __attribute__((TG_ISA)) void troupe_kernel(int kc, const float *ap, const float *bp,
		float *c, long ldc, int rows, __mmask16 m0, __mmask16 m1, int first, int last, float beta,
		const tg_epi *e) {
	tg_kernel(kc, ap, 1, TG_MR, 0, bp, c, ldc, rows, m0, m1, first, last, 1.0f, beta, e);
}

// troupe_kernel_d: A read straight from its rows (A stored (M,K), not
// transposed; a at row 0 of the tile, depth pc) instead of a packed panel.
static __attribute__((TG_ISA)) void troupe_kernel_d(int kc, const float *a, long lda, const float *bp,
		float *c, long ldc, int rows, __mmask16 m0, __mmask16 m1, int first, int last, float alpha, float beta,
		const tg_epi *e) {
	tg_kernel(kc, a, lda, 1, 1, bp, c, ldc, rows, m0, m1, first, last, alpha, beta, e);
}

// troupe_kernel_t: A read straight from A stored (K,M) (transposed; a at
// column 0 of the tile, depth pc): the tile's MR values of one k are
// consecutive.
static __attribute__((TG_ISA)) void troupe_kernel_t(int kc, const float *a, long lda, const float *bp,
		float *c, long ldc, int rows, __mmask16 m0, __mmask16 m1, int first, int last, float alpha, float beta,
		const tg_epi *e) {
	tg_kernel(kc, a, 1, lda, 1, bp, c, ldc, rows, m0, m1, first, last, alpha, beta, e);
}

// tg_tile runs one register tile of a product at rows i0.., column col..
// (rows valid rows, w valid columns) over the depth block at pc of length kc:
// direct is tg_direct's TG_A_ROWS (A read in place from its rows, stride lda),
// TG_A_COLS (A transposed, read in place k by k) or TG_A_PACKED (from the
// packed panel a); bpan is the tile's packed B panel. The epilogue e (NULL:
// none; pointers at element (0,0) of C) is moved to the tile.
static inline __attribute__((always_inline, TG_ISA)) void tg_tile(int direct, int kc, const float *A,
		long lda, int pc, const float *a, const float *bpan, float *C, long ldc, int i0, long col, int rows, int w,
		int first, int last, float alpha, float beta, const tg_epi *e) {
	tg_epi te, *tp = 0;
	if (e) {
		te = *e;
		if (te.bias) te.bias += col;
		if (te.res) te.res += i0 * te.ldr + col;
		if (te.dgx) te.dgx += i0 * te.ldx + col;
		if (te.gout) te.gout += i0 * te.ldg + col;
		tp = &te;
	}
	if (direct == TG_A_COLS) {
		troupe_kernel_t(kc, A + (long)pc * lda + i0, lda, bpan, C + (long)i0 * ldc + col, ldc, rows, TROUPE_MASK(w),
			TROUPE_MASK(w - 16), first, last, alpha, beta, tp);
		return;
	}
	if (direct == TG_A_ROWS) {
		troupe_kernel_d(kc, A + (long)i0 * lda + pc, lda, bpan, C + (long)i0 * ldc + col, ldc, rows, TROUPE_MASK(w),
			TROUPE_MASK(w - 16), first, last, alpha, beta, tp);
		return;
	}
	troupe_kernel(kc, a, bpan, C + (long)i0 * ldc + col, ldc, rows, TROUPE_MASK(w), TROUPE_MASK(w - 16), first, last, beta,
		tp);
}

// troupe_sgemm: C (M,N) = alpha * op(A) @ op(B) + beta * C, then the epilogue
// e (NULL: none; see tg_epi, its pointers at element (0,0) of C),
// single-threaded; ws holds troupe_sgemm_ws(M,N,K) floats, 64-byte aligned.
static __attribute__((TG_ISA)) void troupe_sgemm(int transA, int transB, int M, int N, int K,
		float alpha, const float *A, long lda, const float *B, long ldb, float beta, float *C, long ldc,
		float *ws, const tg_epi *e) {
	int kc0 = troupe_sgemm_kc(K);
	int ncb = troupe_sgemm_nc(N, kc0);
	long mp = (long)(M + TG_MR - 1) / TG_MR * TG_MR;
	float *ap = ws;
	float *bp = ws + ((mp * kc0 + 15) & ~15L);
	for (int pc = 0; pc < K; pc += kc0) {
		int kc = K - pc < kc0 ? K - pc : kc0;
		int first = pc == 0, last = pc + kc >= K;
		int direct = tg_direct(transA, N, lda);
		if (!direct) troupe_pack_a(transA, M, pc, kc, alpha, A, lda, ap);
		for (int jc = 0; jc < N; jc += ncb) {
			int nc = N - jc < ncb ? N - jc : ncb;
			troupe_pack_b(transB, N, jc, nc, pc, kc, B, ldb, bp, 0);
			for (int i0 = 0; i0 < M; i0 += TG_MR) {
				int rows = M - i0 < TG_MR ? M - i0 : TG_MR;
				const float *a = ap + (long)i0 * kc;
				for (int j0 = 0; j0 < nc; j0 += TG_NR)
					tg_tile(direct, kc, A, lda, pc, a, bp + (long)j0 * kc, C, ldc, i0, jc + j0, rows, nc - j0,
						first, last, alpha, beta, e);
			}
		}
	}
}

// A product shared by threads (troupe_sgemm_shared): troupe_sgemm's blocks
// (depth block of KC x column block of B sized to L2) are cut into chunks of
// cr rows, claimed one at a time, depth block by depth block, by whichever
// thread is free, so a thread slowed by other work on its core takes fewer
// chunks instead of holding the other at the end of the op. Within a depth
// block one thread takes chunks from the front (column block by column block)
// and the other from the back, meeting where their speeds put them: each
// thread keeps to the same end of C at every depth block, so the tiles it
// adds to are mostly the ones already in its own L2 (taken in one order by
// both threads, small's weight gradients at k = 2048 ran 4-7% slower than in
// fixed bands). Each block of B is packed once, shared: the threads that reach it
// claim its 32-column micro-panels to pack, then wait for the ones still being
// packed. A, where it is packed (not read in place), is packed once too: a row
// chunk's panels of a depth block by the first thread to need them, the
// others waiting. A chunk at depth block kb > 0 first waits until the same
// tiles' chunk at kb - 1 is done (claimed a whole block earlier, so almost
// always long done), so each element's sum runs over the depth blocks in
// order: the bits troupe_sgemm computes, whichever thread takes a chunk.
// st (zeroed by the caller) holds per depth block the chunks taken from the
// front and from the back (low and high 32 bits), then per block of B the
// next micro-panel to pack and how many are packed, then per (depth block,
// row chunk) A's state (0 not packed, 1 being packed, 2 packed), then per
// chunk whether it is done.

// tg_plan is a shared product's blocking, as troupe_sgemm blocks it: depth
// blocks of kc0 (nkb of them), column blocks of nc (njb), row chunks of cr
// (nrc, cr a multiple of TG_MR); np is the packed B's width (the last column block padded to whole
// micro-panels), mp the packed A's rows; direct: how A is read (tg_direct;
// nonzero: in place, not packed).
// The sizes the caller provides follow: chunks, the counters st holds
// (state), the packed B's and A's floats (bsize, asize; asize 0 when direct).
#ifndef TROUPE_GEMM_PLAN
#define TROUPE_GEMM_PLAN
typedef struct {
	int kc0, nkb, nc, njb, cr, nrc, direct;
	long np, mp, chunks, state, bsize, asize;
} tg_plan;
#endif

static tg_plan troupe_shared_plan(int transA, int M, int N, int K, long lda, int cr) {
	tg_plan p;
	p.kc0 = troupe_sgemm_kc(K);
	p.nkb = (K + p.kc0 - 1) / p.kc0;
	p.nc = troupe_sgemm_nc(N, p.kc0);
	p.njb = (N + p.nc - 1) / p.nc;
	p.cr = cr;
	p.nrc = (M + cr - 1) / cr;
	p.direct = tg_direct(transA, N, lda);
	p.np = (long)(p.njb - 1) * p.nc + (N - (long)(p.njb - 1) * p.nc + TG_NR - 1) / TG_NR * TG_NR;
	p.mp = (long)(M + TG_MR - 1) / TG_MR * TG_MR;
	p.chunks = (long)p.nkb * p.njb * p.nrc;
	p.state = p.nkb + 2L * p.nkb * p.njb + (long)p.nkb * p.nrc + p.chunks;
	p.bsize = p.np * K;
	p.asize = p.direct ? 0 : p.mp * K;
	return p;
}

// tg_wait spins until *p reaches v (the thread that will set it is working
// on it; yielding after a while in case it lost its core).
static inline void tg_wait(long long *p, long long v) {
	for (long spin = 0; __atomic_load_n(p, __ATOMIC_ACQUIRE) < v; spin++) {
		_mm_pause();
		if (spin > 4096) sched_yield();
	}
}

// tg_claim takes the next of a depth block's per chunks from the front (end
// 0) or the back (end 1) of its claim word w; -1 when none is left.
static inline long long tg_claim(long long *w, long long per, int end) {
	long long v = __atomic_load_n(w, __ATOMIC_RELAXED);
	for (;;) {
		long long f = v & 0xffffffffLL, b = v >> 32;
		if (f + b >= per) return -1;
		long long nv = end ? v + (1LL << 32) : v + 1;
		if (__atomic_compare_exchange_n(w, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			return end ? per - 1 - b : f;
	}
}

// troupe_sgemm_shared is one thread's part of a shared product (see above)
// planned as pl (troupe_shared_plan of the same transA, M, N, K): bp is the
// shared packed B (pl.bsize floats, 64-byte aligned), ap the shared packed A
// (pl.asize floats, aligned; unused when A is read in place), st the plan's
// pl.state counters, zeroed, end the end of each depth block this thread
// starts from (0 front). With bsum (B not transposed; pl.nkb * pl.np floats),
// bsum[kb * np + j] gets the sum of column j of op(B) over depth block kb
// (troupe_pack_b's cs), whichever thread packs it.
static __attribute__((TG_ISA)) void troupe_sgemm_shared(tg_plan pl, int transA, int transB, int M, int N,
		int K, float alpha, const float *A, long lda, const float *B, long ldb, float beta, float *C, long ldc,
		float *bp, float *ap, long long *st, int end, const tg_epi *e, float *bsum) {
	int kc0 = pl.kc0, nkb = pl.nkb, nc = pl.nc, njb = pl.njb, cr = pl.cr, nrc = pl.nrc, direct = pl.direct;
	long mp = pl.mp, np = pl.np;
	long long per = (long long)njb * nrc;
	long long *bst = st + nkb, *ast = bst + 2L * nkb * njb, *cdone = ast + (long)nkb * nrc;
	for (int kb = 0; kb < nkb; kb++) for (;;) {
		long long i = tg_claim(&st[kb], per, end);
		if (i < 0) break;
		long long q = kb * per + i;
		int jb = (int)(i / nrc), rc = (int)(i % nrc);
		int pc = kb * kc0, kc = K - pc < kc0 ? K - pc : kc0;
		int first = kb == 0, last = pc + kc >= K;
		int jc = jb * nc, ncw = N - jc < nc ? N - jc : nc;
		int npan = (ncw + TG_NR - 1) / TG_NR;
		int r0 = rc * cr, r1 = M - r0 < cr ? M : r0 + cr;
		// This block of B: packed by the threads that reach it.
		float *bb = bp + (long)pc * np + (long)jc * kc;
		long long *next = &bst[2L * (kb * njb + jb)], *done = next + 1;
		if (__atomic_load_n(done, __ATOMIC_ACQUIRE) < npan) {
			for (;;) {
				long long p = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
				if (p >= npan) break;
				troupe_pack_b(transB, N, jc + (int)p * TG_NR, TG_NR, pc, kc, B, ldb, bb + p * TG_NR * kc,
					bsum ? bsum + (long)kb * np + jc + p * TG_NR : 0);
				__atomic_fetch_add(done, 1, __ATOMIC_RELEASE);
			}
			tg_wait(done, npan);
		}
		// This row chunk's A at this depth: packed by the first thread to need it.
		float *ak = ap + mp * pc;
		long long *as = &ast[(long)kb * nrc + rc], zero = 0;
		if (!direct && __atomic_load_n(as, __ATOMIC_ACQUIRE) < 2) {
			if (__atomic_compare_exchange_n(as, &zero, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
				troupe_pack_a(transA, r1 - r0, pc, kc, alpha, transA ? A + r0 : A + (long)r0 * lda, lda,
					ak + (long)r0 * kc);
				__atomic_store_n(as, 2, __ATOMIC_RELEASE);
			} else {
				tg_wait(as, 2);
			}
		}
		// The same tiles at the depth block before must be done.
		if (kb > 0) tg_wait(&cdone[((long)(kb - 1) * njb + jb) * nrc + rc], 1);
		for (int i0 = r0; i0 < r1; i0 += TG_MR) {
			int rows = r1 - i0 < TG_MR ? r1 - i0 : TG_MR;
			for (int j0 = 0; j0 < ncw; j0 += TG_NR)
				tg_tile(direct, kc, A, lda, pc, ak + (long)i0 * kc, bb + (long)j0 * kc, C, ldc, i0, jc + j0, rows,
					ncw - j0, first, last, alpha, beta, e);
		}
		__atomic_store_n(&cdone[q], 1, __ATOMIC_RELEASE);
	}
}

// troupe_sgemm_shared_epi is troupe_sgemm_shared with the epilogue's fields as
// arguments (as troupe_sgemm_epi).
static void troupe_sgemm_shared_epi(tg_plan pl, int transA, int transB, int M, int N, int K, float alpha,
		const float *A, long lda, const float *B, long ldb, float beta, float *C, long ldc, float *bp, float *ap,
		long long *st, int end, int has_epi, const float *bias, const float *res, long ldr, const float *dgx, long ldx,
		float *gout, long ldg, int gelu, float *bsum) {
	tg_epi e = {bias, res, dgx, gout, ldr, ldx, ldg, gelu};
	troupe_sgemm_shared(pl, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bp, ap, st, end,
		has_epi ? &e : 0, bsum);
}

// troupe_sgemm_epi is troupe_sgemm with the epilogue's fields as arguments (Go
// may not pass C a pointer to Go memory holding Go pointers); has_epi 0: none.
static void troupe_sgemm_epi(int transA, int transB, int M, int N, int K, float alpha, const float *A, long lda,
		const float *B, long ldb, float beta, float *C, long ldc, float *ws, int has_epi, const float *bias,
		const float *res, long ldr, const float *dgx, long ldx, float *gout, long ldg, int gelu) {
	tg_epi e = {bias, res, dgx, gout, ldr, ldx, ldg, gelu};
	troupe_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ws, has_epi ? &e : 0);
}
