//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include "simd.h"
#include "k_infer_linear.h"
enum { TROUPE_PANEL_COLS_512 = PANEL_COLS };
#include "simd_avx2.h"
#include "k_infer_linear.h"
enum { TROUPE_PANEL_COLS_AVX2 = PANEL_COLS };
#include "simd_avx2_end.h"
#include <string.h>

// troupe_pack_panels writes panels [p0,p1) of the P-column panel-packed copy of
// w (K,OC) (PackPanels), 16 rows of w at a time across the panels, so the
// reads go down w's rows and each panel gets a contiguous 16-row run (with
// 16-column panels a Go copy per row took ~1.6x as long). Streaming stores
// measured slower.
static void troupe_pack_panels(int K, int OC, int P, int p0, int p1, const float *w, float *dst) {
	for (int k0 = 0; k0 < K; k0 += 16) {
		int k1 = K - k0 < 16 ? K : k0 + 16;
		for (int p = p0; p < p1; p++) {
			int j0 = p * P, wd = OC - j0 < P ? OC - j0 : P;
			for (int k = k0; k < k1; k++) {
				float *o = dst + ((long)p * K + k) * P;
				memcpy(o, w + (long)k * OC + j0, (size_t)wd * 4);
				if (wd < P) memset(o + wd, 0, (size_t)(P - wd) * 4);
			}
		}
	}
}
*/
import "C"

import "unsafe"

// inferSmallRows is the most rows inferSmall takes (the weights are read once
// per 8 rows; above this OpenBLAS's packed kernels win).
const inferSmallRows = 16

// inferSmallOK reports whether inferSmall runs here (AVX-512F or AVX2).
var inferSmallOK = hasVec

// inferSmall sets columns [n0,n1) of c (m,n) at row stride ldc to a (m,k) @ b
// (k,n) + bias (nil: none), or adds that to them with accIn, with the streaming
// vector kernels. It reports false (doing nothing) when the CPU has neither
// AVX-512 nor AVX2 or m is out of range.
func inferSmall(m, n0, n1, k int, a []float32, lda int, b []float32, ldb int, bias, c []float32, ldc int, accIn bool) bool {
	if !hasVec || m < 1 || m > inferSmallRows || n0 >= n1 || k < 1 {
		return false
	}
	pb, acc := inferBiasAcc(bias, accIn)
	if vec512 {
		C.troupe_infer_small(C.int(m), C.int(n0), C.int(n1), C.int(k), (*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
			(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), pb, (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc), acc)
	} else {
		C.troupe_infer_small_avx2(C.int(m), C.int(n0), C.int(n1), C.int(k), (*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
			(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), pb, (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc), acc)
	}
	return true
}

// inferBiasAcc is the few-row kernels' bias pointer (NULL for none) and acc_in flag.
func inferBiasAcc(bias []float32, accIn bool) (*C.float, C.int) {
	var pb *C.float
	if bias != nil {
		pb = (*C.float)(unsafe.Pointer(&bias[0]))
	}
	return pb, cbool(accIn)
}

// inferPanelsOK reports whether the panel kernels run here (AVX-512F or AVX2).
var inferPanelsOK = hasVec

// panelWidth is the panel width of the kernel build that runs here (PANEL_COLS
// in k_infer_linear.h: 32 columns with AVX-512, 16 with AVX2).
func panelWidth() int {
	if vec512 {
		return int(C.TROUPE_PANEL_COLS_512)
	}
	return int(C.TROUPE_PANEL_COLS_AVX2)
}

// packPanelRange writes panels [p0,p1) of PackPanels' copy of w (k,oc) into dst.
func packPanelRange(k, oc, p0, p1 int, w, dst []float32) {
	if p0 >= p1 {
		return
	}
	C.troupe_pack_panels(C.int(k), C.int(oc), C.int(panelCols), C.int(p0), C.int(p1),
		(*C.float)(unsafe.Pointer(&w[0])), (*C.float)(unsafe.Pointer(&dst[0])))
}

// panelSmall sets panels [p0,p1) of c (m,oc) at row stride ldc to a (m,k) @ W +
// bias (nil: none), or adds that with accIn, W given as its packed panels.
func panelSmall(m, p0, p1, k, oc int, a []float32, lda int, panels, bias, c []float32, ldc int, accIn bool) {
	if p0 >= p1 {
		return
	}
	pb, acc := inferBiasAcc(bias, accIn)
	if vec512 {
		C.troupe_panel_small(C.int(m), C.int(p0), C.int(p1), C.int(k), C.int(oc), (*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
			(*C.float)(unsafe.Pointer(&panels[0])), pb, (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc), acc)
	} else {
		C.troupe_panel_small_avx2(C.int(m), C.int(p0), C.int(p1), C.int(k), C.int(oc), (*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
			(*C.float)(unsafe.Pointer(&panels[0])), pb, (*C.float)(unsafe.Pointer(&c[0])), C.int(ldc), acc)
	}
}
