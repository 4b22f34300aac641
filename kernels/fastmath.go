package kernels

import "math"

// exp32 returns e^x in float32. Go's math.Exp works in float64 and is several
// times slower than these ops can afford (softmax and GELU call it millions of
// times a step), so: x = n*ln2 + r with |r| <= ln2/2, e^r by a degree-7 Taylor
// polynomial (truncation error < 1e-8 relative, below float32's 6e-8 ulp), and
// 2^n put straight into the exponent bits. |x| > 87, where 2^n would leave the
// normal range, goes to math.Exp; so does NaN.
func exp32(x float32) float32 {
	if !(x >= -87 && x <= 87) {
		return float32(math.Exp(float64(x)))
	}
	const log2e = 1.44269504088896341
	// ln2 split in a part exact in float32 and a remainder (Cody-Waite), so r is
	// accurate even when n is large.
	const ln2hi = 0.693359375
	const ln2lo = -2.12194440e-4
	// Adding 1.5*2^23 rounds x*log2e to the nearest integer n (float32 has no
	// fraction bits left at that magnitude) and leaves n in the low mantissa bits:
	// no float64 round trip, no call to math.Floor.
	const magic = 12582912
	t := x*log2e + magic
	n := t - magic
	r := x - n*ln2hi - n*ln2lo
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	e := int32(math.Float32bits(t)) - 0x4b400000 // n as an integer
	return p * math.Float32frombits(uint32(e+127)<<23)
}

// tanh32 returns tanh(x) in float32 through exp32: tanh x = 1 - 2/(e^2x + 1),
// which saturates cleanly to ±1; near 0 that form loses bits to cancellation, so
// small |x| uses the odd Taylor series instead.
func tanh32(x float32) float32 {
	ax := x
	if ax < 0 {
		ax = -ax
	}
	if ax < 0.0625 {
		x2 := x * x
		return x * (1 + x2*(-1.0/3+x2*(2.0/15+x2*(-17.0/315))))
	}
	if ax > 9 {
		if x > 0 {
			return 1
		}
		return -1
	}
	t := 1 - 2/(exp32(2*ax)+1)
	if x < 0 {
		return -t
	}
	return t
}

// expNeg2Abs returns e^(-2|u|) in (0,1], the one exponential GELU needs: with
// e = e^(-2|u|), sigmoid(2u) = 1/(1+e) for u >= 0 and e/(1+e) for u < 0, and
// 1-sigmoid(2u) the other one, both without cancellation. Same method as exp32,
// degree-6 polynomial (< 2e-7 relative), no range branches: the argument is
// clamped at -87, where e^-87 ~ 1.6e-38 is as good as 0 next to 1.
func expNeg2Abs(u float32) float32 {
	x := max(-2*math.Float32frombits(math.Float32bits(u)&0x7fffffff), -87)
	const magic = 12582912 // 1.5*2^23, see exp32
	t := x*1.44269504088896341 + magic
	n := t - magic
	r := x - n*0.693359375 + n*2.12194440e-4
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
	return p * math.Float32frombits(uint32(int32(math.Float32bits(t))-0x4b400000+127)<<23)
}
