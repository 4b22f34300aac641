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

// The same two in AVX2, over the first n values, n a multiple of 16 (two ymm
// of float32, one of bfloat16 a step; packus interleaves 128-bit lanes, the
// permute puts them back); the Go wrappers convert the rest.
static __attribute__((target("avx2"))) __m256i troupe_bf16_round8(__m256i b) {
	const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
	const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
	__m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs), inf);
	__m256i hi = _mm256_srli_epi32(b, 16);
	__m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(bias, _mm256_and_si256(hi, one))), 16);
	return _mm256_blendv_epi8(r, _mm256_or_si256(hi, quiet), nan);
}

static __attribute__((target("avx2"))) void troupe_bf16_encode_avx2(uint16_t *dst, const float *src, long n) {
	for (long i = 0; i < n; i += 16) {
		__m256i r0 = troupe_bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i)));
		__m256i r1 = troupe_bf16_round8(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
		__m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r0, r1), 0xD8);
		_mm256_storeu_si256((__m256i *)(dst + i), p);
	}
}

// A decode of TROUPE_BF16_STREAM values or more into a 32-byte aligned dst
// (a subscriber's weights always are) writes around the caches (streaming
// stores): the values go to a buffer far larger than them, and a plain store
// first reads each line it writes. On the 2-vCPU Zen 3 (alternating runs of
// `troupe bench --broadcast 124439808`, 2026-11-29) a bf16 version reached 4
// subscribers through shared memory in 293-309 ms against 365-417, over
// NATS in 726-778 against 816-840. The AVX-512 build (not measured here)
// keeps plain stores. stream is loop-invariant: -O3 unswitches the loop.
#define TROUPE_BF16_STREAM 16384
static __attribute__((target("avx2"))) void troupe_bf16_decode_avx2(float *dst, const uint16_t *src, long n) {
	int stream = n >= TROUPE_BF16_STREAM && ((uintptr_t)dst & 31) == 0;
	for (long i = 0; i < n; i += 16) {
		__m256i h = _mm256_loadu_si256((const __m256i *)(src + i));
		__m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
		__m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
		if (stream) {
			_mm256_stream_si256((__m256i *)(dst + i), lo);
			_mm256_stream_si256((__m256i *)(dst + i + 8), hi);
		} else {
			_mm256_storeu_si256((__m256i *)(dst + i), lo);
			_mm256_storeu_si256((__m256i *)(dst + i + 8), hi);
		}
	}
	if (stream) _mm_sfence(); // the streamed lines reach memory before the caller hands dst over
}

static int troupe_has_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2");
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

// bf16AVX2: the AVX2 conversions, where the CPU lacks AVX-512BW (a var so
// that tests run both builds where it has both).
var bf16AVX2 = !hasAVX512BW && C.troupe_has_avx2() != 0

// bf16VectorLen is how many of n values the CPU's vector build converts:
// all with AVX-512BW, a multiple of 16 with AVX2, none without either; the
// Go loops in bf16.go do the rest.
func bf16VectorLen(n int) int {
	switch {
	case bf16AVX2:
		return n &^ 15
	case hasAVX512BW:
		return n
	}
	return 0
}

// bf16EncodeVector converts the start of src into dst (bf16VectorLen values)
// and returns how many it did.
func bf16EncodeVector(dst []uint16, src []float32) int {
	n := bf16VectorLen(len(src))
	if n == 0 {
		return 0
	}
	d, s := (*C.uint16_t)(unsafe.Pointer(&dst[0])), (*C.float)(unsafe.Pointer(&src[0]))
	if bf16AVX2 {
		C.troupe_bf16_encode_avx2(d, s, C.long(n))
	} else {
		C.troupe_bf16_encode(d, s, C.long(n))
	}
	return n
}

// bf16DecodeVector is bf16EncodeVector's counterpart for DecodeBF16.
func bf16DecodeVector(dst []float32, src []byte) int {
	n := bf16VectorLen(len(dst))
	if n == 0 {
		return 0
	}
	d, s := (*C.float)(unsafe.Pointer(&dst[0])), (*C.uint16_t)(unsafe.Pointer(&src[0]))
	if bf16AVX2 {
		C.troupe_bf16_decode_avx2(d, s, C.long(n))
	} else {
		C.troupe_bf16_decode(d, s, C.long(n))
	}
	return n
}
