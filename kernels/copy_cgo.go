//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include <immintrin.h>
#include <stdint.h>

// troupe_copy_stream copies n bytes (a multiple of 128) from src to dst (32-byte
// aligned) with streaming stores: they go to memory around the caches, without
// first reading each destination line as a plain store does.
static __attribute__((target("avx2"))) void troupe_copy_stream(uint8_t *dst, const uint8_t *src, long n) {
	for (long i = 0; i < n; i += 128) {
		__m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
		__m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
		__m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
		__m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
		_mm256_stream_si256((__m256i *)(dst + i), a);
		_mm256_stream_si256((__m256i *)(dst + i + 32), b);
		_mm256_stream_si256((__m256i *)(dst + i + 64), c);
		_mm256_stream_si256((__m256i *)(dst + i + 96), d);
	}
	_mm_sfence(); // the streamed lines are in memory before the caller goes on
}
*/
import "C"

import "unsafe"

// copyStreamVector copies the part of src into dst (as long) that streaming
// stores take (from dst's first 32-byte boundary, whole 128-byte blocks) and
// returns its bounds; the caller copies the rest.
func copyStreamVector(dst, src []byte) (lo, hi int) {
	if !copyStreams() {
		return 0, 0
	}
	n := len(dst)
	lo = int(-uintptr(unsafe.Pointer(unsafe.SliceData(dst))) & 31)
	if lo >= n {
		return 0, 0
	}
	hi = lo + (n-lo)&^127
	if hi > lo {
		C.troupe_copy_stream((*C.uint8_t)(unsafe.Pointer(&dst[lo])), (*C.uint8_t)(unsafe.Pointer(&src[lo])), C.long(hi-lo))
	}
	return lo, hi
}

// copyStreams says whether CopyStreamed streams on this CPU (AVX2, as the
// other vector kernels: hasVec).
func copyStreams() bool { return hasVec }
