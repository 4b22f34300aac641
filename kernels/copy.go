package kernels

// CopyStreamed is copy(dst, src) for large buffers that will not be read
// again soon (a broadcast's weights into a shared-memory slot, or out of one):
// from copyStreamMin bytes on, where the CPU has AVX2, the 32-byte aligned
// middle of dst is written with streaming stores, which go to memory without
// first reading each line they write (a plain store's read for ownership) and
// without evicting what the caches hold. dst and src must not overlap. It
// returns the bytes copied, as copy does.
func CopyStreamed(dst, src []byte) int {
	n := min(len(dst), len(src))
	if n < copyStreamMin {
		return copy(dst, src)
	}
	dst, src = dst[:n], src[:n]
	lo, hi := copyStreamVector(dst, src)
	copy(dst[:lo], src[:lo])
	copy(dst[hi:], src[hi:])
	return n
}

// copyStreamMin is the smallest copy CopyStreamed streams (a var so that a
// test can lower it): below it the lines written are few enough to stay in
// the caches for whoever reads them next.
var copyStreamMin = 64 << 10
