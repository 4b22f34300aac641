//go:build cuda

package kernels

// cudaSource holds every CUDA kernel of the cuda device except the matrix
// products (cuBLAS). It is compiled once per device at start-up with NVRTC
// (cudaDevice.compile) for the GPU's own compute capability, so no nvcc is needed
// to build troupe and nothing prebuilt is committed.
//
// Conventions, the same as the CPU's: row-major, shapes in comments, backward
// kernels add into their gradients. A null pointer for an optional output means
// "skip it". Row offsets are formed in 64 bits: an (N,V) logits tensor passes
// 2^31 values at N = 43k rows of GPT-2's vocabulary. Reductions over a row use
// one warp (C-wide rows) or one block (V-wide rows); their float sums differ from
// the CPU's in the order of addition only.
const cudaSource = cudaHelpers + `
#define GELU_SCALE 0.7978845608028654f

// online_merge folds the running (max, sum of exp(x-max)) pair (m2, s2) into (m, s).
__device__ __forceinline__ void online_merge(float &m, float &s, float m2, float s2) {
	if (m2 == NEG_INF) return;
	if (m == NEG_INF) { m = m2; s = s2; return; }
	if (m2 > m) { s = s * expf(m - m2) + s2; m = m2; }
	else { s += s2 * expf(m2 - m); }
}

// warp_online reduces each lane's (m, s) over the warp; every lane gets the result.
__device__ __forceinline__ void warp_online(float &m, float &s) {
	for (int o = 16; o > 0; o >>= 1) {
		float m2 = __shfl_xor_sync(0xffffffffu, m, o);
		float s2 = __shfl_xor_sync(0xffffffffu, s, o);
		online_merge(m, s, m2, s2);
	}
}

// block_online reduces (m, s) over the block (blockDim.x a multiple of 32, at
// most 1024); every thread gets the result. sh holds 64 floats.
__device__ void block_online(float &m, float &s, float *sh) {
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
	warp_online(m, s);
	__syncthreads();
	if (lane == 0) { sh[w] = m; sh[32 + w] = s; }
	__syncthreads();
	if (w == 0) {
		m = lane < nw ? sh[lane] : NEG_INF;
		s = lane < nw ? sh[32 + lane] : 0.0f;
		warp_online(m, s);
		if (lane == 0) { sh[0] = m; sh[32] = s; }
	}
	__syncthreads();
	m = sh[0];
	s = sh[32];
	__syncthreads();
}

// block_sum returns the sum of v over the block; sh holds 32 floats.
__device__ float block_sum(float v, float *sh) {
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
	v = warp_sum(v);
	__syncthreads();
	if (lane == 0) sh[w] = v;
	__syncthreads();
	if (w == 0) {
		v = lane < nw ? sh[lane] : 0.0f;
		v = warp_sum(v);
		if (lane == 0) sh[0] = v;
	}
	__syncthreads();
	v = sh[0];
	__syncthreads();
	return v;
}

#define GRID_STRIDE(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// ROWS_COLS walks a (rows, cols) index space launched as a 2-D grid: x over
// columns, y over rows (grid-stride in both), so no thread divides by a width.
#define ROWS_COLS(r, j, rows, cols) \
	for (long long r = blockIdx.y; r < (rows); r += gridDim.y) \
		for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < (cols); j += gridDim.x * blockDim.x)

// ---- elementwise ----

extern "C" __global__ void scale_kernel(float *x, float s, long long n) {
	GRID_STRIDE(i, n) x[i] *= s;
}

extern "C" __global__ void add_into_kernel(float *dst, const float *src, long long n) {
	GRID_STRIDE(i, n) dst[i] += src[i];
}

extern "C" __global__ void add_kernel(float *out, const float *a, const float *b, long long n) {
	GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

// scale2d: C (m,n) at row stride ldc = beta*C (0 when beta == 0: C is not read).
extern "C" __global__ void scale2d_kernel(float *c, int m, int n, int ldc, float beta) {
	ROWS_COLS(r, j, m, n) {
		float *p = c + r * ldc + j;
		*p = beta == 0.0f ? 0.0f : beta * *p;
	}
}


// copy2d: dst (rows,cols) at row stride ldd = src (rows,cols) at row stride lds.
extern "C" __global__ void copy2d_kernel(float *dst, int ldd, const float *src, int lds, int rows, int cols) {
	ROWS_COLS(r, j, rows, cols) dst[r * ldd + j] = src[r * lds + j];
}

// axpby2d: dst (rows,cols) at row stride ldd = beta*dst + src (rows,cols) at
// row stride lds; dst is not read when beta == 0.
extern "C" __global__ void axpby2d_kernel(float *dst, int ldd, const float *src, int lds, int rows, int cols, float beta) {
	ROWS_COLS(r, j, rows, cols) {
		float *p = dst + r * ldd + j;
		float v = src[r * lds + j];
		*p = beta == 0.0f ? v : beta * *p + v;
	}
}

// fill_rows: out (N,OC) = res (N,OC) + bias (OC); either may be null (zero).
extern "C" __global__ void fill_rows_kernel(float *out, const float *res, const float *bias, int N, int OC) {
	ROWS_COLS(r, j, N, OC) {
		float v = bias ? bias[j] : 0.0f;
		if (res) v += res[r * OC + j];
		out[r * OC + j] = v;
	}
}

// batch_ptrs: up to five arrays of count device addresses for a batched
// product over (b, h) = (i / NH, i % NH): ptrs[a*count + i] = base_a +
// 4*(b*sb_a + h*sh_a); arrays whose base is 0 are skipped.
extern "C" __global__ void batch_ptrs_kernel(unsigned long long *ptrs, int count, int NH,
		unsigned long long b0, long long sb0, long long sh0, unsigned long long b1, long long sb1, long long sh1,
		unsigned long long b2, long long sb2, long long sh2, unsigned long long b3, long long sb3, long long sh3,
		unsigned long long b4, long long sb4, long long sh4) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= count) return;
	long long b = i / NH, h = i % NH;
	unsigned long long base[5] = {b0, b1, b2, b3, b4};
	long long sb[5] = {sb0, sb1, sb2, sb3, sb4}, sh[5] = {sh0, sh1, sh2, sh3, sh4};
#pragma unroll
	for (int a = 0; a < 5; a++)
		if (base[a]) ptrs[(long long)a * count + i] = base[a] + 4ull * (unsigned long long)(b * sb[a] + h * sh[a]);
}

// transpose_axpby: dst (cols,rows) at row stride ldd = beta*dst + src^T for src
// (rows,cols) at row stride lds (dst not read when beta == 0: a plain
// transpose), through 32x32 tiles of shared memory so that both the reads and
// the writes are coalesced. Block (32,8); grid (ceil(cols/32), ceil(rows/32)).
extern "C" __global__ void transpose_axpby_kernel(float *dst, int ldd, const float *src, int lds, int rows, int cols, float beta) {
	__shared__ float tile[32][33];
	int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
	for (int k = threadIdx.y; k < 32; k += blockDim.y) {
		int r = r0 + k, c = c0 + threadIdx.x;
		if (r < rows && c < cols) tile[k][threadIdx.x] = src[(long long)r * lds + c];
	}
	__syncthreads();
	for (int k = threadIdx.y; k < 32; k += blockDim.y) {
		int c = c0 + k, r = r0 + threadIdx.x;
		if (r < rows && c < cols) {
			float *p = dst + (long long)c * ldd + r;
			*p = beta == 0.0f ? tile[threadIdx.x][k] : beta * *p + tile[threadIdx.x][k];
		}
	}
}

// sumsq_partial: partial[blockIdx.x] = sum of x^2 over this block's grid-stride
// share, in double. A fixed grid makes the result independent of timing.
extern "C" __global__ void sumsq_partial_kernel(const float *x, long long n, double *partial) {
	__shared__ double sh[32];
	double acc = 0.0;
	GRID_STRIDE(i, n) { double v = x[i]; acc += v * v; }
	for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
	if (lane == 0) sh[w] = acc;
	__syncthreads();
	if (threadIdx.x == 0) {
		double s = 0.0;
		for (int k = 0; k < nw; k++) s += sh[k];
		partial[blockIdx.x] = s;
	}
}

// ---- bias ----

// add_bias: out (N,OC) += bias (OC).
extern "C" __global__ void add_bias_kernel(float *out, const float *bias, int N, int OC) {
	ROWS_COLS(r, j, N, OC) out[r * OC + j] += bias[j];
}

// bias_backward: dbias (OC) += column sums of dout (N,OC). Block (32,8): 32
// columns, rows split over blockIdx.y; partial sums meet in dbias by atomicAdd.
extern "C" __global__ void bias_backward_kernel(float *dbias, const float *dout, int N, int OC) {
	__shared__ float sh[8][33];
	int col = blockIdx.x * 32 + threadIdx.x;
	float acc = 0.0f;
	if (col < OC) {
		for (long long row = blockIdx.y * 8 + threadIdx.y; row < N; row += (long long)gridDim.y * 8) {
			acc += dout[row * OC + col];
		}
	}
	sh[threadIdx.y][threadIdx.x] = acc;
	__syncthreads();
	if (threadIdx.y == 0 && col < OC) {
		float s = 0.0f;
		for (int k = 0; k < 8; k++) s += sh[k][threadIdx.x];
		atomicAdd(&dbias[col], s);
	}
}

// bias_backward4: bias_backward over float4 columns (OC4 = OC/4, dout 16-byte
// aligned): block (32,8) sums 128 columns over its band of rows.
extern "C" __global__ void bias_backward4_kernel(float *dbias, const float4 *dout, int N, int OC4) {
	__shared__ float4 sh[8][32];
	int col = blockIdx.x * 32 + threadIdx.x;
	float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
	if (col < OC4) {
		for (long long row = blockIdx.y * 8 + threadIdx.y; row < N; row += (long long)gridDim.y * 8) {
			float4 v = dout[row * OC4 + col];
			acc.x += v.x;
			acc.y += v.y;
			acc.z += v.z;
			acc.w += v.w;
		}
	}
	sh[threadIdx.y][threadIdx.x] = acc;
	__syncthreads();
	if (threadIdx.y == 0 && col < OC4) {
		float4 s = sh[0][threadIdx.x];
		for (int k = 1; k < 8; k++) {
			float4 v = sh[k][threadIdx.x];
			s.x += v.x;
			s.y += v.y;
			s.z += v.z;
			s.w += v.w;
		}
		atomicAdd(&dbias[4 * col], s.x);
		atomicAdd(&dbias[4 * col + 1], s.y);
		atomicAdd(&dbias[4 * col + 2], s.z);
		atomicAdd(&dbias[4 * col + 3], s.w);
	}
}

// ---- embeddings ----

// encoder_forward: out (N,C) = wte[tok[i]] + wpe[pos[i]].
extern "C" __global__ void encoder_forward_kernel(float *out, const int *tok, const int *pos,
		const float *wte, const float *wpe, int N, int C) {
	ROWS_COLS(r, j, N, C) out[r * C + j] = wte[(long long)tok[r] * C + j] + wpe[(long long)pos[r] * C + j];
}

// encoder_backward: dwte[tok[i]] += dout[i], dwpe[pos[i]] += dout[i] (either may be null).
extern "C" __global__ void encoder_backward_kernel(float *dwte, float *dwpe, const float *dout,
		const int *tok, const int *pos, int N, int C) {
	ROWS_COLS(r, j, N, C) {
		float d = dout[r * C + j];
		if (dwte) atomicAdd(&dwte[(long long)tok[r] * C + j], d);
		if (dwpe) atomicAdd(&dwpe[(long long)pos[r] * C + j], d);
	}
}

// ---- layernorm ----

// layernorm_forward: one warp per row of inp (N,C); two passes (mean, then the
// variance about it) as on the CPU; mean, rstd (N) may be null.
extern "C" __global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd,
		const float *inp, const float *weight, const float *bias, int N, int C, float eps) {
	int lane = threadIdx.x % WARP;
	long long row = blockIdx.x * (long long)(blockDim.x / WARP) + threadIdx.x / WARP;
	if (row >= N) return;
	const float *x = inp + row * C;
	float s = 0.0f;
	for (int j = lane; j < C; j += WARP) s += x[j];
	float m = warp_sum(s) / C;
	float ss = 0.0f;
	for (int j = lane; j < C; j += WARP) { float d = x[j] - m; ss += d * d; }
	float r = rsqrtf(warp_sum(ss) / C + eps);
	float *o = out + row * C;
	for (int j = lane; j < C; j += WARP) o[j] = (x[j] - m) * r * weight[j] + bias[j];
	if (lane == 0) {
		if (mean) mean[row] = m;
		if (rstd) rstd[row] = r;
	}
}

// layernorm_backward: dinp (N,C) += ..., dweight (C) += ..., dbias (C) += ...
// (each may be null). One warp per row; dweight and dbias gather in shared
// memory (2*C floats, dynamic) per block, then in global memory by atomicAdd.
extern "C" __global__ void layernorm_backward_kernel(float *dinp, float *dweight, float *dbias,
		const float *dout, const float *inp, const float *weight, const float *mean, const float *rstd,
		int N, int C) {
	extern __shared__ float sh[];
	float *dw = sh, *db = sh + C;
	for (int j = threadIdx.x; j < 2 * C; j += blockDim.x) sh[j] = 0.0f;
	__syncthreads();
	int lane = threadIdx.x % WARP, nw = blockDim.x / WARP;
	for (long long row = blockIdx.x * (long long)nw + threadIdx.x / WARP; row < N; row += (long long)gridDim.x * nw) {
		const float *dy = dout + row * C, *x = inp + row * C;
		float m = mean[row], r = rstd[row];
		float dm = 0.0f, dnm = 0.0f;
		for (int j = lane; j < C; j += WARP) {
			float dn = weight[j] * dy[j];
			dm += dn;
			dnm += dn * (x[j] - m) * r;
		}
		dm = warp_sum(dm) / C;
		dnm = warp_sum(dnm) / C;
		for (int j = lane; j < C; j += WARP) {
			float n = (x[j] - m) * r;
			if (dinp) dinp[row * C + j] += (weight[j] * dy[j] - dm - n * dnm) * r;
			if (dweight) atomicAdd(&dw[j], n * dy[j]);
			if (dbias) atomicAdd(&db[j], dy[j]);
		}
	}
	__syncthreads();
	for (int j = threadIdx.x; j < C; j += blockDim.x) {
		if (dweight) atomicAdd(&dweight[j], dw[j]);
		if (dbias) atomicAdd(&dbias[j], db[j]);
	}
}

// ---- gelu (tanh form, HF gelu_new) ----

extern "C" __global__ void gelu_forward_kernel(float *out, const float *inp, long long n) {
	GRID_STRIDE(i, n) {
		float x = inp[i];
		float u = GELU_SCALE * (x + 0.044715f * x * x * x);
		out[i] = 0.5f * x * (1.0f + tanhf(u));
	}
}

// gelu_backward: dinp += gelu'(inp) * dout (acc != 0) or dinp = gelu'(inp) *
// dout (acc == 0: dinp is not read); dinp may alias dout.
extern "C" __global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, long long n, int acc) {
	GRID_STRIDE(i, n) {
		float x = inp[i];
		float u = GELU_SCALE * (x + 0.044715f * x * x * x);
		float th = tanhf(u);
		float g = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
		float d = dout[i];
		dinp[i] = acc ? dinp[i] + g * d : g * d;
	}
}

// The same four values at a time (float4 loads and stores: more bytes in flight
// per thread on these memory-bound passes), for n4 = n/4 float4s at 16-byte
// aligned addresses; the arithmetic is the scalar kernels'.
__device__ __forceinline__ float gelu_of(float x) {
	float u = GELU_SCALE * (x + 0.044715f * x * x * x);
	return 0.5f * x * (1.0f + tanhf(u));
}

__device__ __forceinline__ float gelu_grad(float x) {
	float u = GELU_SCALE * (x + 0.044715f * x * x * x);
	float th = tanhf(u);
	return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
}

extern "C" __global__ void gelu_forward4_kernel(float4 *out, const float4 *inp, long long n4) {
	GRID_STRIDE(i, n4) {
		float4 x = inp[i];
		out[i] = make_float4(gelu_of(x.x), gelu_of(x.y), gelu_of(x.z), gelu_of(x.w));
	}
}

extern "C" __global__ void gelu_backward4_kernel(float4 *dinp, const float4 *inp, const float4 *dout, long long n4, int acc) {
	GRID_STRIDE(i, n4) {
		float4 x = inp[i], d = dout[i];
		float4 r = make_float4(gelu_grad(x.x) * d.x, gelu_grad(x.y) * d.y, gelu_grad(x.z) * d.z, gelu_grad(x.w) * d.w);
		if (acc) {
			float4 o = dinp[i];
			r.x += o.x; r.y += o.y; r.z += o.z; r.w += o.w;
		}
		dinp[i] = r;
	}
}

// ---- attention ----

// The permutes run over rows (b,t) of B*T and columns c = h*hs+e of C; the
// (B,NH,T,hs) index of (b,t,h,e) is ((b*NH+h)*T+t)*hs+e.
__device__ __forceinline__ long long bnth(long long bt, int c, int T, int NH, int hs) {
	unsigned u = (unsigned)bt; // B*T < 2^31: 32-bit division is several times cheaper
	long long b = u / T, t = u % T;
	int h = c / hs, e = c - h * hs;
	return ((b * NH + h) * T + t) * hs + e;
}

// permute_qkv: qkv (B,T,3,NH,hs) -> q, k, v (B,NH,T,hs) each.
extern "C" __global__ void permute_qkv_kernel(float *q, float *k, float *v, const float *qkv,
		int B, int T, int NH, int hs) {
	int C = NH * hs;
	ROWS_COLS(bt, c, (long long)B * T, C) {
		long long d = bnth(bt, c, T, NH, hs);
		const float *src = qkv + bt * 3 * C + c;
		q[d] = src[0];
		k[d] = src[C];
		v[d] = src[2 * C];
	}
}

// permute_btc: x (B,T,NH,hs) -> y (B,NH,T,hs).
extern "C" __global__ void permute_btc_kernel(float *y, const float *x, int B, int T, int NH, int hs) {
	int C = NH * hs;
	ROWS_COLS(bt, c, (long long)B * T, C) y[bnth(bt, c, T, NH, hs)] = x[bt * C + c];
}

// unpermute: y (B,NH,T,hs) -> out (B,T,NH*hs).
extern "C" __global__ void unpermute_kernel(float *out, const float *y, int B, int T, int NH, int hs) {
	int C = NH * hs;
	ROWS_COLS(bt, c, (long long)B * T, C) out[bt * C + c] = y[bnth(bt, c, T, NH, hs)];
}

// unpermute_add_qkv: dqkv (B,T,3,NH,hs) += dq, dk, dv (B,NH,T,hs). Each dqkv
// value has one writer.
extern "C" __global__ void unpermute_add_qkv_kernel(float *dqkv, const float *dq, const float *dk,
		const float *dv, int B, int T, int NH, int hs) {
	int C = NH * hs;
	ROWS_COLS(bt, c, (long long)B * T, C) {
		long long d = bnth(bt, c, T, NH, hs);
		float *dst = dqkv + bt * 3 * C + c;
		dst[0] += dq[d];
		dst[C] += dk[d];
		dst[2 * C] += dv[d];
	}
}

// softmax_causal: each row t of att (rows, T) (rows = B*NH*T, t = row % T) is
// replaced by softmax(att[0..t]) and zeros above the diagonal. One warp per row.
extern "C" __global__ void softmax_causal_kernel(float *att, long long rows, int T) {
	int lane = threadIdx.x % WARP;
	long long row = blockIdx.x * (long long)(blockDim.x / WARP) + threadIdx.x / WARP;
	if (row >= rows) return;
	int t = (int)((unsigned long long)row % (unsigned)T);
	float *x = att + row * T;
	float m = NEG_INF, s = 0.0f;
	for (int u = lane; u <= t; u += WARP) online_merge(m, s, x[u], 1.0f);
	warp_online(m, s);
	float inv = 1.0f / s;
	for (int u = lane; u < T; u += WARP) x[u] = u <= t ? expf(x[u] - m) * inv : 0.0f;
}

// softmax_causal_backward: d (rows, T) holds datt on entry and dpreatt on exit:
// d[u] = att[u] * (d[u] - sum_w att[w] d[w]) * scale for u <= t, 0 above.
extern "C" __global__ void softmax_causal_backward_kernel(float *d, const float *att, long long rows, int T, float scale) {
	int lane = threadIdx.x % WARP;
	long long row = blockIdx.x * (long long)(blockDim.x / WARP) + threadIdx.x / WARP;
	if (row >= rows) return;
	int t = (int)((unsigned long long)row % (unsigned)T);
	float *dr = d + row * T;
	const float *a = att + row * T;
	float dot = 0.0f;
	for (int u = lane; u <= t; u += WARP) dot += a[u] * dr[u];
	dot = warp_sum(dot);
	for (int u = lane; u < T; u += WARP) dr[u] = u <= t ? a[u] * (dr[u] - dot) * scale : 0.0f;
}

// softmax_causal4: softmax_causal for T a multiple of 128 up to 1024 at
// 16-byte aligned rows, a lane holding its T/32 values (float4s c*32+lane) in
// registers: one read of the row instead of two, none of the float4s wholly
// above the diagonal, and a plain max-then-sum in place of the online merge.
// (The backward the same way, holding att and datt, measured slower on an
// H200: 0.78 against 0.73 ms a GPT-2 step at B*T = 8192.)
#define SM4_MAXC 8
extern "C" __global__ void softmax_causal4_kernel(float *att, long long rows, int T) {
	int lane = threadIdx.x % WARP;
	long long row = blockIdx.x * (long long)(blockDim.x / WARP) + threadIdx.x / WARP;
	if (row >= rows) return;
	int t = (int)((unsigned long long)row % (unsigned)T);
	float4 *x = (float4 *)(att + row * T);
	int nc = T / 128;
	float4 v[SM4_MAXC];
	float m = NEG_INF;
#pragma unroll
	for (int c = 0; c < SM4_MAXC; c++) {
		v[c] = make_float4(NEG_INF, NEG_INF, NEG_INF, NEG_INF);
		int u = (c * WARP + lane) * 4;
		if (c < nc && u <= t) {
			float4 a = x[c * WARP + lane];
			v[c].x = a.x;
			if (u + 1 <= t) v[c].y = a.y;
			if (u + 2 <= t) v[c].z = a.z;
			if (u + 3 <= t) v[c].w = a.w;
		}
		m = fmaxf(m, fmaxf(fmaxf(v[c].x, v[c].y), fmaxf(v[c].z, v[c].w)));
	}
	m = warp_max(m);
	float s = 0.0f;
#pragma unroll
	for (int c = 0; c < SM4_MAXC; c++) {
		v[c].x = expf(v[c].x - m);
		v[c].y = expf(v[c].y - m);
		v[c].z = expf(v[c].z - m);
		v[c].w = expf(v[c].w - m);
		s += (v[c].x + v[c].y) + (v[c].z + v[c].w);
	}
	float inv = 1.0f / warp_sum(s);
#pragma unroll
	for (int c = 0; c < SM4_MAXC; c++) {
		if (c < nc) x[c * WARP + lane] = make_float4(v[c].x * inv, v[c].y * inv, v[c].z * inv, v[c].w * inv);
	}
}

// cached_write: rows [r0,r1) of qkv (N,3C) write their k and v into kcache,
// vcache (S,maxT,C) at [slot[i], pos[i]].
extern "C" __global__ void cached_write_kernel(float *kc, float *vc, const float *qkv,
		const int *slot, const int *pos, int r0, int r1, int C, int maxT) {
	ROWS_COLS(rr, j, r1 - r0, C) {
		long long r = r0 + rr;
		long long off = ((long long)slot[r] * maxT + pos[r]) * C + j;
		kc[off] = qkv[r * 3 * C + C + j];
		vc[off] = qkv[r * 3 * C + 2 * C + j];
	}
}

// cached_attend: block (r0 + blockIdx.x / NH, blockIdx.x % NH) attends the q of
// its row and head over positions 0..pos[i] of its slot. Dynamic shared memory:
// hs (q) + maxT (scores) + 64 (reductions) + G*hs (output partials) floats, G =
// blockDim.x / hs threads per output value.
extern "C" __global__ void cached_attend_kernel(float *out, const float *qkv, const float *kc,
		const float *vc, const int *slot, const int *pos, int r0, int C, int NH, int maxT, float scale) {
	extern __shared__ float sh[];
	int hs = C / NH;
	int G = blockDim.x / hs;
	float *q = sh, *sc = sh + hs, *red = sh + hs + maxT, *part = red + 64;
	long long i = r0 + blockIdx.x / NH;
	int h = blockIdx.x % NH;
	int P = pos[i] + 1;
	const float *kb = kc + (long long)slot[i] * maxT * C + h * hs;
	const float *vb = vc + (long long)slot[i] * maxT * C + h * hs;
	for (int e = threadIdx.x; e < hs; e += blockDim.x) q[e] = qkv[i * 3 * C + h * hs + e] * scale;
	__syncthreads();
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
	for (int u = w; u < P; u += nw) {
		float d = 0.0f;
		for (int e = lane; e < hs; e += WARP) d += q[e] * kb[(long long)u * C + e];
		d = warp_sum(d);
		if (lane == 0) sc[u] = d;
	}
	__syncthreads();
	float m = NEG_INF, s = 0.0f;
	for (int u = threadIdx.x; u < P; u += blockDim.x) online_merge(m, s, sc[u], 1.0f);
	block_online(m, s, red);
	for (int u = threadIdx.x; u < P; u += blockDim.x) sc[u] = expf(sc[u] - m);
	__syncthreads();
	int g = threadIdx.x / hs, e = threadIdx.x % hs;
	if (g < G) {
		float acc = 0.0f;
		for (int u = g; u < P; u += G) acc += sc[u] * vb[(long long)u * C + e];
		part[g * hs + e] = acc;
	}
	__syncthreads();
	for (int e2 = threadIdx.x; e2 < hs; e2 += blockDim.x) {
		float acc = 0.0f;
		for (int k = 0; k < G; k++) acc += part[k * hs + e2];
		out[i * C + h * hs + e2] = acc / s;
	}
}

// ---- log-probabilities and entropy over V-wide rows, one block per row ----

// row_stats: (max, sum of exp(x - max)) of x (V) over the block. Four running
// pairs per thread keep four loads in flight: with one, a block per row waits
// on memory latency at about a third of the bandwidth.
__device__ void row_stats(const float *x, int V, float &m, float &s, float *sh) {
	float m0 = NEG_INF, m1 = NEG_INF, m2 = NEG_INF, m3 = NEG_INF;
	float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
	int bs = blockDim.x, j = threadIdx.x;
	for (; j + 3 * bs < V; j += 4 * bs) {
		float v0 = x[j], v1 = x[j + bs], v2 = x[j + 2 * bs], v3 = x[j + 3 * bs];
		online_merge(m0, s0, v0, 1.0f);
		online_merge(m1, s1, v1, 1.0f);
		online_merge(m2, s2, v2, 1.0f);
		online_merge(m3, s3, v3, 1.0f);
	}
	for (; j < V; j += bs) online_merge(m0, s0, x[j], 1.0f);
	online_merge(m0, s0, m1, s1);
	online_merge(m2, s2, m3, s3);
	online_merge(m0, s0, m2, s2);
	m = m0;
	s = s0;
	block_online(m, s, sh);
}

// logprob_forward: logp[i] = log softmax(logits[i,:])[targets[i]].
extern "C" __global__ void logprob_forward_kernel(float *logp, const float *logits, const int *targets, int N, int V) {
	__shared__ float sh[64];
	long long i = blockIdx.x;
	const float *x = logits + i * V;
	float m, s;
	row_stats(x, V, m, s, sh);
	if (threadIdx.x == 0) logp[i] = (x[targets[i]] - m) - logf(s);
}

// logprob_backward: dlogits[i,:] += dlogp[i] * (onehot(targets[i]) - softmax(logits[i,:])),
// rows with dlogp[i] == 0 skipped.
extern "C" __global__ void logprob_backward_kernel(float *dlogits, const float *logits, const int *targets,
		const float *dlogp, int N, int V) {
	__shared__ float sh[64];
	long long i = blockIdx.x;
	float g = dlogp[i];
	if (g == 0.0f) return;
	const float *x = logits + i * V;
	float *dx = dlogits + i * V;
	float m, s;
	row_stats(x, V, m, s, sh);
	float shift = m + logf(s);
	int t = targets[i];
#pragma unroll 4
	for (int j = threadIdx.x; j < V; j += blockDim.x) {
		float p = expf(x[j] - shift);
		dx[j] += (j == t ? g : 0.0f) - g * p;
	}
}

// cross_entropy_fused: losses[i] = -log softmax(logits[i,:])[targets[i]] and
// dlogits[i,:] = dlogp[i] * (onehot(targets[i]) - softmax(logits[i,:])),
// overwritten (zeros where dlogp[i] == 0): one block per row. With dpad
// non-null, dlogits is also written into dpad (N, ldp), zeros in columns V..ldp.
extern "C" __global__ void cross_entropy_fused_kernel(float *losses, float *dlogits, const float *logits,
		const int *targets, const float *dlogp, int N, int V, float *dpad, int ldp) {
	__shared__ float sh[64];
	long long i = blockIdx.x;
	const float *x = logits + i * V;
	float *dx = dlogits + i * V;
	float m, s;
	row_stats(x, V, m, s, sh);
	int t = targets[i];
	float shift = m + logf(s);
	if (threadIdx.x == 0) losses[i] = shift - x[t];
	float g = dlogp[i];
	float *dp = dpad ? dpad + i * ldp : 0;
	if (dp) for (int j = V + threadIdx.x; j < ldp; j += blockDim.x) dp[j] = 0.0f;
	if (g == 0.0f) {
		for (int j = threadIdx.x; j < V; j += blockDim.x) {
			dx[j] = 0.0f;
			if (dp) dp[j] = 0.0f;
		}
		return;
	}
#pragma unroll 4
	for (int j = threadIdx.x; j < V; j += blockDim.x) {
		float p = expf(x[j] - shift);
		float v = (j == t ? g : 0.0f) - g * p;
		dx[j] = v;
		if (dp) dp[j] = v;
	}
}

// cross_entropy_inplace: cross_entropy_fused over logits (N,V) at row stride
// ld, the gradient written over the logits it replaces and zeros in columns
// V..ld (the padded LM head's rows, headLossBackward).
extern "C" __global__ void cross_entropy_inplace_kernel(float *losses, float *logits, const int *targets,
		const float *dlogp, int N, int V, int ld) {
	__shared__ float sh[64];
	long long i = blockIdx.x;
	float *x = logits + i * ld;
	float m, s;
	row_stats(x, V, m, s, sh);
	int t = targets[i];
	float shift = m + logf(s);
	if (threadIdx.x == 0) losses[i] = shift - x[t];
	__syncthreads(); // x[t] is read before any thread overwrites it
	float g = dlogp[i];
	for (int j = V + threadIdx.x; j < ld; j += blockDim.x) x[j] = 0.0f;
	if (g == 0.0f) {
		for (int j = threadIdx.x; j < V; j += blockDim.x) x[j] = 0.0f;
		return;
	}
#pragma unroll 4
	for (int j = threadIdx.x; j < V; j += blockDim.x) {
		float p = expf(x[j] - shift);
		x[j] = (j == t ? g : 0.0f) - g * p;
	}
}

// cross_entropy_inplace4: cross_entropy_inplace reading and writing float4s
// (ld a multiple of 4, rows 16-byte aligned, V >= 4): twice the bytes in
// flight per load on this memory-bound pass over the (N,Vp) logits.
extern "C" __global__ void cross_entropy_inplace4_kernel(float *losses, float *logits, const int *targets,
		const float *dlogp, int N, int V, int ld) {
	__shared__ float sh[64];
	long long i = blockIdx.x;
	float *x = logits + i * ld;
	float4 *x4 = (float4 *)x;
	int n4 = ld / 4, v4 = V / 4; // float4s in the row, and wholly within its V values
	float m0 = NEG_INF, s0 = 0.0f, m1 = NEG_INF, s1 = 0.0f;
	for (int c = threadIdx.x; c < v4; c += blockDim.x) {
		float4 v = x4[c];
		online_merge(m0, s0, v.x, 1.0f);
		online_merge(m1, s1, v.y, 1.0f);
		online_merge(m0, s0, v.z, 1.0f);
		online_merge(m1, s1, v.w, 1.0f);
	}
	for (int j = v4 * 4 + threadIdx.x; j < V; j += blockDim.x) online_merge(m0, s0, x[j], 1.0f);
	online_merge(m0, s0, m1, s1);
	float m = m0, s = s0;
	block_online(m, s, sh);
	int t = targets[i];
	float shift = m + logf(s);
	if (threadIdx.x == 0) losses[i] = shift - x[t];
	__syncthreads(); // x[t] is read before any thread overwrites it
	float g = dlogp[i];
	for (int c = threadIdx.x; c < n4; c += blockDim.x) {
		float4 v = x4[c];
		int j = 4 * c;
		float4 o;
		o.x = j < V ? (j == t ? g : 0.0f) - g * expf(v.x - shift) : 0.0f;
		o.y = j + 1 < V ? (j + 1 == t ? g : 0.0f) - g * expf(v.y - shift) : 0.0f;
		o.z = j + 2 < V ? (j + 2 == t ? g : 0.0f) - g * expf(v.z - shift) : 0.0f;
		o.w = j + 3 < V ? (j + 3 == t ? g : 0.0f) - g * expf(v.w - shift) : 0.0f;
		x4[c] = o;
	}
}

// row_entropy: H = -sum p log p of softmax(x), with the lse it used; from the
// max-shifted sums s = sum e^{x-m} and w = sum e^{x-m} (x-m): H = log s - w/s.
__device__ void row_entropy(const float *x, int V, float &H, float &lse, float *sh) {
	float m, s;
	row_stats(x, V, m, s, sh);
	float w = 0.0f;
#pragma unroll 4
	for (int j = threadIdx.x; j < V; j += blockDim.x) { float d = x[j] - m; w += expf(d) * d; }
	w = block_sum(w, sh);
	H = logf(s) - w / s;
	lse = m + logf(s);
}

// entropy_forward: ent[i] = -sum_j p_ij log p_ij, p = softmax(logits[i,:]).
extern "C" __global__ void entropy_forward_kernel(float *ent, const float *logits, int N, int V) {
	__shared__ float sh[64];
	long long i = blockIdx.x;
	float H, lse;
	row_entropy(logits + i * V, V, H, lse, sh);
	if (threadIdx.x == 0) ent[i] = H;
}

// entropy_backward: dlogits[i,:] += dent[i] * (-p_ij (log p_ij + ent_i)); rows
// with dent[i] == 0 skipped.
extern "C" __global__ void entropy_backward_kernel(float *dlogits, const float *logits, const float *dent, int N, int V) {
	__shared__ float sh[64];
	long long i = blockIdx.x;
	float g = dent[i];
	if (g == 0.0f) return;
	const float *x = logits + i * V;
	float *dx = dlogits + i * V;
	float H, lse;
	row_entropy(x, V, H, lse, sh);
#pragma unroll 4
	for (int j = threadIdx.x; j < V; j += blockDim.x) {
		float lp = x[j] - lse;
		dx[j] -= g * expf(lp) * (lp + H);
	}
}

// ---- optimizer ----

// adamw: PyTorch's AdamW over n values; bc1inv, bc2inv = 1/(1-beta^step), made
// in float64 on the host. With gscale != 1 the gradients are first scaled in
// place (clipping), in the same pass.
extern "C" __global__ void adamw_kernel(float *p, float *g, float *m, float *v, long long n,
		float lr, float beta1, float beta2, float eps, float wd, float bc1inv, float bc2inv, float gscale) {
	GRID_STRIDE(i, n) {
		float gi = g[i];
		if (gscale != 1.0f) { gi *= gscale; g[i] = gi; }
		float mi = beta1 * m[i] + (1.0f - beta1) * gi;
		float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
		m[i] = mi;
		v[i] = vi;
		float mhat = mi * bc1inv, vhat = vi * bc2inv;
		p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
	}
}

// adamw4: adamw_kernel over n4 float4s (16-byte aligned), the same arithmetic.
__device__ __forceinline__ void adamw_one(float &p, float &g, float &m, float &v,
		float lr, float beta1, float beta2, float eps, float wd, float bc1inv, float bc2inv, float gscale) {
	float gi = g;
	if (gscale != 1.0f) { gi *= gscale; g = gi; }
	float mi = beta1 * m + (1.0f - beta1) * gi;
	float vi = beta2 * v + (1.0f - beta2) * gi * gi;
	m = mi;
	v = vi;
	float mhat = mi * bc1inv, vhat = vi * bc2inv;
	p -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p);
}

// adamw_four: adamw_one on float4 i of the buffers.
__device__ __forceinline__ void adamw_four(float4 *p, float4 *g, float4 *m, float4 *v, long long i,
		float lr, float beta1, float beta2, float eps, float wd, float bc1inv, float bc2inv, float gscale) {
	float4 pi = p[i], gi = g[i], mi = m[i], vi = v[i];
	adamw_one(pi.x, gi.x, mi.x, vi.x, lr, beta1, beta2, eps, wd, bc1inv, bc2inv, gscale);
	adamw_one(pi.y, gi.y, mi.y, vi.y, lr, beta1, beta2, eps, wd, bc1inv, bc2inv, gscale);
	adamw_one(pi.z, gi.z, mi.z, vi.z, lr, beta1, beta2, eps, wd, bc1inv, bc2inv, gscale);
	adamw_one(pi.w, gi.w, mi.w, vi.w, lr, beta1, beta2, eps, wd, bc1inv, bc2inv, gscale);
	p[i] = pi;
	if (gscale != 1.0f) g[i] = gi;
	m[i] = mi;
	v[i] = vi;
}

// adamw_runs4: adamw4 over the whole model, float4 i of run r (the first with
// ends4[r] > i) with weight decay wd[r]: table holds nruns ends (in float4s)
// then nruns weight decays (float bits).
extern "C" __global__ void adamw_runs4_kernel(float4 *p, float4 *g, float4 *m, float4 *v, long long n4,
		const int *table, int nruns, float lr, float beta1, float beta2, float eps, float bc1inv, float bc2inv, float gscale) {
	GRID_STRIDE(i, n4) {
		int lo = 0, hi = nruns - 1;
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			if (table[mid] > i) hi = mid; else lo = mid + 1;
		}
		float wd = __int_as_float(table[nruns + lo]);
		adamw_four(p, g, m, v, i, lr, beta1, beta2, eps, wd, bc1inv, bc2inv, gscale);
	}
}

extern "C" __global__ void adamw4_kernel(float4 *p, float4 *g, float4 *m, float4 *v, long long n4,
		float lr, float beta1, float beta2, float eps, float wd, float bc1inv, float bc2inv, float gscale) {
	GRID_STRIDE(i, n4) {
		adamw_four(p, g, m, v, i, lr, beta1, beta2, eps, wd, bc1inv, bc2inv, gscale);
	}
}
`

// cudaHelpers opens both NVRTC programs (cudaSource, cudaAttentionSource).
const cudaHelpers = `
#define WARP 32
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
`

// cudaKernelNames are the kernels cudaDevice loads from cudaSource, by name.
var cudaKernelNames = []string{
	"scale_kernel", "add_into_kernel", "add_kernel", "scale2d_kernel", "sumsq_partial_kernel",
	"add_bias_kernel", "bias_backward_kernel", "bias_backward4_kernel",
	"encoder_forward_kernel", "encoder_backward_kernel",
	"layernorm_forward_kernel", "layernorm_backward_kernel",
	"gelu_forward_kernel", "gelu_backward_kernel", "gelu_forward4_kernel", "gelu_backward4_kernel",
	"permute_qkv_kernel", "permute_btc_kernel", "unpermute_kernel", "unpermute_add_qkv_kernel",
	"softmax_causal_kernel", "softmax_causal_backward_kernel", "softmax_causal4_kernel",
	"cached_write_kernel", "cached_attend_kernel",
	"logprob_forward_kernel", "logprob_backward_kernel",
	"entropy_forward_kernel", "entropy_backward_kernel",
	"adamw_kernel", "adamw4_kernel", "adamw_runs4_kernel", "cross_entropy_fused_kernel", "cross_entropy_inplace_kernel", "cross_entropy_inplace4_kernel", "copy2d_kernel", "fill_rows_kernel", "batch_ptrs_kernel", "axpby2d_kernel", "transpose_axpby_kernel",
}
