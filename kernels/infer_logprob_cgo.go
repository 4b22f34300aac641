//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lm
#include "simd.h"
#include "k_infer_logprob.h"
#include "simd_avx2.h"
#include "k_infer_logprob.h"
#include "simd_avx2_end.h"
*/
import "C"

import "unsafe"

// inferLogProbRows runs troupe_infer_logprob on rows of x; false (nothing done)
// when the CPU has neither AVX-512 nor AVX2.
func inferLogProbRows(logp, x []float32, targets []int32, rows, V int, invT float32) bool {
	if !hasVec {
		return false
	}
	if rows == 0 {
		return true
	}
	if vec512 {
		C.troupe_infer_logprob(C.int(rows), C.int(V), (*C.float)(unsafe.Pointer(&x[0])),
			(*C.int)(unsafe.Pointer(&targets[0])), C.float(invT), (*C.float)(unsafe.Pointer(&logp[0])))
	} else {
		C.troupe_infer_logprob_avx2(C.int(rows), C.int(V), (*C.float)(unsafe.Pointer(&x[0])),
			(*C.int)(unsafe.Pointer(&targets[0])), C.float(invT), (*C.float)(unsafe.Pointer(&logp[0])))
	}
	return true
}

// inferMaxSumRows runs troupe_infer_maxsum on rows of x; false (nothing done)
// when the CPU has neither AVX-512 nor AVX2.
func inferMaxSumRows(mx, sum, x []float32, rows, w int, invT float32) bool {
	if !hasVec {
		return false
	}
	if rows == 0 {
		return true
	}
	if vec512 {
		C.troupe_infer_maxsum(C.int(rows), C.int(w), (*C.float)(unsafe.Pointer(&x[0])), C.float(invT),
			(*C.float)(unsafe.Pointer(&mx[0])), (*C.float)(unsafe.Pointer(&sum[0])))
	} else {
		C.troupe_infer_maxsum_avx2(C.int(rows), C.int(w), (*C.float)(unsafe.Pointer(&x[0])), C.float(invT),
			(*C.float)(unsafe.Pointer(&mx[0])), (*C.float)(unsafe.Pointer(&sum[0])))
	}
	return true
}
