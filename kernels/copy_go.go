//go:build !cgo || purego

package kernels

// copyStreamVector: no streaming stores in this build (CopyStreamed copies
// everything with Go's copy).
func copyStreamVector(dst, src []byte) (lo, hi int) { return 0, 0 }

// copyStreams: never in this build.
func copyStreams() bool { return false }
