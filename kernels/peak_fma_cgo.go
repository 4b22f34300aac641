//go:build cgo && !purego && amd64

package kernels

/*
#cgo CFLAGS: -O2
#include <immintrin.h>

// TROUPE_PEAK_CHAINS independent accumulators, each an FMA chain a = a*b + c:
// no chain waits on another, so the core issues FMAs as fast as its pipes
// take them. Each function is compiled for its ISA only (target attribute) and
// chosen at run time by the CPU's features.
#define TROUPE_PEAK_CHAINS 12

static __attribute__((target("avx512f"))) float troupe_peak512(long iters) {
	__m512 a0 = _mm512_set1_ps(0.0f), a1 = _mm512_set1_ps(1.0f), a2 = _mm512_set1_ps(2.0f),
	       a3 = _mm512_set1_ps(3.0f), a4 = _mm512_set1_ps(4.0f), a5 = _mm512_set1_ps(5.0f),
	       a6 = _mm512_set1_ps(6.0f), a7 = _mm512_set1_ps(7.0f), a8 = _mm512_set1_ps(8.0f),
	       a9 = _mm512_set1_ps(9.0f), a10 = _mm512_set1_ps(10.0f), a11 = _mm512_set1_ps(11.0f);
	__m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
	for (long i = 0; i < iters; i++) {
		a0 = _mm512_fmadd_ps(a0, b, c); a1 = _mm512_fmadd_ps(a1, b, c);
		a2 = _mm512_fmadd_ps(a2, b, c); a3 = _mm512_fmadd_ps(a3, b, c);
		a4 = _mm512_fmadd_ps(a4, b, c); a5 = _mm512_fmadd_ps(a5, b, c);
		a6 = _mm512_fmadd_ps(a6, b, c); a7 = _mm512_fmadd_ps(a7, b, c);
		a8 = _mm512_fmadd_ps(a8, b, c); a9 = _mm512_fmadd_ps(a9, b, c);
		a10 = _mm512_fmadd_ps(a10, b, c); a11 = _mm512_fmadd_ps(a11, b, c);
	}
	__m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
	                         _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
	s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
	return _mm512_reduce_add_ps(s);
}

static __attribute__((target("avx2,fma"))) float troupe_peak256(long iters) {
	__m256 a0 = _mm256_set1_ps(0.0f), a1 = _mm256_set1_ps(1.0f), a2 = _mm256_set1_ps(2.0f),
	       a3 = _mm256_set1_ps(3.0f), a4 = _mm256_set1_ps(4.0f), a5 = _mm256_set1_ps(5.0f),
	       a6 = _mm256_set1_ps(6.0f), a7 = _mm256_set1_ps(7.0f), a8 = _mm256_set1_ps(8.0f),
	       a9 = _mm256_set1_ps(9.0f), a10 = _mm256_set1_ps(10.0f), a11 = _mm256_set1_ps(11.0f);
	__m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
	for (long i = 0; i < iters; i++) {
		a0 = _mm256_fmadd_ps(a0, b, c); a1 = _mm256_fmadd_ps(a1, b, c);
		a2 = _mm256_fmadd_ps(a2, b, c); a3 = _mm256_fmadd_ps(a3, b, c);
		a4 = _mm256_fmadd_ps(a4, b, c); a5 = _mm256_fmadd_ps(a5, b, c);
		a6 = _mm256_fmadd_ps(a6, b, c); a7 = _mm256_fmadd_ps(a7, b, c);
		a8 = _mm256_fmadd_ps(a8, b, c); a9 = _mm256_fmadd_ps(a9, b, c);
		a10 = _mm256_fmadd_ps(a10, b, c); a11 = _mm256_fmadd_ps(a11, b, c);
	}
	__m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
	                         _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
	s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
	float t[8];
	_mm256_storeu_ps(t, s);
	return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

// troupe_peak_isa: 16 (AVX-512F), 8 (AVX2 with FMA) or 0 (neither).
static int troupe_peak_isa(void) {
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f")) return 16;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 8;
	return 0;
}

static float troupe_peak_run(int lanes, long iters) {
	return lanes == 16 ? troupe_peak512(iters) : troupe_peak256(iters);
}
*/
import "C"

func init() {
	lanes := int(C.troupe_peak_isa())
	if lanes == 0 {
		return
	}
	isa := "avx2"
	if lanes == 16 {
		isa = "avx512"
	}
	peakFMAProbe = func(iters int64) (int, string) {
		// The C function returns its accumulators' sum, so its compiler keeps the loop.
		C.troupe_peak_run(C.int(lanes), C.long(iters))
		return lanes, isa
	}
}
