//go:build !linux

package kernels

const hugeSupported = false

// adviseHuge does nothing where transparent huge pages are not asked for
// with madvise.
func adviseHuge(s []float32) {}
