//go:build !cgo && !purego && amd64

package kernels

// gemmKernel4x16AVX2 adds A sliver (4,kb) @ B sliver (kb,16), packed k-major at a
// and b, into the (4,16) tile at c with row stride ldc floats (gemm_amd64.s).
//
//go:noescape
func gemmKernel4x16AVX2(kb int, a, b, c *float32, ldc int)

// cpuid and xgetbv read the CPU's feature bits (gemm_amd64.s); the standard
// library keeps its own detection internal.
func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

// hasAVX2FMA reports whether the CPU and OS support AVX2 and FMA3.
func hasAVX2FMA() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	fma, osxsave, avx := ecx1&(1<<12) != 0, ecx1&(1<<27) != 0, ecx1&(1<<28) != 0
	if !fma || !osxsave || !avx {
		return false
	}
	if xcr0, _ := xgetbv(); xcr0&6 != 6 { // the OS saves XMM and YMM state
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0
}

var useAVX2 = hasAVX2FMA()

// gemmKernelName names the micro-kernel in logs.
var gemmKernelName = map[bool]string{true: "avx2", false: "go"}[useAVX2]

// gemmKernel adds A sliver (gemmMR,kb) @ B sliver (kb,gemmNR) into the tile at c.
func gemmKernel(kb int, a, b, c []float32, ldc int) {
	if !useAVX2 {
		gemmKernelGo(kb, a, b, c, ldc)
		return
	}
	// The bounds the assembly relies on, checked once per tile.
	_, _, _ = a[kb*gemmMR-1], b[kb*gemmNR-1], c[(gemmMR-1)*ldc+gemmNR-1]
	gemmKernel4x16AVX2(kb, &a[0], &b[0], &c[0], ldc)
}
