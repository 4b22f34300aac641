//go:build !cgo || purego

package kernels

// inferLogProbRows has no pure-Go kernel: InferLogProb runs its Go loop.
func inferLogProbRows(logp, x []float32, targets []int32, rows, V int, invT float32) bool {
	return false
}
