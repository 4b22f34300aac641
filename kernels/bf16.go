package kernels

import "math"

// bfloat16 conversions for the weight broadcast (a bf16 blob is half the bytes
// of fp32): every value a publisher sends and every value each subscriber
// receives goes through one of these, so they run in AVX-512 or AVX2 where the
// CPU has it (bf16_cgo.go) with the same results as the Go loops here.

// EncodeBF16 sets dst[i] to src[i] rounded to bfloat16 (nearest, ties to
// even; a NaN stays a quiet NaN) for i < len(src); dst must be as long.
func EncodeBF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i := bf16EncodeVector(dst, src); i < len(src); i++ {
		dst[i] = ToBF16(src[i])
	}
}

// DecodeBF16 sets dst[i] to the float32 value of the i-th little-endian
// bfloat16 in src, for i < len(src)/2; dst must be as long.
func DecodeBF16(dst []float32, src []byte) {
	n := len(src) / 2
	dst = dst[:n]
	for i := bf16DecodeVector(dst, src[:2*n]); i < n; i++ {
		dst[i] = FromBF16(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
	}
}

// ToBF16 rounds v to bfloat16 (nearest, ties to even); NaN stays NaN (quiet).
func ToBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// FromBF16 is the float32 value of a bfloat16.
func FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
