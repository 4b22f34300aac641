//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include "simd.h"
#include "k_gemm_small.h"
#include "simd_avx2.h"
#include "k_gemm_small.h"
#include "simd_avx2_end.h"
*/
import "C"

import "unsafe"

// gemmSmallMaxRows is the most rows of C the streaming kernels take; above it
// OpenBLAS's packed kernels win.
const gemmSmallMaxRows = 16

// hasAVX512: the CPU runs the AVX-512F build of the C kernels (and the packed
// sgemm, which has no other build).
var hasAVX512 = C.troupe_has_avx512f() != 0

// hasAVX2: the CPU runs the AVX2+FMA build of the vector kernels (each k_*.h
// kernel header compiled a second time through simd_avx2.h).
var hasAVX2 = C.troupe_has_avx2fma() != 0

// hasVec gates the vector kernels: some build of them runs here; without,
// the callers keep their pure-Go loops.
var hasVec = hasAVX512 || hasAVX2

// vec512 picks the AVX-512 build where both run. Tests turn it off to check
// the AVX2 build on an AVX-512 machine (TestVectorKernelsAVX2).
var vec512 = hasAVX512

// VectorISA is the build of the C vector kernels that runs here: "avx512",
// "avx2", or "" (none: Go loops, as in the pure-Go build). Choices above the
// kernels that measured differently on the builds read it (policy's grouped
// scoring).
func VectorISA() string {
	switch {
	case vec512:
		return "avx512"
	case hasAVX2:
		return "avx2"
	}
	return ""
}

// gemmSmall computes a product with few rows (m <= gemmSmallMaxRows, A not
// transposed) with the streaming vector kernels; it reports false when the
// CPU has neither AVX-512 nor AVX2 or the shape does not qualify.
func gemmSmall(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) bool {
	if !hasVec || transA || m > gemmSmallMaxRows || m == 0 || n == 0 || k == 0 {
		return false
	}
	tb := C.int(0)
	if transB {
		tb = 1
	}
	if vec512 {
		C.troupe_gemm_small(tb, C.int(m), C.int(n), C.int(k), C.float(alpha),
			(*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
			(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), C.float(beta),
			(*C.float)(unsafe.Pointer(&cc[0])), C.int(ldc))
	} else {
		C.troupe_gemm_small_avx2(tb, C.int(m), C.int(n), C.int(k), C.float(alpha),
			(*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
			(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), C.float(beta),
			(*C.float)(unsafe.Pointer(&cc[0])), C.int(ldc))
	}
	return true
}
