//go:build !linux

package kernels

// hugeSupported: transparent huge pages are asked for on Linux only.
const hugeSupported = false

// adviseHuge does nothing where transparent huge pages are not asked for
// with madvise.
func adviseHuge(s []float32) {}
