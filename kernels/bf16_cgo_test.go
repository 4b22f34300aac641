//go:build cgo && !purego

package kernels

import (
	"math"
	"testing"
)

// TestBF16AVX2: TestBF16 on the AVX2 conversions, which a CPU with
// AVX-512BW does not otherwise run.
func TestBF16AVX2(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2")
	}
	defer func(v bool) { bf16AVX2 = v }(bf16AVX2)
	bf16AVX2 = true
	testBF16(t)
}

// BenchmarkBF16 times encoding and decoding 16M values (64 MB of float32)
// with the AVX2 conversions and with the Go loops (where the CPU lacks
// AVX-512BW; with it, its build instead of the Go loops), as GB/s of float32.
//
//	go test -run '^$' -bench BF16 ./kernels/
func BenchmarkBF16(b *testing.B) {
	if !hasAVX2 {
		b.Skip("no AVX2")
	}
	defer func(v bool) { bf16AVX2 = v }(bf16AVX2)
	const n = 1 << 24
	src, half, dst := randn(newRNG(3), n, 1), make([]uint16, n), make([]float32, n)
	blob := make([]byte, 2*n)
	for _, avx2 := range []bool{false, true} {
		name := map[bool]string{false: "other", true: "avx2"}[avx2]
		bf16AVX2 = avx2
		b.Run("encode/"+name, func(b *testing.B) {
			b.SetBytes(4 * n)
			for range b.N {
				EncodeBF16(half, src)
			}
		})
		b.Run("decode/"+name, func(b *testing.B) {
			b.SetBytes(4 * n)
			for range b.N {
				DecodeBF16(dst, blob)
			}
		})
	}
}

// TestBF16DecodeStreamed: the AVX2 decode at TROUPE_BF16_STREAM values or
// more, at every alignment of dst (streamed where dst is 32-byte aligned,
// plain stores elsewhere) and with a ragged end, bit for bit against FromBF16.
func TestBF16DecodeStreamed(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2")
	}
	defer func(v bool) { bf16AVX2 = v }(bf16AVX2)
	bf16AVX2 = true
	rng := newRNG(152)
	for _, n := range []int{16384, 16384 + 16*3 + 5, 100003} {
		blob := make([]byte, 2*n)
		for i := range blob {
			blob[i] = byte(rng.Uint32())
		}
		for off := range 9 {
			buf := make([]float32, n+off+8)
			for i := range buf {
				buf[i] = -1
			}
			dst := buf[off : off+n]
			DecodeBF16(dst, blob)
			for i := range n {
				want := FromBF16(uint16(blob[2*i]) | uint16(blob[2*i+1])<<8)
				if math.Float32bits(dst[i]) != math.Float32bits(want) {
					t.Fatalf("n=%d offset %d: value %d = %#08x, want %#08x", n, off, i, math.Float32bits(dst[i]), math.Float32bits(want))
				}
			}
			for i, v := range buf[off+n:] {
				if v != -1 {
					t.Fatalf("n=%d offset %d: wrote past the end at %d", n, off, i)
				}
			}
			for i, v := range buf[:off] {
				if v != -1 {
					t.Fatalf("n=%d offset %d: wrote before the start at %d", n, off, i)
				}
			}
		}
	}
}
