//go:build cgo && !purego

package kernels

/*
#cgo LDFLAGS: -lm
#include "simd.h"
#include "k_vecmath.h"
#include "simd_avx2.h"
#include "k_vecmath.h"
#include "simd_avx2_end.h"
*/
import "C"

import "unsafe"

// geluVector runs GELU forward (dout == nil) or backward (adding into out) on
// [lo,hi) with the vector kernels; false when the CPU has neither AVX-512 nor AVX2.
func geluVector(out, x, dout []float32) bool { return geluVectorAcc(out, x, dout, true) }

// geluVectorAcc is geluVector; without acc the backward overwrites out.
func geluVectorAcc(out, x, dout []float32, acc bool) bool {
	if !hasVec || len(x) == 0 {
		return hasVec
	}
	n := C.long(len(x))
	if dout == nil {
		if vec512 {
			C.troupe_gelu_fwd((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])), n)
		} else {
			C.troupe_gelu_fwd_avx2((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])), n)
		}
	} else {
		a := C.int(0)
		if acc {
			a = 1
		}
		if vec512 {
			C.troupe_gelu_bwd((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])),
				(*C.float)(unsafe.Pointer(&dout[0])), n, a)
		} else {
			C.troupe_gelu_bwd_avx2((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])),
				(*C.float)(unsafe.Pointer(&dout[0])), n, a)
		}
	}
	return true
}

// expVector sets out[i] = e^x[i] with tg_expf (the GELU kernels' exp);
// false when the CPU has neither AVX-512 nor AVX2.
func expVector(out, x []float32) bool {
	if !hasVec || len(x) == 0 {
		return hasVec
	}
	_ = out[len(x)-1]
	if vec512 {
		C.troupe_expf_n((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])), C.long(len(x)))
	} else {
		C.troupe_expf_n_avx2((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&x[0])), C.long(len(x)))
	}
	return true
}

// softmaxVector replaces x by softmax(x) with the vector kernel; false when the
// CPU has neither AVX-512 nor AVX2.
func softmaxVector(x []float32) bool {
	if !hasVec || len(x) == 0 {
		return hasVec
	}
	if vec512 {
		C.troupe_softmax((*C.float)(unsafe.Pointer(&x[0])), C.long(len(x)))
	} else {
		C.troupe_softmax_avx2((*C.float)(unsafe.Pointer(&x[0])), C.long(len(x)))
	}
	return true
}

// adamwVector is one AdamW step over [lo,hi) with the vector kernel; ibc1 and
// ibc2 are the reciprocal bias corrections, gscale multiplies the gradients in
// place first. False when the CPU has neither AVX-512 nor AVX2.
func adamwVector(p, g, m, v []float32, lr, beta1, beta2, eps, wd, ibc1, ibc2, gscale float32) bool {
	if !hasVec || len(p) == 0 {
		return hasVec
	}
	f := func(s []float32) *C.float { return (*C.float)(unsafe.Pointer(&s[0])) }
	if vec512 {
		C.troupe_adamw(f(p), f(g), f(m), f(v), C.long(len(p)), C.float(lr), C.float(beta1), C.float(beta2),
			C.float(eps), C.float(wd), C.float(ibc1), C.float(ibc2), C.float(gscale), cbool(adamwStream && len(p) >= adamwStreamMin))
	} else {
		C.troupe_adamw_avx2(f(p), f(g), f(m), f(v), C.long(len(p)), C.float(lr), C.float(beta1), C.float(beta2),
			C.float(eps), C.float(wd), C.float(ibc1), C.float(ibc2), C.float(gscale), cbool(adamwStream && len(p) >= adamwStreamMin))
	}
	return true
}
