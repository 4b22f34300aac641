//go:build !cgo || purego

package kernels

// gemmPackedOK: the packed AVX-512 sgemm is C (gemm_avx512_cgo.go); the pure-Go
// build has none and takes the pure-Go gemm path.
const gemmPackedOK = false

// gemmDirectN: see gemm_avx512_cgo.go.
const gemmDirectN = 512

// gemmPackedMR: see gemm_avx512_cgo.go.
const gemmPackedMR = 12

// gemmPackedEx has no pure-Go kernel: it does nothing and reports false.
func gemmPackedEx(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int, bias []float32, gelu bool) bool {
	return false
}

// gemmPackedEpi has no pure-Go kernel: it does nothing and reports false.
func gemmPackedEpi(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int, e *gemmEpilogue) bool {
	return false
}

// gemmPackedWins: without the packed kernel, never.
func gemmPackedWins(transA, transB bool, m, n, k int) bool { return false }

// gemmSharedDeep: without the packed kernel, never.
func gemmSharedDeep(transA bool, m, n, k int) bool { return false }

// shareDeep: see gemm_avx512_cgo.go (no effect here).
var shareDeep = true

// useShared: see gemm_avx512_cgo.go (no effect here).
var useShared = true

// gemmShared has no pure-Go kernel: it does nothing and reports false.
func (c *CPU) gemmShared(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int, e *gemmEpilogue, colSums []float32) bool {
	return false
}

// weightBiasGrad: without the packed kernel, never (MatmulBackward then runs
// the product and BiasBackward).
func (c *CPU) weightBiasGrad(dweight, dbias, dout, inp Tensor, N, C, OC int) bool { return false }
