// Included twice by train_cgo.go (the AVX-512 and the AVX2 build, see simd.h); no include guard.
#include "avx512_tr16.h"

// Vector kernels for the non-matmul passes of a training step. In scalar Go
// (the compiler does not vectorise) LayerNorm, the bias gradient, the
// attention's softmax backward and the cross-entropy took about a fifth of a
// step of config "small"; each of these is one streaming pass at memory speed.
// The Go loops in the callers stay as the fallback (pure Go, or a CPU with
// neither AVX-512 nor AVX2).

// LayerNorm forward over `rows` rows of C values; mean and rstd may be NULL.
// Two passes over each row (mean, then variance about it), as the Go loop does.
static __attribute__((TG_ISA)) void troupe_ln_fwd(float *out, float *mean, float *rstd,
		const float *inp, const float *w, const float *b, long rows, long C, float eps) {
	for (long i = 0; i < rows; i++) {
		const float *x = inp + i * C;
		float *o = out + i * C;
		__m512 s = _mm512_setzero_ps();
		for (long j = 0; j < C; j += 16) {
			s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(TROUPE_MASK(C - j), x + j));
		}
		float mu = _mm512_reduce_add_ps(s) / (float)C;
		__m512 vm = _mm512_set1_ps(mu);
		__m512 ss = _mm512_setzero_ps();
		for (long j = 0; j < C; j += 16) {
			__mmask16 m = TROUPE_MASK(C - j);
			__m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + j), vm);
			ss = _mm512_fmadd_ps(d, d, ss);
		}
		float r = (float)(1.0 / sqrt((double)(_mm512_reduce_add_ps(ss) / (float)C + eps)));
		__m512 vr = _mm512_set1_ps(r);
		for (long j = 0; j < C; j += 16) {
			__mmask16 m = TROUPE_MASK(C - j);
			__m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), vm), vr);
			__m512 y = _mm512_fmadd_ps(n, _mm512_maskz_loadu_ps(m, w + j), _mm512_maskz_loadu_ps(m, b + j));
			_mm512_mask_storeu_ps(o + j, m, y);
		}
		if (mean) mean[i] = mu;
		if (rstd) rstd[i] = r;
	}
}

// LayerNorm backward over `rows` rows: the input gradient added,
// dx += r * (w*dy - mean(w*dy) - n*mean(w*dy*n)), n = (x-m)*r; and, unless dw
// and db are NULL, these rows' parameter gradients written (not added) to dw
// and db (C values each): dw = sum n*dy, db = sum dy. The second sweep of a
// row finds it in L1, so x and dy come from memory once instead of twice (the
// column-band pass reads them again for dw and db). dw is loop-invariant: -O3
// unswitches the test.
static __attribute__((TG_ISA)) void troupe_ln_bwd(float *dinp, float *dw, float *db,
		const float *dout, const float *inp, const float *w, const float *mean, const float *rstd, long rows, long C) {
	for (long i = 0; i < rows; i++) {
		const float *x = inp + i * C, *dy = dout + i * C;
		float *dx = dinp + i * C;
		__m512 vm = _mm512_set1_ps(mean[i]), vr = _mm512_set1_ps(rstd[i]);
		__m512 dm = _mm512_setzero_ps(), dnm = _mm512_setzero_ps();
		for (long j = 0; j < C; j += 16) {
			__mmask16 m = TROUPE_MASK(C - j);
			__m512 dn = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + j), _mm512_maskz_loadu_ps(m, dy + j));
			__m512 n = _mm512_mul_ps(_mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + j), vm), vr);
			dm = _mm512_add_ps(dm, dn);
			dnm = _mm512_fmadd_ps(dn, n, dnm);
		}
		__m512 vdm = _mm512_set1_ps(_mm512_reduce_add_ps(dm) / (float)C);
		__m512 vdnm = _mm512_set1_ps(_mm512_reduce_add_ps(dnm) / (float)C);
		for (long j = 0; j < C; j += 16) {
			__mmask16 m = TROUPE_MASK(C - j);
			__m512 g = _mm512_maskz_loadu_ps(m, dy + j);
			__m512 dn = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + j), g);
			__m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), vm), vr);
			__m512 gx = _mm512_mul_ps(_mm512_fnmadd_ps(n, vdnm, _mm512_sub_ps(dn, vdm)), vr);
			_mm512_mask_storeu_ps(dx + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dx + j), gx));
			if (dw && i == 0) {
				_mm512_mask_storeu_ps(dw + j, m, _mm512_mul_ps(n, g));
				_mm512_mask_storeu_ps(db + j, m, g);
			} else if (dw) {
				_mm512_mask_storeu_ps(dw + j, m, _mm512_fmadd_ps(n, g, _mm512_maskz_loadu_ps(m, dw + j)));
				_mm512_mask_storeu_ps(db + j, m, _mm512_add_ps(g, _mm512_maskz_loadu_ps(m, db + j)));
			}
		}
	}
}

// LayerNorm backward, the parameter gradients of one column band: over `rows`
// rows, dw[j] += n_ij*dy_ij and db[j] += dy_ij for j < width; dout and inp
// point at the band's first column of row 0, rows are ld apart.
static __attribute__((TG_ISA)) void troupe_ln_bwd_dw(float *dw, float *db, const float *dout,
		const float *inp, const float *mean, const float *rstd, long rows, long width, long ld) {
	for (long i = 0; i < rows; i++) {
		const float *x = inp + i * ld, *dy = dout + i * ld;
		__m512 vm = _mm512_set1_ps(mean[i]), vr = _mm512_set1_ps(rstd[i]);
		for (long j = 0; j < width; j += 16) {
			__mmask16 m = TROUPE_MASK(width - j);
			__m512 g = _mm512_maskz_loadu_ps(m, dy + j);
			__m512 n = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), vm), vr);
			_mm512_mask_storeu_ps(dw + j, m, _mm512_fmadd_ps(n, g, _mm512_maskz_loadu_ps(m, dw + j)));
			_mm512_mask_storeu_ps(db + j, m, _mm512_add_ps(g, _mm512_maskz_loadu_ps(m, db + j)));
		}
	}
}

// acc[j] += sum over `rows` rows of d[i*ld + j], j < width (the bias gradient).
static __attribute__((TG_ISA)) void troupe_colsum(float *acc, const float *d, long rows, long width, long ld) {
	for (long i = 0; i < rows; i++) {
		const float *r = d + i * ld;
		for (long j = 0; j < width; j += 16) {
			__mmask16 m = TROUPE_MASK(width - j);
			_mm512_mask_storeu_ps(acc + j, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, acc + j), _mm512_maskz_loadu_ps(m, r + j)));
		}
	}
}

// The attention's softmax backward on one row of n weights p and their
// gradient dp (in place): dp = p * (dp - sum(p*dp)) * scale.
static __attribute__((TG_ISA)) void troupe_dsoftmax(float *dp, const float *p, long n, float scale) {
	__m512 s = _mm512_setzero_ps();
	for (long j = 0; j < n; j += 16) {
		__mmask16 m = TROUPE_MASK(n - j);
		s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + j), _mm512_maskz_loadu_ps(m, dp + j), s);
	}
	__m512 vs = _mm512_set1_ps(_mm512_reduce_add_ps(s)), vsc = _mm512_set1_ps(scale);
	for (long j = 0; j < n; j += 16) {
		__mmask16 m = TROUPE_MASK(n - j);
		__m512 g = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dp + j), vs);
		_mm512_mask_storeu_ps(dp + j, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + j), g), vsc));
	}
}

// Log-softmax forward and backward in one pass per row, for `rows` rows of V
// logits x: logp[i] = log softmax(x_i)[t_i] (logp may be NULL) and, by mode,
//   0: no gradient (dx unused);
//   1: dx_i = g_i * (onehot(t_i) - softmax(x_i)), overwriting (zeros where g_i == 0);
//   2: dx_i += the same, rows with g_i == 0 skipped entirely (logp not written).
// The sum of exps adds up in float32 lanes over blocks of 1024 values and in
// double across blocks. dx must not alias x.
static __attribute__((TG_ISA)) void troupe_xent(float *logp, float *dx, const float *x,
		const int *targets, const float *g, long rows, long V, int mode) {
	for (long i = 0; i < rows; i++) {
		const float *xr = x + i * V;
		float *dr = dx ? dx + i * V : 0;
		float gi = mode ? g[i] : 0.0f;
		if (mode == 2 && gi == 0.0f) continue;
		__m512 mx = _mm512_set1_ps(-__builtin_inff());
		for (long j = 0; j < V; j += 16) {
			__mmask16 m = TROUPE_MASK(V - j);
			mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, xr + j));
		}
		float fmx = _mm512_reduce_max_ps(mx);
		__m512 vmax = _mm512_set1_ps(fmx);
		int store = mode == 1 && gi != 0.0f;
		double sum = 0;
		int t = targets[i];
		float xt = xr[t]; // before dx (which may be x itself) is written
		for (long j0 = 0; j0 < V; j0 += 1024) {
			long j1 = j0 + 1024 < V ? j0 + 1024 : V;
			__m512 s = _mm512_setzero_ps();
			for (long j = j0; j < j1; j += 16) {
				__mmask16 m = TROUPE_MASK(j1 - j);
				__m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + j), vmax));
				e = _mm512_maskz_mov_ps(m, e);
				s = _mm512_add_ps(s, e);
				if (store) _mm512_mask_storeu_ps(dr + j, m, e);
			}
			sum += (double)_mm512_reduce_add_ps(s);
		}
		if (logp) logp[i] = (float)((double)(xt - fmx) - log(sum));
		if (mode == 0) continue;
		if (mode == 1 && !store) {
			for (long j = 0; j < V; j += 16) _mm512_mask_storeu_ps(dr + j, TROUPE_MASK(V - j), _mm512_setzero_ps());
			continue;
		}
		__m512 sc = _mm512_set1_ps((float)(-(double)gi / sum));
		if (mode == 1) {
			for (long j = 0; j < V; j += 16) {
				__mmask16 m = TROUPE_MASK(V - j);
				_mm512_mask_storeu_ps(dr + j, m, _mm512_mul_ps(sc, _mm512_maskz_loadu_ps(m, dr + j)));
			}
		} else {
			for (long j = 0; j < V; j += 16) {
				__mmask16 m = TROUPE_MASK(V - j);
				__m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + j), vmax));
				_mm512_mask_storeu_ps(dr + j, m, _mm512_fmadd_ps(sc, e, _mm512_maskz_loadu_ps(m, dr + j)));
			}
		}
		dr[t] += gi;
	}
}

// Small products for the attention, C (R,n) = alpha * A (R,k) @ B (k,n)
// (+ C when acc), R <= 8: A(r,p) = A[r*sar + p*sap] (so a transposed A is
// sar = 1, sap = lda), C at row stride ldc, B packed in 32-column panels:
// panel q (ps floats apart) holds B's columns 32q..32q+31 for each k as 32
// contiguous values (columns past n zero). An (R,TG_MMW) tile of C stays in
// registers over the whole k loop (TG_MMW 32, or 16 in the AVX2 build: half
// a panel's row a k), B streams through L1 with full loads, the A values are
// broadcast. Read in place, the attention's operands (row
// strides of 3C and C floats, which put a head's 64-256 rows on a few L1
// sets: 4.6 KB apart at C = 384) came from L2 at every k; packed, a layer's
// attention ran 10-20% faster (same-process A/B), with the same sums in the
// same order.
typedef void (*troupe_mm_fn)(long, long, const float *, long, long, const float *, long, float *, long, float, int);

#define TROUPE_MMP(R)                                                                          \
static __attribute__((TG_ISA)) void troupe_mmp_##R(long n, long k, const float *A, \
		long sar, long sap, const float *Bp, long ps, float *C, long ldc, float alpha, int acc) { \
	__m512 va = _mm512_set1_ps(alpha);                                                          \
	for (long n0 = 0; n0 < n; n0 += TG_MMW) {                                                   \
		long w = n - n0;                                                                        \
		__mmask16 m0 = TROUPE_MASK(w), m1 = TG_MMW > 16 && w > 16 ? TROUPE_MASK(w - 16) : (__mmask16)0; \
		__m512 c0[R], c1[R];                                                                    \
		for (int r = 0; r < R; r++) { c0[r] = _mm512_setzero_ps(); c1[r] = _mm512_setzero_ps(); } \
		const float *b = Bp + (n0 / 32) * ps + n0 % 32, *a = A;                                 \
		for (long p = 0; p < k; p++, b += 32, a += sap) {                                       \
			__m512 b0 = _mm512_loadu_ps(b), b1 = TG_MMW > 16 ? _mm512_loadu_ps(b + 16) : b0;    \
			for (int r = 0; r < R; r++) {                                                       \
				__m512 av = _mm512_set1_ps(a[r * sar]);                                         \
				c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);                                         \
				if (TG_MMW > 16) c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);                        \
			}                                                                                   \
		}                                                                                       \
		for (int r = 0; r < R; r++) {                                                           \
			float *c = C + r * ldc + n0;                                                        \
			__m512 x0 = _mm512_mul_ps(va, c0[r]), x1 = _mm512_mul_ps(va, c1[r]);                \
			if (acc) {                                                                          \
				x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, c));                           \
				if (TG_MMW > 16) x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, c + 16));     \
			}                                                                                   \
			_mm512_mask_storeu_ps(c, m0, x0);                                                   \
			if (TG_MMW > 16) _mm512_mask_storeu_ps(c + 16, m1, x1);                             \
		}                                                                                       \
	}                                                                                           \
}
TROUPE_MMP(1) TROUPE_MMP(2) TROUPE_MMP(3) TROUPE_MMP(4) TROUPE_MMP(5) TROUPE_MMP(6) TROUPE_MMP(7) TROUPE_MMP(8)

static const troupe_mm_fn troupe_mmp_r[9] = {0, troupe_mmp_1, troupe_mmp_2, troupe_mmp_3, troupe_mmp_4,
	troupe_mmp_5, troupe_mmp_6, troupe_mmp_7, troupe_mmp_8};

// dst = columns [0,n) of X (rows rows at stride ld) in 32-column panels of
// `rows` rows (troupe_mmp_R's B; panel q at dst + q*rows*32), zero past n.
static __attribute__((TG_ISA)) void troupe_panels(float *dst, const float *X, long ld, long rows, long n) {
	for (long q0 = 0; q0 < n; q0 += 32) {
		long w = n - q0;
		__mmask16 m0 = TROUPE_MASK(w), m1 = w > 16 ? TROUPE_MASK(w - 16) : (__mmask16)0;
		float *d = dst + q0 * rows;
		for (long p = 0; p < rows; p++, d += 32) {
			_mm512_storeu_ps(d, _mm512_maskz_loadu_ps(m0, X + p * ld + q0));
			_mm512_storeu_ps(d + 16, _mm512_maskz_loadu_ps(m1, X + p * ld + q0 + 16));
		}
	}
}

// dst = X^T in 32-column panels, X being T rows of hs values at stride ld:
// panel q (at dst + q*hs*32) holds, for each d < hs, X[32q..32q+31][d]
// (zero past T). The keys (or values) as troupe_mmp_R's B for q k^T. 16x16
// blocks go through registers (tg_tr16): element by element this was a tenth
// of the attention's time.
static __attribute__((TG_ISA)) void troupe_panels_t(float *dst, const float *X, long ld, long T, long hs) {
	for (long j0 = 0; j0 < T; j0 += 16) {
		long w = T - j0 < 16 ? T - j0 : 16;
		float *d = dst + (j0 / 32) * 32 * hs + j0 % 32;
		for (long p0 = 0; p0 < hs; p0 += 16) {
			long pw = hs - p0 < 16 ? hs - p0 : 16;
			__mmask16 m = TROUPE_MASK(pw);
			__m512 r[16];
			for (long i = 0; i < 16; i++)
				r[i] = i < w ? _mm512_maskz_loadu_ps(m, X + (j0 + i) * ld + p0) : _mm512_setzero_ps();
			tg_tr16(r);
			for (long c = 0; c < pw; c++) _mm512_storeu_ps(d + (p0 + c) * 32, r[c]);
		}
	}
	// A last panel's columns past the last 16-key block.
	long T32 = (T + 31) & ~31L;
	if (((T + 15) & ~15L) < T32)
		for (long p = 0; p < hs; p++) _mm512_storeu_ps(dst + (T32 / 32 - 1) * 32 * hs + p * 32 + 16, _mm512_setzero_ps());
}

// x[0:n] = softmax(x[0:n]) in place.
static __attribute__((TG_ISA)) void troupe_softmax_row(float *x, long n) {
	__m512 mx = _mm512_set1_ps(-__builtin_inff());
	for (long i = 0; i < n; i += 16) {
		__mmask16 m = TROUPE_MASK(n - i);
		mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + i));
	}
	__m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
	__m512 sum = _mm512_setzero_ps();
	for (long i = 0; i < n; i += 16) {
		__mmask16 m = TROUPE_MASK(n - i);
		__m512 e = _mm512_maskz_mov_ps(m, _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vmax)));
		sum = _mm512_add_ps(sum, e);
		_mm512_mask_storeu_ps(x + i, m, e);
	}
	__m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
	for (long i = 0; i < n; i += 16) {
		__mmask16 m = TROUPE_MASK(n - i);
		_mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(inv, _mm512_maskz_loadu_ps(m, x + i)));
	}
}

static void troupe_zero(float *x, long n) {
	for (long i = 0; i < n; i++) x[i] = 0;
}

// troupe_attn_ws is the scratch, in floats, of troupe_attn_fwd (bwd 0) or
// troupe_attn_bwd (bwd 1, without its T*T ds).
static long troupe_attn_ws(long T, long hs, int bwd) {
	long T32 = (T + 31) & ~31L, H32 = (hs + 31) & ~31L;
	return hs * T32 + (bwd ? 3 : 1) * T * H32;
}

// One (batch, head) of the causal attention forward: q, k, v at row stride ld,
// out at ldo, att (T,T) gets the softmax weights (zero above the diagonal).
// ws is scratch of troupe_attn_ws(T, hs, 0) floats: k^T and v in panels.
// Rows go in blocks of 8: scores against keys 0..i1 only, softmax, then the
// block's output rows.
static void troupe_attn_fwd(const float *q, const float *k, const float *v, long ld, float *out, long ldo,
		float *att, long T, long hs, float scale, float *ws) {
	float *kp = ws, *vp = ws + hs * ((T + 31) & ~31L);
	troupe_panels_t(kp, k, ld, T, hs);
	troupe_panels(vp, v, ld, T, hs);
	for (long i0 = 0; i0 < T; i0 += TG_ROWS) {
		long R = T - i0 < TG_ROWS ? T - i0 : TG_ROWS, i1 = i0 + R;
		long n = (i1 + 15) & ~15L;
		if (n > T) n = T;
		troupe_mmp_r[R](n, hs, q + i0 * ld, ld, 1, kp, hs * 32, att + i0 * T, T, scale, 0);
		for (long r = 0; r < R; r++) {
			long i = i0 + r;
			troupe_softmax_row(att + i * T, i + 1);
			troupe_zero(att + i * T + i + 1, T - i - 1);
		}
		troupe_mmp_r[R](hs, i1, att + i0 * T, T, 1, vp, T * 32, out + i0 * ldo, ldo, 1, 0);
	}
}

// One (batch, head) of the attention backward, adding into dq, dk, dv (or,
// without acc, overwriting them; each row block is one product) (row stride ld,
// like q, k, v) given dout (ldo) and the forward's att (T,T):
//   dp = dout v^T;  ds = att*(dp - rowsum(att*dp))*scale;  dq += ds k;
//   dv += att^T dout;  dk += ds^T q.
// ws is scratch of troupe_attn_ws(T, hs, 1) floats (v^T, k, dout and q in
// panels), ds of T*T.
static void troupe_attn_bwd(const float *q, const float *k, const float *v, long ld, float *dq, float *dk, float *dv,
		const float *dout, long ldo, const float *att, long T, long hs, float scale, float *ws, float *ds, int acc) {
	long TP = T * ((hs + 31) & ~31L);
	float *vtp = ws, *kp = ws + hs * ((T + 31) & ~31L), *dop = kp + TP, *qp = dop + TP;
	troupe_panels_t(vtp, v, ld, T, hs);
	troupe_panels(kp, k, ld, T, hs);
	troupe_panels(dop, dout, ldo, T, hs);
	troupe_panels(qp, q, ld, T, hs);
	for (long i0 = 0; i0 < T; i0 += TG_ROWS) {
		long R = T - i0 < TG_ROWS ? T - i0 : TG_ROWS, i1 = i0 + R;
		long n = (i1 + 15) & ~15L;
		if (n > T) n = T;
		troupe_mmp_r[R](n, hs, dout + i0 * ldo, ldo, 1, vtp, hs * 32, ds + i0 * T, T, 1, 0);
		for (long r = 0; r < R; r++) {
			long i = i0 + r;
			troupe_dsoftmax(ds + i * T, att + i * T, i + 1, scale);
			troupe_zero(ds + i * T + i + 1, T - i - 1);
		}
		troupe_mmp_r[R](hs, i1, ds + i0 * T, T, 1, kp, T * 32, dq + i0 * ld, ld, 1, acc);
	}
	// Key rows j0..j0+R: only query rows i >= j0 have weights on them.
	for (long j0 = 0; j0 < T; j0 += TG_ROWS) {
		long R = T - j0 < TG_ROWS ? T - j0 : TG_ROWS;
		troupe_mmp_r[R](hs, T - j0, att + j0 * T + j0, 1, T, dop + j0 * 32, T * 32, dv + j0 * ld, ld, 1, acc);
		troupe_mmp_r[R](hs, T - j0, ds + j0 * T + j0, 1, T, qp + j0 * 32, T * 32, dk + j0 * ld, ld, 1, acc);
	}
}

// Sum of x[i]^2 over n values, squares and sums in double (eight lanes per
// accumulator), in blocks of 4096 values as the Go loop.
static __attribute__((TG_ISA)) double troupe_sumsq(const float *x, long n) {
	double total = 0;
	for (long b0 = 0; b0 < n; b0 += 4096) {
		long b1 = b0 + 4096 < n ? b0 + 4096 : n;
		__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
		for (long i = b0; i < b1; i += 16) {
			__m512 v = _mm512_maskz_loadu_ps(TROUPE_MASK(b1 - i), x + i);
			__m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
			__m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
			s0 = _mm512_fmadd_pd(lo, lo, s0);
			s1 = _mm512_fmadd_pd(hi, hi, s1);
		}
		total += _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
	}
	return total;
}
