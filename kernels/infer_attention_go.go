//go:build !cgo || purego

package kernels

// inferAttend has no pure-Go kernel: AttentionCached runs its Go loops.
func inferAttend(lo, hi, NH, hs, C_, maxT int, qkv, kc, vc []float32, slot, pos []int32, out, scores []float32, scale float32) bool {
	return false
}
