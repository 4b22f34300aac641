package kernels

import (
	"fmt"
	"math"
)

// inferLogProber fuses InferLogProb.
type inferLogProber interface {
	inferLogProb(logp, logits Tensor, targets []int32, N, V int, temperature float32)
}

// InferLogProb sets logp[i] = log softmax(logits[i,:]/temperature)[targets[i]]
// for N rows of V logits; a temperature of 0 or 1 means none. The logits are
// left as they are on the CPU (the fallback divides them in place first).
func InferLogProb(d Device, logp, logits Tensor, targets []int32, N, V int, temperature float32) {
	if !(temperature >= 0) || math.IsInf(float64(temperature), 0) {
		panic(fmt.Errorf("%w: InferLogProb temperature %g", ErrShape, temperature))
	}
	if f, ok := d.(inferLogProber); ok {
		f.inferLogProb(logp, logits, targets, N, V, temperature)
		return
	}
	if temperature > 0 && temperature != 1 {
		d.Scale(logits.Slice(0, N*V), 1/temperature)
	}
	d.LogProbForward(logp, logits, targets, N, V)
}

// inferLogProb implements inferLogProber: the temperature is applied on the fly
// (no pass to scale the logits), with 16-lane exps where the CPU has AVX-512.
func (c *CPU) inferLogProb(logp, logits Tensor, targets []int32, N, V int, temperature float32) {
	need(logp, N, "InferLogProb logp")
	need(logits, N*V, "InferLogProb logits")
	checkTargets(targets, N, V)
	invT := float32(1)
	if temperature > 0 {
		invT = 1 / temperature
	}
	c.parallelFor(N, 20*V, func(lo, hi int) {
		if inferLogProbRows(logp.F[lo:hi], logits.F[lo*V:hi*V], targets[lo:hi], hi-lo, V, invT) {
			return
		}
		for i := lo; i < hi; i++ {
			x := logits.F[i*V : i*V+V]
			mx := x[0]
			for _, v := range x {
				mx = max(mx, v)
			}
			var s float64
			for _, v := range x {
				s += float64(exp32((v - mx) * invT))
			}
			logp.F[i] = float32(float64((x[targets[i]]-mx)*invT) - math.Log(s))
		}
	})
}
