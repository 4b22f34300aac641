package kernels

// geluScale is sqrt(2/pi), the constant of the tanh form of GELU.
const geluScale = 0.7978845608028654

// GeluForward implements Device: out (n) = 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
// for inp (n), the tanh form Hugging Face calls gelu_new. out may alias inp.
func (c *CPU) GeluForward(out, inp Tensor, n int) {
	need(out, n, "GeluForward out")
	need(inp, n, "GeluForward inp")
	o, x := out.F[:n], inp.F[:n]
	c.parallelFor(n, 30, func(lo, hi int) {
		oo, xx := o[lo:hi], x[lo:hi]
		if !geluVector(oo, xx, nil) {
			geluScalar(oo, xx)
		}
	})
}

// geluScalar sets out[i] = gelu(x[i]) (the tanh form) without vector kernels;
// out may alias x.
func geluScalar(out, x []float32) {
	for i, v := range x {
		// 0.5(1+tanh u) = sigmoid(2u), computed from e = e^-2|u| without cancellation.
		u := geluScale * (v + 0.044715*v*v*v)
		e := expNeg2Abs(u)
		s := 1 / (1 + e)
		if u < 0 {
			s *= e
		}
		out[i] = v * s
	}
}

// GeluBackward implements Device: dinp (n) += gelu'(inp) * dout. dinp may alias dout.
func (c *CPU) GeluBackward(dinp, inp, dout Tensor, n int) { c.geluBackward(dinp, inp, dout, n, true) }

// geluBackwardSet is GeluBackward that overwrites: dinp (n) = gelu'(inp) * dout,
// with no need to zero dinp first; dinp may alias dout.
func (c *CPU) geluBackwardSet(dinp, inp, dout Tensor, n int) {
	c.geluBackward(dinp, inp, dout, n, false)
}

// geluBackward adds into dinp (acc) or overwrites it.
func (c *CPU) geluBackward(dinp, inp, dout Tensor, n int, acc bool) {
	need(dinp, n, "GeluBackward dinp")
	need(inp, n, "GeluBackward inp")
	need(dout, n, "GeluBackward dout")
	dx, x, dy := dinp.F[:n], inp.F[:n], dout.F[:n]
	c.parallelFor(n, 40, func(lo, hi int) {
		dxx, xx, dyy := dx[lo:hi], x[lo:hi], dy[lo:hi]
		if geluVectorAcc(dxx, xx, dyy, acc) {
			return
		}
		for i, v := range xx {
			// With s = sigmoid(2u) = 0.5(1+tanh u): 1-tanh^2 u = 4s(1-s), so
			// gelu' = s + 2x s(1-s) du/dx; s and 1-s both come from e = e^-2|u|.
			u := geluScale * (v + 0.044715*v*v*v)
			e := expNeg2Abs(u)
			inv := 1 / (1 + e)
			s, sc := inv, e*inv
			if u < 0 {
				s, sc = sc, s
			}
			du := geluScale * (1 + 3*0.044715*v*v)
			g := (s + 2*v*s*sc*du) * dyy[i]
			if acc {
				g += dxx[i]
			}
			dxx[i] = g
		}
	})
}
