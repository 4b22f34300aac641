package kernels

import (
	"math"
	"testing"
)

// TestBF16: the vector conversions give the Go loops' results bit for bit on
// every kind of value (ties, denormals, infinities, NaNs, signed zeros) and
// every tail length, and decoding an encoding rounds to within 2^-8.
func TestBF16(t *testing.T) { testBF16(t) }

func testBF16(t *testing.T) {
	rng := newRNG(151)
	special := []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff, 0x00000001,
		0x007fffff, 0x80400000, 0x3f808000, 0x3f818000, 0x3f80c000, 0x7f7fffff, 0xff7f8000, 0x3f7fffff}
	for _, n := range []int{0, 1, 15, 16, 17, 33, 100, 1000} {
		src := make([]float32, n)
		for i := range src {
			if i < len(special) {
				src[i] = math.Float32frombits(special[(i+n)%len(special)])
			} else {
				src[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10)))
			}
		}
		got := make([]uint16, n)
		EncodeBF16(got, src)
		blob := make([]byte, 2*n)
		for i, v := range src {
			want := ToBF16(v)
			if got[i] != want {
				t.Fatalf("n=%d: EncodeBF16(%#08x) = %#04x, want %#04x", n, math.Float32bits(v), got[i], want)
			}
			blob[2*i], blob[2*i+1] = byte(want), byte(want>>8)
		}
		dec := make([]float32, n)
		DecodeBF16(dec, blob)
		for i, v := range src {
			want := FromBF16(ToBF16(v))
			if math.Float32bits(dec[i]) != math.Float32bits(want) {
				t.Fatalf("n=%d: DecodeBF16 of %#04x = %#08x, want %#08x", n, got[i], math.Float32bits(dec[i]), math.Float32bits(want))
			}
			if f := float64(v); !math.IsNaN(f) && !math.IsInf(f, 0) && math.Abs(f) > 1e-30 && math.Abs(f) < 1e38 {
				if e := math.Abs(float64(dec[i])-f) / math.Abs(f); e > 1.0/256 {
					t.Fatalf("%v rounds to %v: relative error %g", v, dec[i], e)
				}
			}
		}
	}
	// The ties: 1 + 2^-8 is halfway between two bfloat16s and goes to the even one.
	if h := ToBF16(math.Float32frombits(0x3f808000)); h != 0x3f80 {
		t.Fatalf("tie rounded to %#04x, want 0x3f80", h)
	}
	if h := ToBF16(math.Float32frombits(0x3f818000)); h != 0x3f82 {
		t.Fatalf("tie rounded to %#04x, want 0x3f82", h)
	}
}
