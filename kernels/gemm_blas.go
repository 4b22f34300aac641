//go:build cgo && !purego

package kernels

/*
#cgo LDFLAGS: -lopenblas
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

// Present only in DYNAMIC_ARCH builds of OpenBLAS (Debian's are); weak so that
// other builds still link.
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));

// troupe_blas_fix_core re-selects OpenBLAS's kernels when its CPU detection fell
// back to a pre-AVX core on a CPU it does not know (Debian's 0.3.21 takes this
// machine's Xeon, family 6 model 207, for a "Prescott" and runs SSE3 kernels at
// ~15 GFLOP/s instead of ~95). It sets OPENBLAS_CORETYPE as a user would (never
// overriding one the user set) and reruns OpenBLAS's own dynamic selection.
// Returns the core name in use afterwards.
static const char *troupe_blas_fix_core(void) {
	const char *core = openblas_get_corename();
	if (getenv("OPENBLAS_CORETYPE") != NULL || !gotoblas_dynamic_init || !gotoblas_dynamic_quit) {
		return core;
	}
	if (strcmp(core, "Prescott") != 0 && strcmp(core, "Core2") != 0 && strcmp(core, "Nehalem") != 0 &&
		strcmp(core, "Penryn") != 0 && strcmp(core, "Dunnington") != 0) {
		return core;
	}
	__builtin_cpu_init();
	const char *want = NULL;
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
		want = "SkylakeX";
	} else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		want = "Haswell";
	}
	if (want == NULL) {
		return core;
	}
	setenv("OPENBLAS_CORETYPE", want, 0);
	gotoblas_dynamic_quit();
	gotoblas_dynamic_init();
	unsetenv("OPENBLAS_CORETYPE");
	return openblas_get_corename();
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// blasCore is the OpenBLAS kernel set in use, e.g. "SkylakeX".
var blasCore string

// The CPU device splits every product over goroutines itself (see Gemm), so
// OpenBLAS runs single-threaded: its pool would otherwise multiply the threads and
// spin on the two cores between calls.
func init() {
	blasCore = C.GoString(C.troupe_blas_fix_core())
	C.openblas_set_num_threads(1)
}

// gemmBackend names the matrix-product implementation in benchmark output.
const gemmBackend = "openblas"

// gemmBackendDetail describes the backend for logs and benchmark headers,
// e.g. "openblas SkylakeX + avx512 packed sgemm" (the second part where the
// packed sgemm of gemm_avx512_cgo.go takes the large products, in its
// AVX-512 or its AVX2 build). The word after "openblas " is the OpenBLAS
// kernel set (cmd/troupe's bench hands it to PyTorch's OpenBLAS as
// OPENBLAS_CORETYPE).
func gemmBackendDetail() string {
	switch {
	case gemmPackedOK && vec512:
		return "openblas " + blasCore + " + avx512 packed sgemm"
	case gemmPackedOK:
		return "openblas " + blasCore + " + avx2 packed sgemm"
	}
	return "openblas " + blasCore
}

// gemmSerial is one single-threaded product: the streaming kernels for a few
// rows, the packed AVX-512 sgemm where gemmPackedWins, else cblas_sgemm. The
// slices start at element (0,0) of each matrix and are long enough (checked by
// checkGemm / the callers).
func gemmSerial(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		gemmScaleC(m, n, beta, cc, ldc)
		return
	}
	if gemmSmall(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc) {
		return
	}
	if gemmPackedWins(transA, transB, m, n, k) && gemmPacked(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc) {
		return
	}
	gemmOpenBLAS(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
}

// gemmOpenBLAS is one single-threaded cblas_sgemm call (m, n, k > 0).
func gemmOpenBLAS(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) {
	var ta, tb C.enum_CBLAS_TRANSPOSE = C.CblasNoTrans, C.CblasNoTrans
	if transA {
		ta = C.CblasTrans
	}
	if transB {
		tb = C.CblasTrans
	}
	C.cblas_sgemm(C.CblasRowMajor, ta, tb,
		C.blasint(m), C.blasint(n), C.blasint(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(&cc[0])), C.blasint(ldc))
}

// GemmOpenBLAS is one product C (m,n) = A (m,k) @ B (k,n), row-major, none
// transposed, on OpenBLAS alone with its own pool of threads threads: the
// machine's BLAS, which the PyTorch reference runs its products on, timed
// beside troupe's own (cmd/troupe's bench). It sets OpenBLAS's thread count
// for the call and back to 1 after, so it must not run beside other products.
// ErrNoOpenBLAS where troupe is built without OpenBLAS.
func GemmOpenBLAS(threads, m, n, k int, a, b, c []float32) error {
	if threads < 1 || m < 1 || n < 1 || k < 1 {
		return fmt.Errorf("GemmOpenBLAS: threads %d and the sizes m %d, n %d, k %d must be >= 1", threads, m, n, k)
	}
	checkGemmSizes(false, false, m, n, k, len(a), k, len(b), n, len(c), n)
	setBLASThreads(threads)
	defer setBLASThreads(1)
	gemmOpenBLAS(false, false, m, n, k, 1, a, k, b, n, 0, c, n)
	return nil
}

// setBLASThreads sets OpenBLAS's own thread count (benchmarks compare its pool
// against the goroutine split).
func setBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }
