//go:build !cgo || purego

package kernels

// inferLogProbRows has no pure-Go kernel: InferLogProb runs its Go loop.
func inferLogProbRows(logp, x []float32, targets []int32, rows, V int, invT float32) bool {
	return false
}

// inferMaxSumRows has no pure-Go kernel: inferMaxSum runs its Go loop.
func inferMaxSumRows(mx, sum, x []float32, rows, w int, invT float32) bool { return false }
