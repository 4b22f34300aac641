//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include <immintrin.h>
#include <stdint.h>

#define TROUPE_BF16_MASK(w) ((w) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w)) - 1))

// float32 -> bfloat16, nearest with ties to even, NaN kept quiet: the Go
// ToBF16 sixteen lanes at a time in integer arithmetic (so denormals and
// infinities come out as in Go, unlike vcvtneps2bf16).
static __attribute__((target("avx512f"))) void troupe_bf16_encode(uint16_t *dst, const float *src, long n) {
	const __m512i abs = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
	const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
	for (long i = 0; i < n; i += 16) {
		__mmask16 m = TROUPE_BF16_MASK(n - i);
		__m512i b = _mm512_maskz_loadu_epi32(m, src + i);
		__mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, abs), inf);
		__m512i r = _mm512_add_epi32(b, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(b, 16), one)));
		r = _mm512_srli_epi32(r, 16);
		r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(b, 16), quiet);
		_mm512_mask_cvtepi32_storeu_epi16(dst + i, m, r);
	}
}

// bfloat16 (little-endian) -> float32: the 16 bits become the top half.
static __attribute__((target("avx512f,avx512bw,avx512vl"))) void troupe_bf16_decode(float *dst, const uint16_t *src, long n) {
	for (long i = 0; i < n; i += 16) {
		__mmask16 m = TROUPE_BF16_MASK(n - i);
		__m256i h = _mm256_maskz_loadu_epi16(m, src + i);
		__m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
		_mm512_mask_storeu_epi32(dst + i, m, w);
	}
}

static int troupe_has_avx512bw(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
*/
import "C"

import "unsafe"

// hasAVX512BW: the masked 16-bit loads and stores of the bf16 kernels.
var hasAVX512BW = hasAVX512 && C.troupe_has_avx512bw() != 0

func bf16EncodeVector(dst []uint16, src []float32) bool {
	if !hasAVX512BW {
		return false
	}
	if len(src) > 0 {
		C.troupe_bf16_encode((*C.uint16_t)(unsafe.Pointer(&dst[0])), (*C.float)(unsafe.Pointer(&src[0])), C.long(len(src)))
	}
	return true
}

func bf16DecodeVector(dst []float32, src []byte) bool {
	if !hasAVX512BW {
		return false
	}
	if len(dst) > 0 {
		C.troupe_bf16_decode((*C.float)(unsafe.Pointer(&dst[0])), (*C.uint16_t)(unsafe.Pointer(&src[0])), C.long(len(dst)))
	}
	return true
}
