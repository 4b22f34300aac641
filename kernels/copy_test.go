package kernels

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestCopyStreamed checks CopyStreamed against copy at every dst and src
// alignment in a 32-byte window, lengths around the streamed threshold and
// with ragged ends, and that nothing outside dst's copied bytes is written.
func TestCopyStreamed(t *testing.T) {
	defer func(m int) { copyStreamMin = m }(copyStreamMin)
	copyStreamMin = 256
	rng := rand.New(rand.NewPCG(1, 2))
	const pad = 64
	for _, n := range []int{0, 1, 255, 256, 257, 383, 384, 1000, 4096 + 77, 70000} {
		src := make([]byte, n+pad)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		for da := 0; da < 33; da++ {
			for _, sa := range []int{0, 1, 7, 32} {
				buf := make([]byte, n+2*pad)
				for i := range buf {
					buf[i] = 0xA5
				}
				dst := buf[pad+da : pad+da+n]
				if got := CopyStreamed(dst, src[sa:sa+n]); got != n {
					t.Fatalf("n=%d dst+%d src+%d: copied %d", n, da, sa, got)
				}
				if !bytes.Equal(dst, src[sa:sa+n]) {
					t.Fatalf("n=%d dst+%d src+%d: dst differs from src", n, da, sa)
				}
				for i, b := range buf {
					if (i < pad+da || i >= pad+da+n) && b != 0xA5 {
						t.Fatalf("n=%d dst+%d src+%d: byte %d outside dst written", n, da, sa, i-pad-da)
					}
				}
			}
		}
	}
	// Lengths differ: the shorter one's, as copy.
	a, b := make([]byte, 1000), make([]byte, 600)
	for i := range b {
		b[i] = byte(i)
	}
	if got := CopyStreamed(a, b); got != 600 || !bytes.Equal(a[:600], b) || a[600] != 0 {
		t.Fatalf("dst longer than src: copied %d", got)
	}
	if got := CopyStreamed(b[:300], a); got != 300 {
		t.Fatalf("src longer than dst: copied %d", got)
	}
}

// TestCopyStreamedStreams checks that, where the build and CPU stream (cgo,
// AVX2), a long copy streams its whole aligned middle.
func TestCopyStreamedStreams(t *testing.T) {
	if !copyStreams() {
		t.Skip("no streaming copy in this build or on this CPU: CopyStreamed is copy")
	}
	dst, src := make([]byte, 1<<20+100), make([]byte, 1<<20+100)
	lo, hi := copyStreamVector(dst[3:], src[3:])
	if hi-lo < 1<<20-256 || (lo+3)%32 != 0 || (hi-lo)%128 != 0 {
		t.Fatalf("streamed [%d, %d) of %d bytes at dst+3", lo, hi, len(dst)-3)
	}
}
