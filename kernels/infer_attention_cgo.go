//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lm
#include "simd.h"
#include "k_infer_attention.h"
#include "simd_avx2.h"
#include "k_infer_attention.h"
#include "simd_avx2_end.h"
*/
import "C"

import "unsafe"

// inferAttend runs the cached attention of tasks [lo,hi) (task = row*NH + head)
// in one C call; scores is scratch of maxT floats. False (nothing done) when the
// CPU has neither AVX-512 nor AVX2.
func inferAttend(lo, hi, NH, hs, C_, maxT int, qkv, kc, vc []float32, slot, pos []int32, out, scores []float32, scale float32) bool {
	if !hasVec {
		return false
	}
	if lo >= hi {
		return true
	}
	f := func(s []float32) *C.float { return (*C.float)(unsafe.Pointer(&s[0])) }
	if vec512 {
		C.troupe_infer_attend(C.int(lo), C.int(hi), C.int(NH), C.int(hs), C.int(C_), C.int(maxT), f(qkv), f(kc), f(vc),
			(*C.int)(unsafe.Pointer(&slot[0])), (*C.int)(unsafe.Pointer(&pos[0])), f(out), f(scores), C.float(scale))
	} else {
		C.troupe_infer_attend_avx2(C.int(lo), C.int(hi), C.int(NH), C.int(hs), C.int(C_), C.int(maxT), f(qkv), f(kc), f(vc),
			(*C.int)(unsafe.Pointer(&slot[0])), (*C.int)(unsafe.Pointer(&pos[0])), f(out), f(scores), C.float(scale))
	}
	return true
}
