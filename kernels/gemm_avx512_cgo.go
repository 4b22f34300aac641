//go:build cgo && !purego

package kernels

/*
#cgo CFLAGS: -O3
#include "simd.h"
#include <sched.h>
#include <unistd.h>
#include "k_gemm.h"
enum { TG_MR_512 = TG_MR, TG_DIRECT_N_512 = TG_DIRECT_N, TG_DIRECT_T_512 = TG_DIRECT_T };
#include "simd_avx2.h"
#include "k_gemm.h"
enum { TG_MR_AVX2 = TG_MR, TG_DIRECT_N_AVX2 = TG_DIRECT_N, TG_DIRECT_T_AVX2 = TG_DIRECT_T };
#include "simd_avx2_end.h"
*/
import "C"

import (
	"math/bits"
	"sync"
	"unsafe"
)

// gemmPackedOK reports whether gemmPacked runs here: the CPU has AVX-512F
// (MR x 32 tiles, MR = 12) or AVX2 (6 x 16 tiles; simd_avx2.h).
var gemmPackedOK = hasVec

// setGemmDirectWide turns tg_direct's in-place reading of A at N >
// TG_DIRECT_N on or off (benchmarks compare; not while a product runs).
func setGemmDirectWide(on bool) {
	C.troupe_set_direct_wide(cbool(on))
	C.troupe_set_direct_wide_avx2(cbool(on))
}

// setGemmDirectT turns tg_direct's in-place reading of a transposed A at N <=
// TG_DIRECT_N on or off (benchmarks compare; not while a product runs).
func setGemmDirectT(on bool) {
	C.troupe_set_direct_t(cbool(on))
	C.troupe_set_direct_t_avx2(cbool(on))
}

// setPackKB sets how many depths of a transposed A pack_a copies into each
// panel before the next panel (tg_pack_kb; 1: depth by depth across all
// panels, the order before TG_PACK_KB); benchmarks compare, not while a
// product runs.
func setPackKB(k int) {
	C.troupe_set_pack_kb(C.int(k))
	C.troupe_set_pack_kb_avx2(C.int(k))
}

// packKB is TG_PACK_KB, the default of setPackKB.
const packKB = C.TG_PACK_KB

// resetGemmDirectT puts each build's TG_DIRECT_T back (the AVX-512 build
// reads a transposed A in place, the AVX2 one packs it).
func resetGemmDirectT() {
	C.troupe_set_direct_t(C.TG_DIRECT_T_512)
	C.troupe_set_direct_t_avx2(C.TG_DIRECT_T_AVX2)
}

// kcWhole is the depth up to which a product runs as one depth block
// (troupe_kc_init: 768 with a 48 KB L1d, else 512; the same in both builds).
var kcWhole = kcInit()

func kcInit() int {
	C.troupe_kc_init_avx2()
	return int(C.troupe_kc_init())
}

// setKCWhole sets that depth (benchmarks compare; not while a product runs).
func setKCWhole(k int) {
	C.troupe_set_kc_whole(C.int(k))
	C.troupe_set_kc_whole_avx2(C.int(k))
}

// gemmDirectN is the widest product the packed kernel runs with A read in
// place (not packed); gemmPackedMR is the micro-kernel's rows (row bands of
// a product split over threads are best made of whole MR-row tiles), and
// gemmSharedRows the height of a shared product's chunks (4 register tiles:
// small enough that the last chunks even out two threads, large enough that a
// chunk's A panel is packed once per depth block for 4 tiles). All three are
// the build's that runs (setVec512).
var gemmDirectN, gemmPackedMR, gemmSharedRows int

func init() { setVec512(vec512) }

// setVec512 picks the AVX-512 build of the C kernels (on) or the AVX2 one;
// tests flip it on an AVX-512 machine, not while a kernel runs.
func setVec512(on bool) {
	vec512 = on
	gemmDirectN, gemmPackedMR = int(C.TG_DIRECT_N_AVX2), int(C.TG_MR_AVX2)
	if on {
		gemmDirectN, gemmPackedMR = int(C.TG_DIRECT_N_512), int(C.TG_MR_512)
	}
	gemmSharedRows = 4 * gemmPackedMR
	panelCols = panelWidth()
}

// gemmPackedWS pools the packing workspaces (a few MB each: the packed A of a
// band and one L2 block of packed B; a shared product's whole packed A and
// B) by size class (packedClass). With one pool for all sizes, a product
// that drew a buffer too small for it dropped it and made a new one: GPT-2's
// training step, whose products need workspaces of several sizes, allocated
// ~25 MB of fresh workspace a step, every page of it faulted in anew (~4,000
// page faults a step). The lists keep at most gemmPackedHeld floats; a
// buffer past that is left to the garbage collector, so a process that runs
// products of many shapes (scoring sequences of every length) holds a
// bounded amount.
var gemmPackedWS struct {
	sync.Mutex
	free [packedClasses][]*[]float32
	held int // floats on the free lists
}

// gemmPackedHeld is the most the workspace free lists keep, in floats (256
// MB): a gpt2 training step's products use well under half of it. A
// variable so that a test can lower it.
var gemmPackedHeld = 1 << 26

// packedClasses bounds packedClass's index.
const packedClasses = 8 * 64

// packedClass is the size class of a workspace of n floats: its index and
// the floats its buffers hold (n rounded up to its top 3 bits, so at most
// 25% over n).
func packedClass(n int) (idx, size int) {
	if n <= 64 {
		return 8, 64
	}
	sh := bits.Len(uint(n-1)) - 3
	q := (n-1)>>sh + 1 // 5..8
	return sh*8 + q, q << sh
}

// gemmPacked computes C (m,n) = alpha*op(A) @ op(B) + beta*C (row-major, strides as
// Gemm; the slices start at element (0,0) and are long enough) single-threaded
// with the packed AVX-512 kernel. It reports false, doing nothing, when the CPU
// lacks AVX-512 or a dimension is 0.
func gemmPacked(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) bool {
	return gemmPackedEpi(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc, nil)
}

// gemmPackedEx is gemmPacked with an epilogue fused into the store of each
// register tile: C = alpha*op(A) @ op(B) + beta*C + bias (n values; nil: none),
// then C = gelu(C) with gelu, so neither makes a pass over C of its own.
func gemmPackedEx(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int, bias []float32, gelu bool) bool {
	return gemmPackedEpi(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc, biasGelu(bias, gelu))
}

// gemmPackedEpi is gemmPacked with the epilogue e (nil: none) fused into the
// store of each register tile (see gemmEpilogue).
func gemmPackedEpi(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int, e *gemmEpilogue) bool {
	if !gemmPackedOK || m <= 0 || n <= 0 || k <= 0 {
		return false
	}
	ce := cEpilogue(e, m, n)
	wsz := C.troupe_sgemm_ws_avx2(C.int(m), C.int(n), C.int(k))
	if vec512 {
		wsz = C.troupe_sgemm_ws(C.int(m), C.int(n), C.int(k))
	}
	wp := gemmPackedBuf(int(wsz) + 16)
	ws := *wp
	pa, pb, pc, pw := (*C.float)(unsafe.Pointer(&a[0])), (*C.float)(unsafe.Pointer(&b[0])),
		(*C.float)(unsafe.Pointer(&cc[0])), (*C.float)(unsafe.Pointer(&ws[gemmAlign(ws)]))
	if vec512 {
		C.troupe_sgemm_epi(cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha), pa, C.long(lda),
			pb, C.long(ldb), C.float(beta), pc, C.long(ldc), pw, ce.has, ce.bias, ce.res, ce.ldr, ce.dgx, ce.ldx, ce.gout, ce.ldg, ce.gelu)
	} else {
		C.troupe_sgemm_epi_avx2(cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha), pa, C.long(lda),
			pb, C.long(ldb), C.float(beta), pc, C.long(ldc), pw, ce.has, ce.bias, ce.res, ce.ldr, ce.dgx, ce.ldx, ce.gout, ce.ldg, ce.gelu)
	}
	gemmPackedPut(wp)
	return true
}

// cEpi is a gemmEpilogue as the C functions take it (Go may not pass C a
// pointer to Go memory holding Go pointers, so its fields go one by one).
type cEpi struct {
	has, gelu            C.int
	bias, res, dgx, gout *C.float
	ldr, ldx, ldg        C.long
}

// cEpilogue is e (nil: none) for a product of m x n, each matrix checked to
// hold its values.
func cEpilogue(e *gemmEpilogue, m, n int) cEpi {
	var ce cEpi
	if e == nil {
		return ce
	}
	ce.has, ce.gelu = 1, cbool(e.gelu)
	if e.bias != nil {
		_ = e.bias[n-1]
		ce.bias = (*C.float)(unsafe.Pointer(&e.bias[0]))
	}
	if e.res != nil {
		_ = e.res[gemmStored(m, n, e.ldr)-1]
		ce.res, ce.ldr = (*C.float)(unsafe.Pointer(&e.res[0])), C.long(e.ldr)
	}
	if e.dgx != nil {
		_ = e.dgx[gemmStored(m, n, e.ldx)-1]
		ce.dgx, ce.ldx = (*C.float)(unsafe.Pointer(&e.dgx[0])), C.long(e.ldx)
	}
	if e.gout != nil {
		_ = e.gout[gemmStored(m, n, e.ldg)-1]
		ce.gout, ce.ldg = (*C.float)(unsafe.Pointer(&e.gout[0])), C.long(e.ldg)
	}
	return ce
}

// gemmSharedMaxB caps a shared product's packed B (floats, 32 MB): a product
// whose B is larger (GPT-2's LM head, 768 x 50257) keeps one band per thread,
// packing B an L2 block at a time.
const gemmSharedMaxB = 1 << 23

// useShared lets Gemm and the training epilogues share products between threads
// (gemmShared); benchmarks turn it off to compare with one band per thread.
var useShared = true

// gemmShared computes what gemmPackedEpi does on all of c's threads, each
// taking chunks of C as it comes free (troupe_sgemm_shared) instead of one
// fixed band. The caller has judged that the packed kernel should take the
// product (gemmPackedWins on the band each thread would otherwise get, so a
// product keeps the kernel, and the bits, it had in bands; or
// gemmSharedDeep). With colSums (nil: none) it also adds op(B)'s column sums
// into colSums (see gemmSharedRun). It reports false, doing nothing, where it
// does not apply: one thread, no AVX-512, fewer chunks than threads, or a
// packed A and B over gemmSharedMaxB.
// BenchmarkGemmShared (2 threads, same process, alternating, best and median
// of 30): the small and gpt2 steps' products 0-18% faster shared than in
// bands. BenchmarkTrainShared (the small step, 30 alternating steps each,
// twice): mean 5-7% and median 4-10% faster shared, best step 1-2%.
func (c *CPU) gemmShared(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int, e *gemmEpilogue, colSums []float32) bool {
	if !useShared || c.threads < 2 || !gemmPackedOK || m <= 0 || n <= 0 || k <= 0 {
		return false
	}
	p := sharedPlan(transA, m, n, k, lda)
	if int(p.chunks) < c.threads {
		return false
	}
	return c.gemmSharedRun(p, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc, e, colSums)
}

// foldBiasGrad lets weightBiasGrad take a bias gradient's column sums in the
// weight gradient's product; benchmarks turn it off to compare.
var foldBiasGrad = true

// weightBiasGrad implements weightBiasGrader: dweight (C,OC) += inp^T @ dout
// (Gemm's product, bit for bit) and dbias (OC) += the column sums of dout
// (N,OC), taken while the shared product packs dout (gemmSharedRun's
// colSums) instead of in a pass of their own (BiasBackward); false, doing
// nothing, where Gemm would not share the product.
func (c *CPU) weightBiasGrad(dweight, dbias, dout, inp Tensor, N, C, OC int) bool {
	if !foldBiasGrad || N <= 0 || C <= 0 || OC <= 0 {
		return false
	}
	if _, _, share := c.gemmSplit(true, false, C, OC, N); !share {
		return false
	}
	need(dbias, OC, "weightBiasGrad dbias")
	return c.gemmShared(true, false, C, OC, N, 1, inp.F, C, dout.F, OC, 1, dweight.F, OC, nil, dbias.F[:OC])
}

// sharedPlan is the blocking of a shared product (troupe_shared_plan).
func sharedPlan(transA bool, m, n, k, lda int) C.tg_plan {
	if vec512 {
		return C.troupe_shared_plan(cbool(transA), C.int(m), C.int(n), C.int(k), C.long(lda), C.int(gemmSharedRows))
	}
	return C.troupe_shared_plan_avx2(cbool(transA), C.int(m), C.int(n), C.int(k), C.long(lda), C.int(gemmSharedRows))
}

// gemmSharedRun is gemmShared, planned as p (sharedPlan), without its
// judgement of the shape: it reports false, doing nothing, only without
// AVX-512, with a dimension 0 or with a packed A and B over gemmSharedMaxB.
// c's threads each run one part; a part that starts late (or never, with
// fewer cores) finds the chunks taken, and one thread alone computes them all
// in order.
//
// With colSums (n floats; B not transposed), the column sums of op(B) are
// added into colSums as well (a bias gradient when B is a layer's output
// gradient): packing sums each depth block's columns as it loads them
// (troupe_pack_b's cs), and the blocks' sums are added here in depth order,
// so the result does not depend on which thread packed what.
func (c *CPU) gemmSharedRun(p C.tg_plan, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int, e *gemmEpilogue, colSums []float32) bool {
	bsize, asize := int(p.bsize), int(p.asize)
	if !gemmPackedOK || m <= 0 || n <= 0 || k <= 0 || bsize+asize > gemmSharedMaxB || (colSums != nil && transB) {
		return false
	}
	var bsum *C.float
	var sp *[]float32
	nkb, np := int(p.nkb), int(p.np)
	if colSums != nil {
		_ = colSums[n-1]
		sp = gemmPackedBuf(nkb * np)
		bsum = (*C.float)(unsafe.Pointer(&(*sp)[0]))
	}
	checkGemmSizes(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(cc), ldc)
	ce := cEpilogue(e, m, n)
	stp := sharedState(int(p.state))
	st := *stp
	wp := gemmPackedBuf(bsize + asize + 32)
	ws := *wp
	bp := ws[gemmAlign(ws):]
	ap := bp[(bsize+15)/16*16:]
	pa, pb, pc := (*C.float)(unsafe.Pointer(&a[0])), (*C.float)(unsafe.Pointer(&b[0])), (*C.float)(unsafe.Pointer(&cc[0]))
	pbp, pap, pst := (*C.float)(unsafe.Pointer(&bp[0])), (*C.float)(unsafe.Pointer(&ap[0])), (*C.longlong)(unsafe.Pointer(&st[0]))
	c.parallelFor(c.threads, 1<<30, func(lo, hi int) {
		for part := lo; part < hi; part++ { // even parts from the front of each depth block, odd from the back
			if vec512 {
				C.troupe_sgemm_shared_epi(p, cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha), pa, C.long(lda),
					pb, C.long(ldb), C.float(beta), pc, C.long(ldc), pbp, pap, pst, C.int(part%2),
					ce.has, ce.bias, ce.res, ce.ldr, ce.dgx, ce.ldx, ce.gout, ce.ldg, ce.gelu, bsum)
			} else {
				C.troupe_sgemm_shared_epi_avx2(p, cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha), pa, C.long(lda),
					pb, C.long(ldb), C.float(beta), pc, C.long(ldc), pbp, pap, pst, C.int(part%2),
					ce.has, ce.bias, ce.res, ce.ldr, ce.dgx, ce.ldx, ce.gout, ce.ldg, ce.gelu, bsum)
			}
		}
	})
	if sp != nil {
		sums := *sp
		for j := range colSums[:n] {
			s := sums[j]
			for kb := 1; kb < nkb; kb++ {
				s += sums[kb*np+j]
			}
			colSums[j] += s
		}
		gemmPackedPut(sp)
	}
	gemmPackedPut(wp)
	sharedStates.Put(stp)
	return true
}

// sharedStates keeps shared products' counters between calls (a training
// step runs dozens of products).
var sharedStates sync.Pool

// sharedState is n zeroed counters from sharedStates (or new ones).
func sharedState(n int) *[]int64 {
	p, ok := sharedStates.Get().(*[]int64)
	if !ok || cap(*p) < n {
		s := make([]int64, n)
		return &s
	}
	*p = (*p)[:n]
	clear(*p)
	return p
}

// gemmPackedBuf takes a buffer of at least n floats from n's size class in
// gemmPackedWS, or makes one; gemmPackedPut gives it back.
func gemmPackedBuf(n int) *[]float32 {
	idx, size := packedClass(n)
	ws := &gemmPackedWS
	ws.Lock()
	if l := ws.free[idx]; len(l) > 0 {
		p := l[len(l)-1]
		ws.free[idx] = l[:len(l)-1]
		ws.held -= len(*p)
		ws.Unlock()
		return p
	}
	ws.Unlock()
	s := hostFloats(size) // 2 MB aligned (64 bytes are needed) and on huge pages from 2 MB
	return &s
}

// gemmPackedPut returns a buffer of gemmPackedBuf to its class, unless the
// lists hold gemmPackedHeld floats with it.
func gemmPackedPut(p *[]float32) {
	idx, _ := packedClass(len(*p))
	ws := &gemmPackedWS
	ws.Lock()
	defer ws.Unlock()
	if ws.held+len(*p) > gemmPackedHeld {
		return
	}
	ws.free[idx] = append(ws.free[idx], p)
	ws.held += len(*p)
}

// gemmAlign is the offset (in floats, < 16) of buf's first 64-byte aligned element.
func gemmAlign(buf []float32) int {
	return (64 - int(uintptr(unsafe.Pointer(&buf[0]))%64)) % 64 / 4
}

// cbool is v as a C int flag.
func cbool(v bool) C.int {
	if v {
		return 1
	}
	return 0
}

// gemmPackedMinWork is the flop count from which gemmSerial takes the packed
// kernel over OpenBLAS. BenchmarkGemmPacked (same process, alternating, best
// of 15) had it at 0.9-1.15x OpenBLAS, about +2% typical, at the model's
// products (all transposes), 1.0-1.2x at (128 x 64 x 256) and (128 x 256 x 64),
// but 0.7x at (64 x 64 x 128), where packing is a larger share.
const gemmPackedMinWork = 1 << 22

// gemmPackedWins reports whether gemmSerial should give this product to the
// packed kernel. Deep, narrow products with A transposed (k >= 1024, n <= 384:
// weight gradients' bands) stay on OpenBLAS: there A must be packed and the
// kernel measured 0.88-1.1x, below 1 more often than not.
//
// The AVX2 build's 6 x 16 kernel alone ran at 0.92-0.98x OpenBLAS on one
// thread (BenchmarkGemmPacked, Zen 3, gpt2's and small's shapes); it pays
// where products are shared or carry an epilogue. The LM head's products,
// whose A or B is too large to share (over gemmSharedMaxB), ran slower in
// it: a gpt2 step took 8.4 s with them packed, 6.5 s on OpenBLAS. So
// there, AVX2 leaves them to OpenBLAS; a rule of the shape alone, so that a
// product gets the same kernel (and bits) whichever path runs it.
func gemmPackedWins(transA, transB bool, m, n, k int) bool {
	if !gemmPackedOK || m < 32 || n < 32 || k < 32 || 2*m*n*k < gemmPackedMinWork {
		return false
	}
	if !vec512 && (m*k > gemmSharedMaxB || n*k > gemmSharedMaxB) {
		return false
	}
	return !transA || k < 1024 || n > 384
}

// gemmSharedDeep reports whether a product that gemmPackedWins leaves to
// OpenBLAS in bands (A transposed, k >= 1024, n <= 384) is shared on the
// packed kernel all the same: from n = 256, where A's packing is shared too
// and the chunks even out a slowed thread. config small's attention-output
// and MLP-input (first layer) weight gradients (384 x 2048 x 384 and 1536 x
// 2048 x 384, TN), same process, alternating, 200 each, four runs: median +5-16% and
// +14-26%, best -5% to +28% against OpenBLAS bands. At tiny's n = 128 it was
// level (128, 384 and 512 x 2048 x 128: median -3% to +1%), so those stay.
func gemmSharedDeep(transA bool, m, n, k int) bool {
	return shareDeep && gemmPackedOK && transA && k >= 1024 && n >= 256 && n <= 384 && m >= 256
}

// shareDeep lets benchmarks compare gemmSharedDeep's products shared and in
// OpenBLAS bands (BenchmarkTrainSharedDeep).
var shareDeep = true
