// Included twice by infer_attention_cgo.go (the AVX-512 and the AVX2 build, see simd.h); no include guard.
// Cached attention of (row, head) tasks [lo,hi) (task = row*NH + head) in one
// call: scores = scale * q . k[t] for t <= pos[row], softmax, out = sum p_t v[t].
// The per-task work of a decode step is small (a few dozen positions of 64
// values), so what this saves is two cgo calls and a scalar Go softmax per task.
// scores holds maxT floats.
static __attribute__((TG_ISA)) void troupe_infer_attend(int lo, int hi, int NH, int hs, int C,
		int maxT, const float *qkv, const float *kc, const float *vc, const int *slot, const int *pos,
		float *out, float *scores, float scale) {
	for (int task = lo; task < hi; task++) {
		int i = task / NH, h = task % NH;
		const float *q = qkv + (long)i * 3 * C + (long)h * hs;
		int P = pos[i] + 1;
		long base = ((long)slot[i] * NH + h) * maxT * hs; // (S,NH,maxT,hs): the head's rows contiguous
		float mx = -__builtin_inff();
		for (int t = 0; t < P; t++) {
			const float *k = kc + base + (long)t * hs;
			// In a decode step the caches come from memory (the weights streamed
			// through since this layer last ran): keys are prefetched 8 positions
			// ahead and each value row as its key is read: with rows at a stride
			// of C, the 6 layers' attention of 8 rows at P = 48 and 80 took
			// 0.77-0.83 and 1.29-1.43 ms (means) against 0.90-1.2 and 1.43-1.95
			// without (one thread, caches flushed before each step; C harness,
			// alternating).
			for (int d = 0; d < hs; d += 16) {
				if (t + 8 < P) _mm_prefetch((const char *)(k + 8L * hs + d), _MM_HINT_T0);
				_mm_prefetch((const char *)(vc + base + (long)t * hs + d), _MM_HINT_T1);
			}
			__m512 acc = _mm512_setzero_ps();
			for (int d = 0; d < hs; d += 16) {
				int w = hs - d;
				__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
				acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), _mm512_maskz_loadu_ps(m, k + d), acc);
			}
			float s = scale * _mm512_reduce_add_ps(acc);
			scores[t] = s;
			mx = s > mx ? s : mx;
		}
		__m512 vmx = _mm512_set1_ps(mx), vsum = _mm512_setzero_ps();
		for (int t = 0; t < P; t += 16) {
			int w = P - t;
			__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
			__m512 e = _ZGVeN16v_expf(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + t), vmx));
			e = _mm512_maskz_mov_ps(m, e);
			vsum = _mm512_add_ps(vsum, e);
			_mm512_mask_storeu_ps(scores + t, m, e);
		}
		__m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
		float *o = out + (long)i * C + (long)h * hs;
		for (int d = 0; d < hs; d += 16) {
			int w = hs - d;
			__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
			const float *v = vc + base + d;
			__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
			int t = 0;
			for (; t + 1 < P; t += 2) {
				a0 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t]), _mm512_maskz_loadu_ps(m, v + (long)t * hs), a0);
				a1 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t + 1]), _mm512_maskz_loadu_ps(m, v + (long)(t + 1) * hs), a1);
			}
			if (t < P) a0 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t]), _mm512_maskz_loadu_ps(m, v + (long)t * hs), a0);
			_mm512_mask_storeu_ps(o + d, m, _mm512_mul_ps(inv, _mm512_add_ps(a0, a1)));
		}
	}
}
