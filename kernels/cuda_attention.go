//go:build cuda

package kernels

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"gorgonia.org/cu"
	"gorgonia.org/cu/nvrtc"
)

// Fused causal attention for head size 64 on TF32 tensor cores (WMMA), in
// three kernels that keep the (T,T) scores on chip: the forward writes the
// probabilities into att (the Device contract, which the backward reads) and y
// straight into out; the backward computes each query tile's dq (and the row
// sums rowdot_i = sum_j P_ij dP_ij), then each key tile's dk and dv. They
// replace the batched cuBLAS products, the softmax passes and their trips
// through memory; products and results are those of the cuBLAS path up to the
// order of float sums and TF32 rounding. Compiled with NVRTC apart from
// cudaSource, with CUDA's include directory for <mma.h>: where that fails the
// device keeps the cuBLAS path and says why in Backend.
//
// Off by default: correct (TestCUDAAttention, the model's losses) but slower
// than the in-place cuBLAS path on an H200 (GPT-2 B32 T256 step 44.2 against
// 37.5 ms; the backward 8.8 against ~3.6 ms): the lanes' row loops hit 8-way
// shared-memory bank conflicts, the key-tile kernel reads dO and q fragments
// from global memory in its inner loop, and the backward computes dP twice.
const cudaAttentionSource = `
#include <mma.h>
using namespace nvcuda;

#define HS 64      // head size
#define TB 64      // query rows per block, keys per chunk
#define LDS 72     // shared-memory row stride in floats (a multiple of 8: 32-byte aligned rows)
#define NEG_INF __int_as_float(0xff800000)

typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> frag_at;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> frag_b;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> frag_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> frag_c;

template <typename F> __device__ __forceinline__ void to_tf32(F &f, float s) {
	for (int t = 0; t < f.num_elements; t++) f.x[t] = wmma::__float_to_tf32(f.x[t] * s);
}

// load_tile: a (64, 64) tile at src (row stride ld floats, 16-byte aligned) into
// sh (row stride LDS), by the block's 128 threads in float4s.
__device__ __forceinline__ void load_tile(float *sh, const float *src, long long ld) {
	for (int i = threadIdx.x; i < TB * HS / 4; i += blockDim.x) {
		int r = i / (HS / 4), c = (i % (HS / 4)) * 4;
		*(float4 *)&sh[r * LDS + c] = *(const float4 *)&src[r * ld + c];
	}
}

// merge folds the (max, sum of exp(x - max)) pair (m2, s2) into (m, s).
__device__ __forceinline__ void merge(float &m, float &s, float m2, float s2) {
	if (m2 == NEG_INF) return;
	if (m == NEG_INF) { m = m2; s = s2; return; }
	if (m2 > m) { s = s * expf(m - m2) + s2; m = m2; }
	else s += s2 * expf(m2 - m);
}

// attn_fwd: block (query tile qt, b*NH + h), 4 warps of 16 query rows. Two
// passes over the key chunks up to the diagonal: the row max and sum, then P
// written to att and y += P v. q is pre-scaled by 1/sqrt(hs) before rounding.
extern "C" __global__ void __launch_bounds__(128) attn_fwd_kernel(float *out, float *att, const float *qkv,
		int T, int NH, float scale) {
	__shared__ __align__(32) float kv[TB * LDS];
	__shared__ __align__(32) float ss[TB * LDS];
	int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int C = NH * HS, C3 = 3 * C;
	int w = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane >> 1, half = lane & 1;
	int q0 = qt * TB, tq = q0 + 16 * w + r;
	const float *base = qkv + (long long)b * T * C3 + h * HS;
	float *srow = ss + (16 * w + r) * LDS + half * 32;
	float *arow = att + ((long long)bh * T + tq) * T;
	frag_a qa[HS / 8];
	for (int k = 0; k < HS / 8; k++) {
		wmma::load_matrix_sync(qa[k], base + (long long)(q0 + 16 * w) * C3 + k * 8, C3);
		to_tf32(qa[k], scale);
	}
	float m = NEG_INF, l = 0.0f;
	for (int pass = 0; pass < 2; pass++) {
		frag_c o[HS / 16];
		for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(o[n], 0.0f);
		for (int j = 0; j <= qt; j++) {
			__syncthreads();
			load_tile(kv, base + (long long)j * TB * C3 + C, C3);
			__syncthreads();
			for (int n = 0; n < TB / 16; n++) {
				frag_c s;
				wmma::fill_fragment(s, 0.0f);
				for (int k = 0; k < HS / 8; k++) {
					frag_bt kb;
					wmma::load_matrix_sync(kb, kv + n * 16 * LDS + k * 8, LDS);
					to_tf32(kb, 1.0f);
					wmma::mma_sync(s, qa[k], kb, s);
				}
				wmma::store_matrix_sync(ss + 16 * w * LDS + n * 16, s, LDS, wmma::mem_row_major);
			}
			__syncwarp();
			int key0 = j * TB + half * 32;
			if (pass == 0) {
				float mc = NEG_INF;
				for (int c = 0; c < 32; c++) if (key0 + c <= tq) mc = fmaxf(mc, srow[c]);
				float sc = 0.0f;
				if (mc != NEG_INF) for (int c = 0; c < 32; c++) if (key0 + c <= tq) sc += expf(srow[c] - mc);
				merge(m, l, mc, sc);
				continue;
			}
			float inv = 1.0f / l;
			for (int c = 0; c < 32; c += 4) {
				float4 p;
				p.x = key0 + c <= tq ? expf(srow[c] - m) * inv : 0.0f;
				p.y = key0 + c + 1 <= tq ? expf(srow[c + 1] - m) * inv : 0.0f;
				p.z = key0 + c + 2 <= tq ? expf(srow[c + 2] - m) * inv : 0.0f;
				p.w = key0 + c + 3 <= tq ? expf(srow[c + 3] - m) * inv : 0.0f;
				*(float4 *)&srow[c] = p;
				*(float4 *)&arow[key0 + c] = p;
			}
			__syncthreads();
			load_tile(kv, base + (long long)j * TB * C3 + 2 * C, C3);
			__syncthreads();
			for (int k = 0; k < TB / 8; k++) {
				frag_a pa;
				wmma::load_matrix_sync(pa, ss + 16 * w * LDS + k * 8, LDS);
				to_tf32(pa, 1.0f);
				for (int n = 0; n < HS / 16; n++) {
					frag_b vb;
					wmma::load_matrix_sync(vb, kv + k * 8 * LDS + n * 16, LDS);
					to_tf32(vb, 1.0f);
					wmma::mma_sync(o[n], pa, vb, o[n]);
				}
			}
		}
		if (pass == 0) {
			// the pair of lanes that share a row hold halves of its statistics
			float m2 = __shfl_xor_sync(0xffffffffu, m, 1), l2 = __shfl_xor_sync(0xffffffffu, l, 1);
			merge(m, l, m2, l2);
			m = __shfl_sync(0xffffffffu, m, lane & ~1); // both halves use the even lane's (same) figures
			l = __shfl_sync(0xffffffffu, l, lane & ~1);
			continue;
		}
		for (int j = (qt + 1) * TB + half * 32; j < T; j += TB)
			for (int c = 0; c < 32; c += 4) *(float4 *)&arow[j + c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
		__syncwarp();
		for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(ss + 16 * w * LDS + n * 16, o[n], LDS, wmma::mem_row_major);
		__syncwarp();
		float *orow = out + ((long long)b * T + tq) * C + h * HS + half * 32;
		for (int c = 0; c < 32; c += 4) *(float4 *)&orow[c] = *(float4 *)&srow[c];
	}
}

// attn_bwd_q: block (query tile, b*NH + h). Pass 1: dP = dO v^T over the key
// chunks and rowdot_i = sum_j P_ij dP_ij (saved for attn_bwd_kv); pass 2:
// dS = P (dP - rowdot) scale and dq += dS k, added into dqkv.
extern "C" __global__ void __launch_bounds__(128) attn_bwd_q_kernel(float *dqkv, float *rowdot, const float *dout,
		const float *qkv, const float *att, int T, int NH, float scale) {
	__shared__ __align__(32) float kv[TB * LDS];
	__shared__ __align__(32) float ss[TB * LDS];
	int qt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int C = NH * HS, C3 = 3 * C;
	int w = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane >> 1, half = lane & 1;
	int q0 = qt * TB, tq = q0 + 16 * w + r;
	const float *base = qkv + (long long)b * T * C3 + h * HS;
	float *srow = ss + (16 * w + r) * LDS + half * 32;
	const float *arow = att + ((long long)bh * T + tq) * T;
	frag_a da[HS / 8];
	for (int k = 0; k < HS / 8; k++) {
		wmma::load_matrix_sync(da[k], dout + ((long long)b * T + q0 + 16 * w) * C + h * HS + k * 8, C);
		to_tf32(da[k], 1.0f);
	}
	float rd = 0.0f;
	frag_c dq[HS / 16];
	for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(dq[n], 0.0f);
	for (int pass = 0; pass < 2; pass++) {
		for (int j = 0; j <= qt; j++) {
			__syncthreads();
			load_tile(kv, base + (long long)j * TB * C3 + 2 * C, C3); // v
			__syncthreads();
			for (int n = 0; n < TB / 16; n++) {
				frag_c s;
				wmma::fill_fragment(s, 0.0f);
				for (int k = 0; k < HS / 8; k++) {
					frag_bt vb;
					wmma::load_matrix_sync(vb, kv + n * 16 * LDS + k * 8, LDS);
					to_tf32(vb, 1.0f);
					wmma::mma_sync(s, da[k], vb, s);
				}
				wmma::store_matrix_sync(ss + 16 * w * LDS + n * 16, s, LDS, wmma::mem_row_major);
			}
			__syncwarp();
			int key0 = j * TB + half * 32;
			if (pass == 0) {
				for (int c = 0; c < 32; c += 4) {
					float4 p = *(const float4 *)&arow[key0 + c];
					rd += p.x * srow[c] + p.y * srow[c + 1] + p.z * srow[c + 2] + p.w * srow[c + 3];
				}
				continue;
			}
			for (int c = 0; c < 32; c += 4) {
				float4 p = *(const float4 *)&arow[key0 + c];
				srow[c] = p.x * (srow[c] - rd) * scale;
				srow[c + 1] = p.y * (srow[c + 1] - rd) * scale;
				srow[c + 2] = p.z * (srow[c + 2] - rd) * scale;
				srow[c + 3] = p.w * (srow[c + 3] - rd) * scale;
			}
			__syncthreads();
			load_tile(kv, base + (long long)j * TB * C3 + C, C3); // k
			__syncthreads();
			for (int k = 0; k < TB / 8; k++) {
				frag_a sa;
				wmma::load_matrix_sync(sa, ss + 16 * w * LDS + k * 8, LDS);
				to_tf32(sa, 1.0f);
				for (int n = 0; n < HS / 16; n++) {
					frag_b kb;
					wmma::load_matrix_sync(kb, kv + k * 8 * LDS + n * 16, LDS);
					to_tf32(kb, 1.0f);
					wmma::mma_sync(dq[n], sa, kb, dq[n]);
				}
			}
		}
		if (pass == 0) {
			rd += __shfl_xor_sync(0xffffffffu, rd, 1);
			if (half == 0) rowdot[(long long)bh * T + tq] = rd;
		}
	}
	__syncwarp();
	for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(ss + 16 * w * LDS + n * 16, dq[n], LDS, wmma::mem_row_major);
	__syncwarp();
	float *drow = dqkv + ((long long)b * T + tq) * C3 + h * HS + half * 32;
	for (int c = 0; c < 32; c++) drow[c] += srow[c];
}

// attn_bwd_kv: block (key tile, b*NH + h), 4 warps of 16 keys; over the query
// tiles from the diagonal on: dP^T = v dO^T, dS^T = P^T (dP^T - rowdot) scale,
// dv += P^T dO and dk += dS^T q, added into dqkv at the end.
extern "C" __global__ void __launch_bounds__(128) attn_bwd_kv_kernel(float *dqkv, const float *rowdot, const float *dout,
		const float *qkv, const float *att, int T, int NH, float scale) {
	__shared__ __align__(32) float ps[TB * LDS]; // P tile (queries, keys)
	__shared__ __align__(32) float st[TB * LDS]; // per warp: (16 keys, 64 queries)
	int kt = blockIdx.x, bh = blockIdx.y, b = bh / NH, h = bh % NH;
	int C = NH * HS, C3 = 3 * C;
	int w = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane >> 1, half = lane & 1;
	int k0 = kt * TB;
	const float *base = qkv + (long long)b * T * C3 + h * HS;
	const float *dbase = dout + (long long)b * T * C + h * HS;
	float *srow = st + (16 * w + r) * LDS + half * 32;
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
		__syncthreads();
		// dP^T (16 keys, 64 queries) = v dO^T
		for (int n = 0; n < TB / 16; n++) {
			frag_c s;
			wmma::fill_fragment(s, 0.0f);
			for (int k = 0; k < HS / 8; k++) {
				frag_bt ob;
				wmma::load_matrix_sync(ob, dbase + (long long)(q0 + n * 16) * C + k * 8, C);
				to_tf32(ob, 1.0f);
				wmma::mma_sync(s, va[k], ob, s);
			}
			wmma::store_matrix_sync(st + 16 * w * LDS + n * 16, s, LDS, wmma::mem_row_major);
		}
		__syncwarp();
		const float *rdq = rowdot + (long long)bh * T + q0 + half * 32;
		int key = 16 * w + r;
		for (int c = 0; c < 32; c++) {
			float p = ps[(half * 32 + c) * LDS + key];
			srow[c] = p * (srow[c] - rdq[c]) * scale;
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
				wmma::load_matrix_sync(ob, dbase + (long long)(q0 + k * 8) * C + n * 16, C);
				to_tf32(ob, 1.0f);
				wmma::mma_sync(dv[n], pa, ob, dv[n]);
				wmma::load_matrix_sync(qb, base + (long long)(q0 + k * 8) * C3 + n * 16, C3);
				to_tf32(qb, 1.0f);
				wmma::mma_sync(dk[n], sa, qb, dk[n]);
			}
		}
	}
	__syncwarp();
	float *drow = dqkv + ((long long)b * T + k0 + 16 * w + r) * C3 + h * HS + half * 32;
	for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(st + 16 * w * LDS + n * 16, dk[n], LDS, wmma::mem_row_major);
	__syncwarp();
	for (int c = 0; c < 32; c++) drow[C + c] += srow[c];
	__syncwarp();
	for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(st + 16 * w * LDS + n * 16, dv[n], LDS, wmma::mem_row_major);
	__syncwarp();
	for (int c = 0; c < 32; c++) drow[2 * C + c] += srow[c];
}
`

var cudaAttentionKernelNames = []string{"attn_fwd_kernel", "attn_bwd_q_kernel", "attn_bwd_kv_kernel"}

// compileAttention builds cudaAttentionSource; on failure the fused attention
// stays off and attnErr says why.
func (d *cudaDevice) compileAttention() {
	d.attnErr = func() error {
		inc := filepath.Join(os.Getenv("CUDA_HOME"), "include")
		if os.Getenv("CUDA_HOME") == "" {
			inc = "/usr/local/cuda/include"
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
			d.fn[name] = f
		}
		return nil
	}()
	d.fusedAttn = false // slower than the cuBLAS path for now: see the note at cudaAttentionSource
}

// useFusedAttention reports whether attention at this shape runs the fused
// kernels: TF32 products on (they are TF32), head size 64, T a multiple of 64,
// and every tensor 32-byte aligned (WMMA loads from global memory).
func (d *cudaDevice) useFusedAttention(T, hs int, ts ...Tensor) bool {
	if !d.fusedAttn || d.attnErr != nil || !d.tf32 || hs != 64 || T < 64 || T%64 != 0 {
		return false
	}
	for _, t := range ts {
		if t.Ptr%32 != 0 {
			return false
		}
	}
	return true
}

// attentionForwardFused: attn_fwd over (T/64 query tiles, B*NH).
func (d *cudaDevice) attentionForwardFused(out, att, qkv Tensor, B, T, C, NH int) {
	scale := float32(1 / math.Sqrt(float64(C/NH)))
	d.launch("attn_fwd_kernel", T/64, B*NH, 128, 1, 0, devPtr(out), devPtr(att), devPtr(qkv), T, NH, scale)
}

// attentionBackwardFused: attn_bwd_q then attn_bwd_kv, with the row sums in
// a (B*NH*T) scratch between them.
func (d *cudaDevice) attentionBackwardFused(dqkv, dout, qkv, att Tensor, B, T, C, NH int) {
	if need := B * NH * T; d.rowdot.N < need {
		d.freeRaw(d.rowdot)
		d.rowdot = d.allocRaw(need)
	}
	scale := float32(1 / math.Sqrt(float64(C/NH)))
	d.launch("attn_bwd_q_kernel", T/64, B*NH, 128, 1, 0, devPtr(dqkv), devPtr(d.rowdot), devPtr(dout), devPtr(qkv), devPtr(att), T, NH, scale)
	d.launch("attn_bwd_kv_kernel", T/64, B*NH, 128, 1, 0, devPtr(dqkv), devPtr(d.rowdot), devPtr(dout), devPtr(qkv), devPtr(att), T, NH, scale)
}
