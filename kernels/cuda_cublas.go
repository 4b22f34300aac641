//go:build cuda

package kernels

// The three cuBLAS calls that gorgonia.org/cu/blas does not wrap: the math mode
// (TF32 tensor cores for FP32 products), the stream, and the strided batched
// product that attention uses. Pointers cross as integers: they are device
// addresses or a cuBLAS handle, never Go memory.

/*
#cgo LDFLAGS: -lcublas -lcublasLt -lcuda
#cgo linux CFLAGS: -I/usr/local/cuda/include
#cgo linux LDFLAGS: -L/usr/local/cuda/lib64
#include <stdint.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <cuda.h>

static int troupe_cublas_tf32(uintptr_t h, int on) {
	return (int)cublasSetMathMode((cublasHandle_t)h, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
}

static int troupe_cublas_stream(uintptr_t h, uintptr_t s) {
	return (int)cublasSetStream((cublasHandle_t)h, (cudaStream_t)s);
}

static int troupe_cublas_sgemm_strided_batched(uintptr_t h, int ta, int tb, int m, int n, int k, float alpha,
		uintptr_t a, int lda, long long sa, uintptr_t b, int ldb, long long sb, float beta,
		uintptr_t c, int ldc, long long sc, int count) {
	return (int)cublasSgemmStridedBatched((cublasHandle_t)h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
		m, n, k, &alpha, (const float *)a, lda, sa, (const float *)b, ldb, sb, &beta, (float *)c, ldc, sc, count);
}

static int troupe_cublas_sgemm_batched(uintptr_t h, int ta, int tb, int m, int n, int k, float alpha,
		uintptr_t a, int lda, uintptr_t b, int ldb, float beta, uintptr_t c, int ldc, int count) {
	return (int)cublasSgemmBatched((cublasHandle_t)h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
		m, n, k, &alpha, (const float *const *)a, lda, (const float *const *)b, ldb, &beta, (float *const *)c, ldc, count);
}

// troupe_func_smem lets kernel fn use up to bytes of dynamic shared memory
// (past the 48 KiB a launch gets without asking).
static int troupe_func_smem(uintptr_t fn, int bytes) {
	return (int)cuFuncSetAttribute((CUfunction)fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
}

static int troupe_lt_create(uintptr_t *h) {
	cublasLtHandle_t lt = NULL;
	int st = (int)cublasLtCreate(&lt);
	*h = (uintptr_t)lt;
	return st;
}

static uint32_t troupe_align(uintptr_t p) {
	uint32_t a = 256;
	while (a > 4 && p % a != 0) a >>= 1;
	return a;
}

// troupe_lt_matmul: column-major D (m,n) at ldd = op(A) op(B) + beta*C (m,n at
// ldc) + bias (m, broadcast over the columns; none when bias is 0), on cublasLt
// with its BIAS epilogue. C may be D. Returns CUBLAS_STATUS_NOT_SUPPORTED (15)
// untouched when no algorithm fits.
static int troupe_lt_matmul(uintptr_t h, int tf32, int ta, int tb, int m, int n, int k,
		uintptr_t a, int lda, uintptr_t b, int ldb, uintptr_t bias, float beta, uintptr_t c, int ldc,
		uintptr_t d, int ldd, uintptr_t ws, uint64_t wsSize, uintptr_t stream) {
	cublasLtMatmulDesc_t op = NULL;
	cublasLtMatrixLayout_t A = NULL, B = NULL, Cl = NULL, D = NULL;
	cublasLtMatmulPreference_t pref = NULL;
	cublasLtMatmulHeuristicResult_t res;
	int found = 0;
	cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
	cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
	const void *bp = (const void *)bias;
	uint32_t alA = troupe_align(a), alB = troupe_align(b), alC = troupe_align(c), alD = troupe_align(d);
	float alpha = 1.0f;
	cublasStatus_t st = cublasLtMatmulDescCreate(&op, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F);
	if (st == 0) st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa));
	if (st == 0) st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb));
	if (st == 0) st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi));
	if (st == 0 && bias) st = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp));
	if (st == 0) st = cublasLtMatrixLayoutCreate(&A, CUDA_R_32F, ta ? k : m, ta ? m : k, lda);
	if (st == 0) st = cublasLtMatrixLayoutCreate(&B, CUDA_R_32F, tb ? n : k, tb ? k : n, ldb);
	if (st == 0) st = cublasLtMatrixLayoutCreate(&Cl, CUDA_R_32F, m, n, ldc);
	if (st == 0) st = cublasLtMatrixLayoutCreate(&D, CUDA_R_32F, m, n, ldd);
	if (st == 0) st = cublasLtMatmulPreferenceCreate(&pref);
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsSize, sizeof(wsSize));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &alA, sizeof(alA));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &alB, sizeof(alB));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alC, sizeof(alC));
	if (st == 0) st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alD, sizeof(alD));
	if (st == 0) st = cublasLtMatmulAlgoGetHeuristic((cublasLtHandle_t)h, op, A, B, Cl, D, pref, 1, &res, &found);
	if (st == 0 && found == 0) st = CUBLAS_STATUS_NOT_SUPPORTED;
	if (st == 0) st = cublasLtMatmul((cublasLtHandle_t)h, op, &alpha, (const void *)a, A, (const void *)b, B, &beta,
		(const void *)c, Cl, (void *)d, D, &res.algo, (void *)ws, wsSize, (cudaStream_t)stream);
	if (pref) cublasLtMatmulPreferenceDestroy(pref);
	if (D) cublasLtMatrixLayoutDestroy(D);
	if (Cl) cublasLtMatrixLayoutDestroy(Cl);
	if (B) cublasLtMatrixLayoutDestroy(B);
	if (A) cublasLtMatrixLayoutDestroy(A);
	if (op) cublasLtMatmulDescDestroy(op);
	return (int)st;
}
*/
import "C"

import "fmt"

// cublasStatusError is a failed cuBLAS call's status (cublasStatus_t).
type cublasStatusError struct {
	call   string
	status int
}

func (e cublasStatusError) Error() string {
	return fmt.Sprintf("kernels: cuBLAS %s failed with status %d", e.call, e.status)
}

// cublasSetTF32 turns TF32 tensor-core math for FP32 products on or off.
func cublasSetTF32(handle uintptr, on bool) error {
	if st := C.troupe_cublas_tf32(C.uintptr_t(handle), C.int(b2i(on))); st != 0 {
		return cublasStatusError{"cublasSetMathMode", int(st)}
	}
	return nil
}

// cublasSetStream queues the handle's work on stream (a CUstream).
func cublasSetStream(handle, stream uintptr) error {
	if st := C.troupe_cublas_stream(C.uintptr_t(handle), C.uintptr_t(stream)); st != 0 {
		return cublasStatusError{"cublasSetStream", int(st)}
	}
	return nil
}

// cublasSgemmStridedBatched is cublasSgemmStridedBatched, column-major as cuBLAS
// reads it: count products C_i = alpha*op(A_i) op(B_i) + beta*C_i with A_i at
// a + i*sa floats, and so on.
func cublasSgemmStridedBatched(handle uintptr, transA, transB bool, m, n, k int, alpha float32,
	a uintptr, lda int, sa int64, b uintptr, ldb int, sb int64, beta float32, c uintptr, ldc int, sc int64, count int) error {
	st := C.troupe_cublas_sgemm_strided_batched(C.uintptr_t(handle), C.int(b2i(transA)), C.int(b2i(transB)),
		C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.uintptr_t(a), C.int(lda), C.longlong(sa), C.uintptr_t(b), C.int(ldb), C.longlong(sb),
		C.float(beta), C.uintptr_t(c), C.int(ldc), C.longlong(sc), C.int(count))
	if st != 0 {
		return cublasStatusError{"cublasSgemmStridedBatched", int(st)}
	}
	return nil
}

// cublasSgemmBatched is cublasSgemmBatched, column-major as cuBLAS reads it:
// count products C_i = alpha*op(A_i) op(B_i) + beta*C_i where a, b and c are
// device arrays of count device pointers each.
func cublasSgemmBatched(handle uintptr, transA, transB bool, m, n, k int, alpha float32,
	a uintptr, lda int, b uintptr, ldb int, beta float32, c uintptr, ldc int, count int) error {
	st := C.troupe_cublas_sgemm_batched(C.uintptr_t(handle), C.int(b2i(transA)), C.int(b2i(transB)),
		C.int(m), C.int(n), C.int(k), C.float(alpha), C.uintptr_t(a), C.int(lda), C.uintptr_t(b), C.int(ldb),
		C.float(beta), C.uintptr_t(c), C.int(ldc), C.int(count))
	if st != 0 {
		return cublasStatusError{"cublasSgemmBatched", int(st)}
	}
	return nil
}

// funcMaxDynamicSmem lets the kernel behind fn (a cu.Function's CUfunction)
// use up to bytes of dynamic shared memory.
func funcMaxDynamicSmem(fn uintptr, bytes int) error {
	if st := C.troupe_func_smem(C.uintptr_t(fn), C.int(bytes)); st != 0 {
		return fmt.Errorf("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, %d) failed with CUresult %d", bytes, int(st))
	}
	return nil
}

// cublasNotSupported is CUBLAS_STATUS_NOT_SUPPORTED.
const cublasNotSupported = 15

// cublasLtCreate returns a new cublasLt handle.
func cublasLtCreate() (uintptr, error) {
	var h C.uintptr_t
	if st := C.troupe_lt_create(&h); st != 0 {
		return 0, cublasStatusError{"cublasLtCreate", int(st)}
	}
	return uintptr(h), nil
}

// cublasLtMatmul is D (m,n) = op(A) op(B) + beta*C + bias (m) in cuBLAS's
// column-major terms, the bias (none when 0) and C added by the product's
// epilogue; ws is a device workspace of wsSize bytes.
func cublasLtMatmul(handle uintptr, tf32, transA, transB bool, m, n, k int, a uintptr, lda int, b uintptr, ldb int,
	bias uintptr, beta float32, c uintptr, ldc int, d uintptr, ldd int, ws uintptr, wsSize int, stream uintptr) error {
	st := C.troupe_lt_matmul(C.uintptr_t(handle), C.int(b2i(tf32)), C.int(b2i(transA)), C.int(b2i(transB)),
		C.int(m), C.int(n), C.int(k), C.uintptr_t(a), C.int(lda), C.uintptr_t(b), C.int(ldb),
		C.uintptr_t(bias), C.float(beta), C.uintptr_t(c), C.int(ldc), C.uintptr_t(d), C.int(ldd),
		C.uintptr_t(ws), C.uint64_t(wsSize), C.uintptr_t(stream))
	if st != 0 {
		return cublasStatusError{"cublasLtMatmul", int(st)}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
