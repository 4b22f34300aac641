//go:build cuda

package kernels

// Gemm's products on cublasLt with the algorithm chosen by timing: a plan per
// shape (descriptors created once and kept, the candidates cublasLt's heuristic
// offers), tuned on the shape's first product and run on the fastest candidate
// from then on.
//
// cuBLAS's Sgemm runs the algorithm its heuristic picks, and on an H200 (TF32, GPT-2
// 124M at B*T = 8192, GPU events) that left the weight gradients well below the
// 310-365 TFLOP/s of the forward and input-gradient products: A^T B at
// 3072x768x8192 ran at 238 TFLOP/s (0.162 ms), 768x2304x8192 at 219 (0.132 ms)
// and 768x768x8192 at 134 (0.072 ms: 36 output tiles for 132 multiprocessors,
// where only a split over k fills the GPU). cublasLt's heuristic offers several
// algorithms for a shape (tile shapes, splits over k); timing them once per
// shape picks the one this GPU runs fastest. Measured on the H200 (same binary,
// tuning on and off): the B32 step 32.8 against 33.2 ms, while the weight
// gradients themselves stayed at 220-245 TFLOP/s (the candidates offered for
// those shapes run alike; splitting k by hand through strided batched products
// was slower still).

/*
#cgo LDFLAGS: -lcublasLt
#cgo linux CFLAGS: -I/usr/local/cuda/include
#cgo linux LDFLAGS: -L/usr/local/cuda/lib64
#include <stdint.h>
#include <stdlib.h>
#include <cublasLt.h>

#define TROUPE_PLAN_MAX 8

// troupe_plan is one product shape on cublasLt: its descriptors and the
// algorithms the heuristic offered for it, of which Go picks one (chosen).
typedef struct {
	cublasLtMatmulDesc_t op;
	cublasLtMatrixLayout_t A, B, C, D;
	cublasLtMatmulHeuristicResult_t res[TROUPE_PLAN_MAX];
	int count, chosen;
} troupe_plan;

static void troupe_plan_free(uintptr_t plan) {
	troupe_plan *p = (troupe_plan *)plan;
	if (!p) return;
	if (p->D) cublasLtMatrixLayoutDestroy(p->D);
	if (p->C) cublasLtMatrixLayoutDestroy(p->C);
	if (p->B) cublasLtMatrixLayoutDestroy(p->B);
	if (p->A) cublasLtMatrixLayoutDestroy(p->A);
	if (p->op) cublasLtMatmulDescDestroy(p->op);
	free(p);
}

// troupe_plan_new: the plan of column-major D (m,n) = alpha op(A) op(B) + beta C
// with C and D (m,n) at ldc, operands aligned to align bytes, and up to
// TROUPE_PLAN_MAX algorithms of at most wsSize bytes of workspace (*count of
// them). *plan is 0 when the status is not 0.
static int troupe_plan_new(uintptr_t h, int tf32, int ta, int tb, int m, int n, int k,
		int lda, int ldb, int ldc, uint32_t align, uint64_t wsSize, uintptr_t *plan, int *count) {
	troupe_plan *p = (troupe_plan *)calloc(1, sizeof(troupe_plan));
	cublasLtMatmulPreference_t pref = NULL;
	cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasStatus_t st;
	*plan = 0;
	*count = 0;
	if (!p) return CUBLAS_STATUS_ALLOC_FAILED;
	st = cublasLtMatmulDescCreate(&p->op, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F);
	if (st == 0) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa));
	if (st == 0) st = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb));
	if (st == 0) st = cublasLtMatrixLayoutCreate(&p->A, CUDA_R_32F, ta ? k : m, ta ? m : k, lda);
	if (st == 0) st = cublasLtMatrixLayoutCreate(&p->B, CUDA_R_32F, tb ? n : k, tb ? k : n, ldb);
	if (st == 0) st = cublasLtMatrixLayoutCreate(&p->C, CUDA_R_32F, m, n, ldc);
	if (st == 0) st = cublasLtMatrixLayoutCreate(&p->D, CUDA_R_32F, m, n, ldc);
	if (st == 0) st = cublasLtMatmulPreferenceCreate(&pref);
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsSize, sizeof(wsSize));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align, sizeof(align));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align, sizeof(align));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align, sizeof(align));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align, sizeof(align));
	if (st == 0) st = cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)h, p->op, p->A, p->B, p->C, p->D, pref,
		TROUPE_PLAN_MAX, p->res, &p->count);
	if (pref) cublasLtMatmulPreferenceDestroy(pref);
	if (st != 0) {
		troupe_plan_free((uintptr_t)p);
		return (int)st;
	}
	*plan = (uintptr_t)p;
	*count = p->count;
	return 0;
}

// troupe_plan_fits: whether candidate i is one the heuristic vouched for, in
// wsSize bytes of workspace.
static int troupe_plan_fits(uintptr_t plan, int i, uint64_t wsSize) {
	const cublasLtMatmulHeuristicResult_t *r = &((troupe_plan *)plan)->res[i];
	return r->state == CUBLAS_STATUS_SUCCESS && r->workspaceSize <= wsSize;
}

static void troupe_plan_choose(uintptr_t plan, int i) { ((troupe_plan *)plan)->chosen = i; }

// troupe_plan_run queues the plan's product on candidate i (the chosen one when
// i < 0), writing D (which may be C).
static int troupe_plan_run(uintptr_t h, uintptr_t plan, int i, float alpha, uintptr_t a, uintptr_t b, float beta,
		uintptr_t c, uintptr_t d, uintptr_t ws, uint64_t wsSize, uintptr_t stream) {
	troupe_plan *p = (troupe_plan *)plan;
	if (i < 0) i = p->chosen;
	return (int)cublasLtMatmul((cublasLtHandle_t)h, p->op, &alpha, (const void *)a, p->A, (const void *)b, p->B,
		&beta, (const void *)c, p->C, (void *)d, p->D, &p->res[i].algo, (void *)ws, wsSize, (cudaStream_t)stream);
}
*/
import "C"

import (
	"fmt"
	"math/bits"
	"unsafe"

	"gorgonia.org/cu"
)

// ltGemmMin is the fewest multiply-adds (m*n*k) a product needs to take the
// tuned cublasLt path: 2^27, about 1 us of TF32 work on an H200. Tuning costs
// a stream sync and up to 32 runs of the product once per shape, and the
// shapes of small products come and go with the batch (a decode step of GPT-2
// at batch 8 is 8x768x3072, about 2^24), so below this they stay on cuBLAS's
// first choice, where the little a better algorithm could save per product
// would not pay for a sync per new shape. The gap measured was in the training step's products,
// 768x768x8192 (about 2^32) and up.
const ltGemmMin = 1 << 27

// ltMaxPlans bounds the plan cache: past it, new shapes stay on cuBLAS
// (products whose rows vary from call to call, like a prefill over prompts of
// every length, would otherwise tune and keep a plan per length).
const ltMaxPlans = 256

// ltTuneReps is how many timed runs each candidate gets (after one warm-up).
const ltTuneReps = 3

// ltKey is what a plan depends on: the product as Gemm's caller sees it
// (row-major), whether C is read, the operands' alignment class (the smallest
// of 16 and each pointer's alignment, in bytes: cublasLt's vectorised
// algorithms need it) and the math mode.
type ltKey struct {
	transA, transB bool
	m, n, k        int
	lda, ldb, ldc  int
	beta0          bool
	align          uint8
	tf32           bool
}

// ltPlan is a tuned shape: the C plan (a troupe_plan, malloc'd) with its
// chosen algorithm, or ok false when cublasLt had none that ran.
type ltPlan struct {
	c      uintptr
	ok     bool
	chosen int     // the chosen candidate, in the heuristic's order
	cands  int     // candidates the heuristic offered
	ms     float64 // the chosen candidate's time per product when tuned (0: untimed)
}

// ltCache is the device's plans, and the count of products run on them (for
// tests).
type ltCache struct {
	plans map[ltKey]*ltPlan
	calls int
}

// ltAlign is the alignment class of the addresses: the largest power of two
// up to 16 that divides all of them.
func ltAlign(ps ...uintptr) uint8 {
	a := 16
	for _, p := range ps {
		if p != 0 {
			a = min(a, 1<<min(bits.TrailingZeros64(uint64(p)), 4))
		}
	}
	return uint8(a)
}

// ltGemm runs gemm's row-major product C (m,n) = alpha op(A) op(B) + beta C on
// the shape's tuned cublasLt plan, tuning it on the shape's first product, and
// reports whether it did: not for products under ltGemmMin, nor for shapes
// cublasLt has no working algorithm for (those stay on cuBLAS). The device is
// held.
func (d *cudaDevice) ltGemm(transA, transB bool, m, n, k int, alpha float32, a uintptr, lda int,
	b uintptr, ldb int, beta float32, c uintptr, ldc int) bool {
	if m*n*k < ltGemmMin {
		return false
	}
	key := ltKey{transA, transB, m, n, k, lda, ldb, ldc, beta == 0, ltAlign(a, b, c), d.tf32}
	p := d.ltc.plans[key]
	if p == nil {
		if len(d.ltc.plans) >= ltMaxPlans {
			return false
		}
		if d.ltc.plans == nil {
			d.ltc.plans = map[ltKey]*ltPlan{}
		}
		p = d.ltNewPlan(key, alpha, a, b, beta, c)
		d.ltc.plans[key] = p
		return p.ok // the tuning ran the product
	}
	if !p.ok {
		return false
	}
	if st := d.ltRun(p.c, -1, alpha, a, b, beta, c, c); st != 0 {
		panic(fmt.Errorf("%w: %v", ErrCUDA, cublasStatusError{"cublasLtMatmul (tuned)", st}))
	}
	d.ltc.calls++
	return true
}

// ltRun queues plan's product on candidate i (the chosen one when i < 0) with
// Gemm's row-major operands: column-major, as cuBLAS reads them, D' = alpha
// op(B') op(A') + beta C', the operands swapped (see Gemm). It returns the
// cuBLAS status.
func (d *cudaDevice) ltRun(plan uintptr, i int, alpha float32, a, b uintptr, beta float32, c, dst uintptr) int {
	return int(C.troupe_plan_run(C.uintptr_t(d.lt), C.uintptr_t(plan), C.int(i), C.float(alpha),
		C.uintptr_t(b), C.uintptr_t(a), C.float(beta), C.uintptr_t(c), C.uintptr_t(dst),
		C.uintptr_t(d.ltWS.Ptr), C.uint64_t(ltWorkspace), C.uintptr_t(*(*uintptr)(unsafe.Pointer(&d.stream)))))
}

// ltNewPlan makes key's plan and picks its algorithm: each candidate the
// heuristic offers (up to 8, those within ltWorkspace) runs once to warm up and
// ltTuneReps times between two events, writing a scratch D (C, read only, is
// the real one: products that accumulate into C time as they run, and C is
// untouched); the fastest is chosen and runs the real product. Candidates that
// fail to run are skipped; with none left, or no plan, the plan is marked
// unusable. All candidates are queued before the one sync that reads their
// times, so the GPU does not idle between them. When the scratch cannot be
// allocated the heuristic's first choice is taken untimed.
func (d *cudaDevice) ltNewPlan(key ltKey, alpha float32, a, b uintptr, beta float32, c uintptr) *ltPlan {
	p := &ltPlan{}
	var plan C.uintptr_t
	var count C.int
	// column-major: C' (n,m) = op(B') (n,k) op(A') (k,m), B' being B's storage
	st := C.troupe_plan_new(C.uintptr_t(d.lt), C.int(b2i(key.tf32)), C.int(b2i(key.transB)), C.int(b2i(key.transA)),
		C.int(key.n), C.int(key.m), C.int(key.k), C.int(key.ldb), C.int(key.lda), C.int(key.ldc),
		C.uint32_t(key.align), C.uint64_t(ltWorkspace), &plan, &count)
	if st != 0 || count == 0 {
		C.troupe_plan_free(plan)
		return p
	}
	p.c = uintptr(plan)
	var cands []int
	for i := 0; i < int(count); i++ {
		if C.troupe_plan_fits(plan, C.int(i), C.uint64_t(ltWorkspace)) != 0 {
			cands = append(cands, i)
		}
	}
	best := -1
	if len(cands) > 0 {
		best, p.ms = d.ltTime(p.c, cands, key, alpha, a, b, beta, c)
	}
	if best < 0 || d.ltRun(p.c, best, alpha, a, b, beta, c, c) != 0 {
		C.troupe_plan_free(plan)
		p.c = 0
		return p
	}
	C.troupe_plan_choose(plan, C.int(best))
	p.ok, p.chosen, p.cands = true, best, int(count)
	d.ltc.calls++
	return p
}

// ltTime times the candidates cands of plan (see ltNewPlan) and returns the
// fastest with its time per product in ms, or -1 when none ran; the first
// candidate untimed when there is no memory for the scratch D. The scratch is
// allocated for the tuning and freed after it: kept, it would hold the largest
// product's C for good (1.6 GB for GPT-2's unpadded logits at B*T = 8192).
func (d *cudaDevice) ltTime(plan uintptr, cands []int, key ltKey, alpha float32, a, b uintptr, beta float32, c uintptr) (int, float64) {
	n := gemmStored(key.m, key.n, key.ldc)
	scratch, err := cu.MemAlloc(int64(n) * 4)
	if err != nil {
		return cands[0], 0
	}
	defer d.freeRaw(Tensor{Ptr: uintptr(scratch), N: n})
	type timed struct {
		i          int
		start, end cu.Event
		ok         bool
	}
	var runs []timed
	defer func() {
		for _, r := range runs {
			cu.DestroyEvent(&r.start)
			cu.DestroyEvent(&r.end)
		}
	}()
	for _, i := range cands {
		r := timed{i: i, ok: true}
		r.start, err = cu.MakeEvent(cu.DefaultEvent)
		d.check(err, "creating an event")
		r.end, err = cu.MakeEvent(cu.DefaultEvent)
		d.check(err, "creating an event")
		runs = append(runs, r)
		if d.ltRun(plan, i, alpha, a, b, beta, c, uintptr(scratch)) != 0 {
			runs[len(runs)-1].ok = false
			continue
		}
		d.check(r.start.Record(d.stream), "recording an event")
		for rep := 0; rep < ltTuneReps; rep++ {
			if d.ltRun(plan, i, alpha, a, b, beta, c, uintptr(scratch)) != 0 {
				runs[len(runs)-1].ok = false
			}
		}
		d.check(r.end.Record(d.stream), "recording an event")
	}
	d.check(d.stream.Synchronize(), "synchronizing after tuning")
	best, bestMs := -1, 0.0
	for _, r := range runs {
		if !r.ok {
			continue
		}
		ms, err := r.start.Elapsed(r.end)
		d.check(err, "reading an event")
		if best < 0 || ms < bestMs {
			best, bestMs = r.i, ms
		}
	}
	return best, bestMs / ltTuneReps
}
