//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include "simd.h"
#include "k_train.h"
#include "simd_avx2.h"
#include "k_train.h"
#include "simd_avx2_end.h"
*/
import "C"

import "unsafe"

func fptr(s []float32) *C.float { return (*C.float)(unsafe.Pointer(&s[0])) }

// fptrOrNil is fptr, with a nil slice passed as NULL.
func fptrOrNil(s []float32) *C.float {
	if s == nil {
		return nil
	}
	return fptr(s)
}

// layerNormForwardVector runs rows [0,rows) of LayerNorm forward with the vector kernels;
// mean and rstd may be nil. False when the CPU has neither AVX-512 nor AVX2.
func layerNormForwardVector(out, mean, rstd, inp, w, b []float32, rows, C int, eps float32) bool {
	if !hasVec || rows == 0 || C == 0 {
		return hasVec
	}
	if vec512 {
		C.troupe_ln_fwd(fptr(out), fptrOrNil(mean), fptrOrNil(rstd), fptr(inp), fptr(w), fptr(b), C.long(rows), C.long(C), C.float(eps))
	} else {
		C.troupe_ln_fwd_avx2(fptr(out), fptrOrNil(mean), fptrOrNil(rstd), fptr(inp), fptr(w), fptr(b), C.long(rows), C.long(C), C.float(eps))
	}
	return true
}

// layerNormBackwardVector adds the input gradient of `rows` rows and, unless
// dw and db are nil, writes these rows' parameter-gradient sums to them (C
// values each). False when the CPU has neither AVX-512 nor AVX2.
func layerNormBackwardVector(dinp, dw, db, dout, inp, w, mean, rstd []float32, rows, C int) bool {
	if !hasVec || rows == 0 || C == 0 {
		return hasVec
	}
	if dw != nil {
		_, _ = dw[C-1], db[C-1]
	}
	if vec512 {
		C.troupe_ln_bwd(fptr(dinp), fptrOrNil(dw), fptrOrNil(db), fptr(dout), fptr(inp), fptr(w), fptr(mean), fptr(rstd), C.long(rows), C.long(C))
	} else {
		C.troupe_ln_bwd_avx2(fptr(dinp), fptrOrNil(dw), fptrOrNil(db), fptr(dout), fptr(inp), fptr(w), fptr(mean), fptr(rstd), C.long(rows), C.long(C))
	}
	return true
}

// layerNormBackwardParamsVector accumulates one column band's dw and db (width
// values each) over `rows` rows at stride ld.
func layerNormBackwardParamsVector(dw, db, dout, inp, mean, rstd []float32, rows, width, ld int) bool {
	if !hasVec || rows == 0 || width == 0 {
		return hasVec
	}
	if vec512 {
		C.troupe_ln_bwd_dw(fptr(dw), fptr(db), fptr(dout), fptr(inp), fptr(mean), fptr(rstd), C.long(rows), C.long(width), C.long(ld))
	} else {
		C.troupe_ln_bwd_dw_avx2(fptr(dw), fptr(db), fptr(dout), fptr(inp), fptr(mean), fptr(rstd), C.long(rows), C.long(width), C.long(ld))
	}
	return true
}

// colSumVector adds into acc (width) the column sums of `rows` rows of d at stride ld.
func colSumVector(acc, d []float32, rows, width, ld int) bool {
	if !hasVec || rows == 0 || width == 0 {
		return hasVec
	}
	if vec512 {
		C.troupe_colsum(fptr(acc), fptr(d), C.long(rows), C.long(width), C.long(ld))
	} else {
		C.troupe_colsum_avx2(fptr(acc), fptr(d), C.long(rows), C.long(width), C.long(ld))
	}
	return true
}

// dsoftmaxVector is the attention's softmax backward on one row.
func dsoftmaxVector(dp, p []float32, scale float32) bool {
	if !hasVec || len(p) == 0 {
		return hasVec
	}
	if vec512 {
		C.troupe_dsoftmax(fptr(dp), fptr(p), C.long(len(p)), C.float(scale))
	} else {
		C.troupe_dsoftmax_avx2(fptr(dp), fptr(p), C.long(len(p)), C.float(scale))
	}
	return true
}

// crossEntropyVector runs the fused cross-entropy on `rows` rows (see
// troupe_xent, mode 1): logp and an overwritten dx.
func crossEntropyVector(logp, dx, x []float32, targets []int32, g []float32, rows, V int) bool {
	return xentVector(logp, dx, x, targets, g, rows, V, 1)
}

// logProbVector writes logp (rows) for `rows` rows of V logits (troupe_xent, mode 0).
func logProbVector(logp, x []float32, targets []int32, rows, V int) bool {
	return xentVector(logp, nil, x, targets, nil, rows, V, 0)
}

// logProbBackwardVector adds g[i]*(onehot - softmax) into dx (troupe_xent, mode 2).
func logProbBackwardVector(dx, x []float32, targets []int32, g []float32, rows, V int) bool {
	return xentVector(nil, dx, x, targets, g, rows, V, 2)
}

// xentVector calls troupe_xent; nil slices are passed as NULL.
func xentVector(logp, dx, x []float32, targets []int32, g []float32, rows, V, mode int) bool {
	if !hasVec || rows == 0 || V == 0 {
		return hasVec
	}
	if vec512 {
		C.troupe_xent(fptrOrNil(logp), fptrOrNil(dx), fptr(x), (*C.int)(unsafe.Pointer(&targets[0])), fptrOrNil(g), C.long(rows), C.long(V), C.int(mode))
	} else {
		C.troupe_xent_avx2(fptrOrNil(logp), fptrOrNil(dx), fptr(x), (*C.int)(unsafe.Pointer(&targets[0])), fptrOrNil(g), C.long(rows), C.long(V), C.int(mode))
	}
	return true
}

// attentionScratch is the scratch, in floats, attentionForwardVector (bwd
// false) or attentionBackwardVector (bwd true, besides its ds) needs.
func attentionScratch(T, hs int, bwd bool) int {
	return int(C.troupe_attn_ws(C.long(T), C.long(hs), cbool(bwd)))
}

// attentionForwardVector runs one (batch, head) of AttentionForward with the
// vector kernels (see troupe_attn_fwd); ws is scratch of
// attentionScratch(T, hs, false) floats. False when the CPU has neither AVX-512 nor AVX2.
func attentionForwardVector(q, k, v []float32, ld int, out []float32, ldo int, att []float32, T, hs int, scale float32, ws []float32) bool {
	if !hasVec || T == 0 || hs == 0 {
		return hasVec
	}
	_ = ws[attentionScratch(T, hs, false)-1]
	if vec512 {
		C.troupe_attn_fwd(fptr(q), fptr(k), fptr(v), C.long(ld), fptr(out), C.long(ldo), fptr(att), C.long(T), C.long(hs), C.float(scale), fptr(ws))
	} else {
		C.troupe_attn_fwd_avx2(fptr(q), fptr(k), fptr(v), C.long(ld), fptr(out), C.long(ldo), fptr(att), C.long(T), C.long(hs), C.float(scale), fptr(ws))
	}
	return true
}

// attentionBackwardVector runs one (batch, head) of AttentionBackward with the
// vector kernels, adding into dq, dk, dv with acc, else overwriting them; ws
// is scratch of attentionScratch(T, hs, true) floats, ds of T*T.
func attentionBackwardVector(q, k, v []float32, ld int, dq, dk, dv, dout []float32, ldo int, att []float32, T, hs int, scale float32, ws, ds []float32, acc bool) bool {
	if !hasVec || T == 0 || hs == 0 {
		return hasVec
	}
	_ = ws[attentionScratch(T, hs, true)-1]
	_ = ds[T*T-1]
	if vec512 {
		C.troupe_attn_bwd(fptr(q), fptr(k), fptr(v), C.long(ld), fptr(dq), fptr(dk), fptr(dv), fptr(dout), C.long(ldo),
			fptr(att), C.long(T), C.long(hs), C.float(scale), fptr(ws), fptr(ds), cbool(acc))
	} else {
		C.troupe_attn_bwd_avx2(fptr(q), fptr(k), fptr(v), C.long(ld), fptr(dq), fptr(dk), fptr(dv), fptr(dout), C.long(ldo),
			fptr(att), C.long(T), C.long(hs), C.float(scale), fptr(ws), fptr(ds), cbool(acc))
	}
	return true
}

// sumSquaresVector returns the sum of x[i]^2 (products in float64) and true,
// or false when the CPU has neither AVX-512 nor AVX2.
func sumSquaresVector(x []float32) (float64, bool) {
	if !hasVec || len(x) == 0 {
		return 0, hasVec
	}
	if vec512 {
		return float64(C.troupe_sumsq(fptr(x), C.long(len(x)))), true
	}
	return float64(C.troupe_sumsq_avx2(fptr(x), C.long(len(x)))), true
}
