//go:build !cgo || purego

package kernels

// Without cgo there are no C vector kernels: every caller falls back to Go.

// VectorISA is "": no build of the C vector kernels runs.
func VectorISA() string { return "" }

func gemmSmall(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, cc []float32, ldc int) bool {
	return false
}

func geluVector(out, x, dout []float32) bool { return false }

func geluVectorAcc(out, x, dout []float32, acc bool) bool { return false }

func softmaxVector(x []float32) bool { return false }

func expVector(out, x []float32) bool { return false }

func adamwVector(p, g, m, v []float32, lr, beta1, beta2, eps, wd, ibc1, ibc2, gscale float32) bool {
	return false
}
