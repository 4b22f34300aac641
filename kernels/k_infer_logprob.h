// Included twice by infer_logprob_cgo.go (the AVX-512 and the AVX2 build, see simd.h); no include guard.
// logp[i] = log softmax(x[i,:] * invT)[targets[i]] for rows [0,rows): one pass
// for the max, one of 16-lane exps (the sum in float32 lanes, then float64).
static __attribute__((TG_ISA)) void troupe_infer_logprob(int rows, int V, const float *x,
		const int *targets, float invT, float *logp) {
	__m512 vinv = _mm512_set1_ps(invT);
	for (int i = 0; i < rows; i++) {
		const float *r = x + (long)i * V;
		__m512 mx = _mm512_set1_ps(-__builtin_inff());
		for (int j = 0; j < V; j += 16) {
			int w = V - j;
			__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
			mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, r + j));
		}
		float fmx = _mm512_reduce_max_ps(mx);
		__m512 vmx = _mm512_set1_ps(fmx), sum = _mm512_setzero_ps();
		for (int j = 0; j < V; j += 16) {
			int w = V - j;
			__mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
			__m512 e = _ZGVeN16v_expf(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, r + j), vmx), vinv));
			sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
		}
		double s = _mm512_reduce_add_ps(sum);
		logp[i] = (float)((double)((r[targets[i]] - fmx) * invT) - log(s));
	}
}

// mx[i], sum[i] = max of row i of x (rows x w) and its sum of exp((x-max)*invT).
static __attribute__((TG_ISA)) void troupe_infer_maxsum(int rows, int w, const float *x,
		float invT, float *mx, float *sum) {
	__m512 vinv = _mm512_set1_ps(invT);
	for (int i = 0; i < rows; i++) {
		const float *r = x + (long)i * w;
		__m512 m0 = _mm512_set1_ps(-__builtin_inff());
		for (int j = 0; j < w; j += 16) {
			int k = w - j;
			__mmask16 m = k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << k) - 1);
			m0 = _mm512_mask_max_ps(m0, m, m0, _mm512_maskz_loadu_ps(m, r + j));
		}
		float fmx = _mm512_reduce_max_ps(m0);
		__m512 vmx = _mm512_set1_ps(fmx), s = _mm512_setzero_ps();
		for (int j = 0; j < w; j += 16) {
			int k = w - j;
			__mmask16 m = k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << k) - 1);
			__m512 e = _ZGVeN16v_expf(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, r + j), vmx), vinv));
			s = _mm512_add_ps(s, _mm512_maskz_mov_ps(m, e));
		}
		mx[i] = fmx;
		sum[i] = _mm512_reduce_add_ps(s);
	}
}
