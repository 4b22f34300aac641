//go:build cuda

package kernels

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"unsafe"

	"gorgonia.org/cu"
	"gorgonia.org/cu/nvrtc"
)

// Fused causal attention for head size 64 and T up to 512 on TF32 tensor cores
// (WMMA), in three kernels that keep a query tile's (64, T) scores in shared
// memory: the forward writes the probabilities into att (the Device contract,
// which the backward reads) and y straight into out; the backward computes
// each query tile's dq (and the row sums rowdot_i = sum_j P_ij dP_ij), then
// each key tile's dk and dv. They replace the batched cuBLAS products, the
// softmax passes and their trips through memory; products and results are
// those of the cuBLAS path up to the order of float sums and TF32 rounding.
// Compiled with NVRTC apart from cudaSource, with CUDA's include directory for
// <mma.h>: where that fails the device keeps the cuBLAS path and says why in
// Backend.
//
// Off by default until measured faster than the in-place cuBLAS path: on an
// H200 (GPT-2 B32 T256) the step takes 43.2 ms with these kernels against 37.2
// with cuBLAS, both passing the same tests. A first version (lanes looping over
// half rows with 8-way bank conflicts, global fragment loads in the key-tile
// kernel, dP computed twice) took 44.2. Likely limits, not yet profiled on a
// GPU: two 86 KB blocks a multiprocessor (8 warps) in the forward and the
// query-tile kernel, the warps' 16 rows taken one after another, and WMMA's
// fragment loads through shared memory where FlashAttention keeps P in
// registers (mma.sync).
const cudaAttentionSource = cudaHelpers + `
#include <mma.h>
using namespace nvcuda;

#define HS 64      // head size
#define TB 64      // query rows per block, keys per chunk
#define LDS 72     // shared-memory row stride of a 64-wide tile, in floats (a multiple of 8: 32-byte aligned rows)

typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> frag_at;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_b;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> frag_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> frag_c;

template <typename F> __device__ __forceinline__ void to_tf32(F &f, float s) {
	for (int t = 0; t < f.num_elements; t++) f.x[t] = wmma::__float_to_tf32(f.x[t] * s);
}

// load_tile: a (64, 64) tile at src (row stride ld floats, 16-byte aligned) into
// sh (row stride LDS), by the block's threads in float4s.
__device__ __forceinline__ void load_tile(float *sh, const float *src, long long ld) {
	for (int i = threadIdx.x; i < TB * HS / 4; i += blockDim.x) {
		int r = i / (HS / 4), c = (i % (HS / 4)) * 4;
		*(float4 *)&sh[r * LDS + c] = *(const float4 *)&src[r * ld + c];
	}
}

// rows_times: acc (16, 64) = A (16 rows of a, row stride lda) @ B where B (64,
// 64) sits in shared memory at row stride LDS: k-steps of 8 over the 64.
__device__ __forceinline__ void rows_times(frag_c acc[HS / 16], const float *a, int lda, const float *b) {
	for (int k = 0; k < TB / 8; k++) {
		frag_a fa;
		wmma::load_matrix_sync(fa, a + k * 8, lda);
		to_tf32(fa, 1.0f);
		for (int n = 0; n < HS / 16; n++) {
			frag_b fb;
			wmma::load_matrix_sync(fb, b + k * 8 * LDS + n * 16, LDS);
			to_tf32(fb, 1.0f);
			wmma::mma_sync(acc[n], fa, fb, acc[n]);
		}
	}
}

// times_rows_t: s (16 rows, 64 cols) of the warp = A (16 x 64, fragments in
// registers) @ B^T with B (64, 64) in shared memory at row stride LDS; stored at
// dst (row stride ldd).
__device__ __forceinline__ void times_rows_t(float *dst, int ldd, const frag_a a[HS / 8], const float *b) {
	for (int n = 0; n < TB / 16; n++) {
		frag_c s;
		wmma::fill_fragment(s, 0.0f);
		for (int k = 0; k < HS / 8; k++) {
			frag_bt fb;
			wmma::load_matrix_sync(fb, b + n * 16 * LDS + k * 8, LDS);
			to_tf32(fb, 1.0f);
			wmma::mma_sync(s, a[k], fb, s);
		}
		wmma::store_matrix_sync(dst + n * 16, s, ldd, wmma::mem_row_major);
	}
}

// attn_fwd: block (query tile qt, b*NH + h), 4 warps of 16 query rows. The
// scores of the tile's 64 rows over the keys up to the diagonal are kept in
// shared memory (64 x SL, SL = T + 8): S = (q/sqrt(hs)) k^T chunk by chunk,
// then a warp per row takes max and sum and writes P into S and att (zeros
// above the diagonal), then y = P v chunk by chunk, written into out.
extern "C" __global__ void __launch_bounds__(128) attn_fwd_kernel(float *out, float *att, const float *qkv,
		int T, int NH, float scale) {
	extern __shared__ __align__(32) float smem[];
	int SL = T + 8;
	float *S = smem, *kv = smem + TB * SL;
	int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int C = NH * HS, C3 = 3 * C;
	int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int q0 = qt * TB, nk = (qt + 1) * TB;
	const float *base = qkv + (long long)b * T * C3 + h * HS;
	frag_a qa[HS / 8];
	for (int k = 0; k < HS / 8; k++) {
		wmma::load_matrix_sync(qa[k], base + (long long)(q0 + 16 * w) * C3 + k * 8, C3);
		to_tf32(qa[k], scale);
	}
	for (int j = 0; j <= qt; j++) {
		__syncthreads();
		load_tile(kv, base + (long long)j * TB * C3 + C, C3);
		__syncthreads();
		times_rows_t(S + 16 * w * SL + j * TB, SL, qa, kv);
	}
	__syncwarp();
	for (int r = 0; r < 16; r++) {
		int tq = q0 + 16 * w + r;
		float *srow = S + (16 * w + r) * SL;
		float m = NEG_INF;
		for (int c = lane; c <= tq; c += WARP) m = fmaxf(m, srow[c]);
		m = warp_max(m);
		float l = 0.0f;
		for (int c = lane; c <= tq; c += WARP) l += expf(srow[c] - m);
		float inv = 1.0f / warp_sum(l);
		float *arow = att + ((long long)bh * T + tq) * T;
		for (int c = lane; c < nk; c += WARP) {
			float p = c <= tq ? expf(srow[c] - m) * inv : 0.0f;
			srow[c] = p;
			arow[c] = p;
		}
		for (int c = nk + lane; c < T; c += WARP) arow[c] = 0.0f;
	}
	frag_c o[HS / 16];
	for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(o[n], 0.0f);
	for (int j = 0; j <= qt; j++) {
		__syncthreads();
		load_tile(kv, base + (long long)j * TB * C3 + 2 * C, C3);
		__syncthreads();
		rows_times(o, S + 16 * w * SL + j * TB, SL, kv);
	}
	__syncwarp();
	for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(S + 16 * w * SL + n * 16, o[n], SL, wmma::mem_row_major);
	__syncwarp();
	for (int r = 0; r < 16; r++) {
		float *orow = out + ((long long)b * T + q0 + 16 * w + r) * C + h * HS;
		const float *srow = S + (16 * w + r) * SL;
		orow[lane] = srow[lane];
		orow[lane + WARP] = srow[lane + WARP];
	}
}

// attn_bwd_q: block (query tile, b*NH + h). dP = dO v^T over the key chunks up
// to the diagonal, kept in shared memory; a warp per row forms rowdot =
// sum_j P_ij dP_ij (saved for attn_bwd_kv) and dS = P (dP - rowdot) scale in
// place; then dq += dS k chunk by chunk, added into dqkv.
extern "C" __global__ void __launch_bounds__(128) attn_bwd_q_kernel(float *dqkv, float *rowdot, const float *dout,
		const float *qkv, const float *att, int T, int NH, float scale) {
	extern __shared__ __align__(32) float smem[];
	int SL = T + 8;
	float *S = smem, *kv = smem + TB * SL;
	int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int C = NH * HS, C3 = 3 * C;
	int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int q0 = qt * TB, nk = (qt + 1) * TB;
	const float *base = qkv + (long long)b * T * C3 + h * HS;
	frag_a da[HS / 8];
	for (int k = 0; k < HS / 8; k++) {
		wmma::load_matrix_sync(da[k], dout + ((long long)b * T + q0 + 16 * w) * C + h * HS + k * 8, C);
		to_tf32(da[k], 1.0f);
	}
	for (int j = 0; j <= qt; j++) {
		__syncthreads();
		load_tile(kv, base + (long long)j * TB * C3 + 2 * C, C3); // v
		__syncthreads();
		times_rows_t(S + 16 * w * SL + j * TB, SL, da, kv);
	}
	__syncwarp();
	for (int r = 0; r < 16; r++) {
		int tq = q0 + 16 * w + r;
		float *srow = S + (16 * w + r) * SL;
		const float *arow = att + ((long long)bh * T + tq) * T;
		float rd = 0.0f;
		for (int c = lane; c < nk; c += WARP) rd += arow[c] * srow[c];
		rd = warp_sum(rd);
		if (lane == 0) rowdot[(long long)bh * T + tq] = rd;
		for (int c = lane; c < nk; c += WARP) srow[c] = arow[c] * (srow[c] - rd) * scale;
	}
	frag_c dq[HS / 16];
	for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(dq[n], 0.0f);
	for (int j = 0; j <= qt; j++) {
		__syncthreads();
		load_tile(kv, base + (long long)j * TB * C3 + C, C3); // k
		__syncthreads();
		rows_times(dq, S + 16 * w * SL + j * TB, SL, kv);
	}
	__syncwarp();
	for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(S + 16 * w * SL + n * 16, dq[n], SL, wmma::mem_row_major);
	__syncwarp();
	for (int r = 0; r < 16; r++) {
		float *drow = dqkv + ((long long)b * T + q0 + 16 * w + r) * C3 + h * HS;
		const float *srow = S + (16 * w + r) * SL;
		drow[lane] += srow[lane];
		drow[lane + WARP] += srow[lane + WARP];
	}
}

// attn_bwd_kv: block (key tile, b*NH + h), 4 warps of 16 keys; over the query
// tiles from the diagonal on, with the tile's P, dO and q staged in shared
// memory: dP^T = v dO^T, dS^T = P^T (dP^T - rowdot) scale (a warp per key row),
// dv += P^T dO and dk += dS^T q; added into dqkv at the end.
extern "C" __global__ void __launch_bounds__(128) attn_bwd_kv_kernel(float *dqkv, const float *rowdot, const float *dout,
		const float *qkv, const float *att, int T, int NH, float scale) {
	extern __shared__ __align__(32) float smem[];
	float *ps = smem, *st = smem + TB * LDS, *ot = smem + 2 * TB * LDS, *qs = smem + 3 * TB * LDS;
	int kt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int C = NH * HS, C3 = 3 * C;
	int w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int k0 = kt * TB;
	const float *base = qkv + (long long)b * T * C3 + h * HS;
	const float *dbase = dout + (long long)b * T * C + h * HS;
	frag_a va[HS / 8];
	for (int k = 0; k < HS / 8; k++) {
		wmma::load_matrix_sync(va[k], base + (long long)(k0 + 16 * w) * C3 + 2 * C + k * 8, C3);
		to_tf32(va[k], 1.0f);
	}
	frag_c dk[HS / 16], dv[HS / 16];
	for (int n = 0; n < HS / 16; n++) {
		wmma::fill_fragment(dk[n], 0.0f);
		wmma::fill_fragment(dv[n], 0.0f);
	}
	for (int qt = kt; qt < T / TB; qt++) {
		int q0 = qt * TB;
		__syncthreads();
		load_tile(ps, att + ((long long)bh * T + q0) * T + k0, T);
		load_tile(ot, dbase + (long long)q0 * C, C);
		load_tile(qs, base + (long long)q0 * C3, C3);
		__syncthreads();
		times_rows_t(st + 16 * w * LDS, LDS, va, ot); // dP^T (16 keys, 64 queries)
		__syncwarp();
		const float *rd = rowdot + (long long)bh * T + q0;
		float rd0 = rd[lane], rd1 = rd[lane + WARP];
		for (int r = 0; r < 16; r++) {
			int key = 16 * w + r;
			float *srow = st + key * LDS;
			srow[lane] = ps[lane * LDS + key] * (srow[lane] - rd0) * scale;
			srow[lane + WARP] = ps[(lane + WARP) * LDS + key] * (srow[lane + WARP] - rd1) * scale;
		}
		__syncwarp();
		for (int k = 0; k < TB / 8; k++) {
			frag_at pa; // P^T (16 keys, 8 queries): P stored (queries, keys) in ps
			wmma::load_matrix_sync(pa, ps + k * 8 * LDS + 16 * w, LDS);
			to_tf32(pa, 1.0f);
			frag_a sa; // dS^T (16 keys, 8 queries)
			wmma::load_matrix_sync(sa, st + 16 * w * LDS + k * 8, LDS);
			to_tf32(sa, 1.0f);
			for (int n = 0; n < HS / 16; n++) {
				frag_b ob, qb;
				wmma::load_matrix_sync(ob, ot + k * 8 * LDS + n * 16, LDS);
				to_tf32(ob, 1.0f);
				wmma::mma_sync(dv[n], pa, ob, dv[n]);
				wmma::load_matrix_sync(qb, qs + k * 8 * LDS + n * 16, LDS);
				to_tf32(qb, 1.0f);
				wmma::mma_sync(dk[n], sa, qb, dk[n]);
			}
		}
	}
	__syncwarp();
	for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(st + 16 * w * LDS + n * 16, dk[n], LDS, wmma::mem_row_major);
	__syncwarp();
	for (int r = 0; r < 16; r++) {
		float *drow = dqkv + ((long long)b * T + k0 + 16 * w + r) * C3 + C + h * HS;
		const float *srow = st + (16 * w + r) * LDS;
		drow[lane] += srow[lane];
		drow[lane + WARP] += srow[lane + WARP];
	}
	__syncwarp();
	for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(st + 16 * w * LDS + n * 16, dv[n], LDS, wmma::mem_row_major);
	__syncwarp();
	for (int r = 0; r < 16; r++) {
		float *drow = dqkv + ((long long)b * T + k0 + 16 * w + r) * C3 + 2 * C + h * HS;
		const float *srow = st + (16 * w + r) * LDS;
		drow[lane] += srow[lane];
		drow[lane + WARP] += srow[lane + WARP];
	}
}
`

var cudaAttentionKernelNames = []string{"attn_fwd_kernel", "attn_bwd_q_kernel", "attn_bwd_kv_kernel"}

// compileAttention builds cudaAttentionSource; on failure the fused attention
// stays off and attnErr says why.
func (d *cudaDevice) compileAttention() {
	d.attnErr = func() error {
		inc := cudaIncludeDir()
		if inc == "" {
			return fmt.Errorf("no CUDA include directory with mma.h ($CUDA_HOME/include, /usr/local/cuda/include, /usr/include)")
		}
		prog, err := nvrtc.CreateProgram(cudaAttentionSource, "troupe_attention.cu")
		if err != nil {
			return err
		}
		defer prog.Destroy()
		arch := fmt.Sprintf("--gpu-architecture=compute_%d%d", d.ccMajor, d.ccMinor)
		if err := prog.Compile(arch, "--include-path="+inc); err != nil {
			log, _ := prog.GetLog()
			return fmt.Errorf("nvrtc %s: %v\n%s", arch, err, log)
		}
		ptx, err := prog.GetPTX()
		if err != nil {
			return err
		}
		mod, err := cu.LoadData(ptx)
		if err != nil {
			return err
		}
		for _, name := range cudaAttentionKernelNames {
			f, err := mod.Function(name)
			if err != nil {
				return fmt.Errorf("kernel %s: %v", name, err)
			}
			bytes := attnSmemRows(attnMaxT)
			if name == "attn_bwd_kv_kernel" {
				bytes = attnSmemKV
			}
			if err := funcMaxDynamicSmem(*(*uintptr)(unsafe.Pointer(&f)), bytes); err != nil {
				return fmt.Errorf("kernel %s: %v", name, err)
			}
			d.fn[name] = f
		}
		return nil
	}()
	d.fusedAttn = false // slower than the cuBLAS path for now: see the note at cudaAttentionSource
}

// cudaIncludeDir is the first of $CUDA_HOME/include, /usr/local/cuda/include
// and /usr/include (Debian's packages) that holds mma.h, or "".
func cudaIncludeDir() string {
	var dirs []string
	if h := os.Getenv("CUDA_HOME"); h != "" {
		dirs = append(dirs, filepath.Join(h, "include"))
	}
	for _, dir := range append(dirs, "/usr/local/cuda/include", "/usr/include") {
		if _, err := os.Stat(filepath.Join(dir, "mma.h")); err == nil {
			return dir
		}
	}
	return ""
}

// attnMaxT is the longest T the fused kernels take: attn_fwd and attn_bwd_q
// keep a (64, T+8) row block of scores in shared memory.
const attnMaxT = 512

// attnSmemRows is the dynamic shared memory of attn_fwd and attn_bwd_q at T:
// the (64, T+8) scores and a (64, 72) tile, in bytes.
func attnSmemRows(T int) int { return (64*(T+8) + 64*72) * 4 }

// attnSmemKV is attn_bwd_kv's: four (64, 72) tiles.
const attnSmemKV = 4 * 64 * 72 * 4

// useFusedAttention reports whether attention at this shape runs the fused
// kernels: TF32 products on (they are TF32), head size 64, T a multiple of 64
// up to attnMaxT, and every tensor 32-byte aligned (WMMA loads from global
// memory).
func (d *cudaDevice) useFusedAttention(T, hs int, ts ...Tensor) bool {
	return d.fusedAttn && d.attnErr == nil && d.tf32 && hs == 64 && T >= 64 && T%64 == 0 && T <= attnMaxT && aligned(32, ts...)
}

// attentionForwardFused: attn_fwd over (T/64 query tiles, B*NH).
func (d *cudaDevice) attentionForwardFused(out, att, qkv Tensor, B, T, C, NH int) {
	scale := float32(1 / math.Sqrt(float64(C/NH)))
	d.launch("attn_fwd_kernel", T/64, B*NH, 128, 1, attnSmemRows(T), devPtr(out), devPtr(att), devPtr(qkv), T, NH, scale)
}

// attentionBackwardFused: attn_bwd_q then attn_bwd_kv, with the row sums in
// a (B*NH*T) scratch between them.
func (d *cudaDevice) attentionBackwardFused(dqkv, dout, qkv, att Tensor, B, T, C, NH int) {
	d.grow(&d.rowdot, B*NH*T)
	scale := float32(1 / math.Sqrt(float64(C/NH)))
	d.launch("attn_bwd_q_kernel", T/64, B*NH, 128, 1, attnSmemRows(T), devPtr(dqkv), devPtr(d.rowdot), devPtr(dout), devPtr(qkv), devPtr(att), T, NH, scale)
	d.launch("attn_bwd_kv_kernel", T/64, B*NH, 128, 1, attnSmemKV, devPtr(dqkv), devPtr(d.rowdot), devPtr(dout), devPtr(qkv), devPtr(att), T, NH, scale)
}
