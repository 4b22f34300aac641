//go:build !cgo || purego

package kernels

// inferSmallRows: see infer_linear_cgo.go.
const inferSmallRows = 16

// inferSmallOK: no streaming kernel in the pure-Go build.
const inferSmallOK = false

// inferSmall has no pure-Go kernel: the caller takes the gemm path.
func inferSmall(m, n0, n1, k int, a []float32, lda int, b []float32, ldb int, bias, c []float32, ldc int, accIn bool) bool {
	return false
}
