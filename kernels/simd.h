// The common start of the vector kernels' cgo preambles. Each kernel header
// (k_*.h) is written once, in AVX-512 intrinsics, and included twice by its
// Go file: first as it is (TG_ISA = AVX-512F), then after simd_avx2.h, which
// maps every AVX-512 intrinsic the kernels use onto a pair of AVX2 registers
// and renames the kernels (troupe_x -> troupe_x_avx2), so one source gives
// both builds; simd_avx2_end.h then takes the names back for cgo's own code.
// The Go wrappers pick the AVX-512 build where the CPU has it (vec512), else
// the AVX2 one (hasAVX2), else their pure-Go loops.
#ifndef TROUPE_SIMD_H
#define TROUPE_SIMD_H
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#define TG_ISA target("avx512f")

// TG_ROWS is the rows of the attention's register tiles (troupe_mmp_R), TG_MMW
// their columns: an (R,32) tile is 2R zmm accumulators; simd_avx2.h takes
// other sizes.
#define TG_ROWS 8
#define TG_MMW 32

// glibc's vector math library (libmvec, glibc >= 2.22): a 16-lane AVX-512
// expf, and the 8-lane AVX2 one simd_avx2.h runs twice in its place.
extern __m512 _ZGVeN16v_expf(__m512 x);
extern __m256 _ZGVdN8v_expf(__m256 x);

#define TROUPE_MASK(w) ((w) >= 16 ? (__mmask16)0xFFFF : ((w) <= 0 ? (__mmask16)0 : (__mmask16)((1u << (w)) - 1)))

static __attribute__((unused)) int troupe_has_avx512f(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f");
}

static __attribute__((unused)) int troupe_has_avx2fma(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
