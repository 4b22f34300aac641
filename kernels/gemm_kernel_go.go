//go:build purego || (!cgo && !amd64)

package kernels

// gemmKernel is the portable Go micro-kernel (no assembly in purego builds).
func gemmKernel(kb int, a, b, c []float32, ldc int) { gemmKernelGo(kb, a, b, c, ldc) }

// gemmKernelName names the micro-kernel in logs.
const gemmKernelName = "go"
