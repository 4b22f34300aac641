//go:build cuda

package kernels

// The three cuBLAS calls that gorgonia.org/cu/blas does not wrap: the math mode
// (TF32 tensor cores for FP32 products), the stream, and the strided batched
// product that attention uses. Pointers cross as integers: they are device
// addresses or a cuBLAS handle, never Go memory.

/*
#cgo LDFLAGS: -lcublas
#cgo linux CFLAGS: -I/usr/local/cuda/include
#cgo linux LDFLAGS: -L/usr/local/cuda/lib64
#include <stdint.h>
#include <cublas_v2.h>

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

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
