package kernels

import (
	"fmt"
	"math"
)

// AdamW implements Device: one AdamW step (decoupled weight decay, bias
// correction, PyTorch's formula) over params, grads, m, v (all n values):
//
//	m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2
//	p -= lr * ( (m/(1-beta1^step)) / (sqrt(v/(1-beta2^step)) + eps) + weightDecay*p )
//
// step counts from 1. One parallel loop over the flat buffers.
func (c *CPU) AdamW(params, grads, m, v Tensor, step int, lr, beta1, beta2, eps, weightDecay float32) {
	c.adamWScaled(params, grads, m, v, 1, step, lr, beta1, beta2, eps, weightDecay)
}

// adamWScaled is AdamW after grads *= gscale (in place), in the same pass: the
// gradient clipping and the update read the gradients once.
func (c *CPU) adamWScaled(params, grads, m, v Tensor, gscale float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	n := params.N
	if grads.N != n || m.N != n || v.N != n || step < 1 {
		panic(fmt.Errorf("%w: AdamW on params %d, grads %d, m %d, v %d values at step %d",
			ErrShape, n, grads.N, m.N, v.N, step))
	}
	bc1, bc2 := adamBiasCorrections(beta1, beta2, step)
	p, g, mm, vv := params.F[:n], grads.F[:n], m.F[:n], v.F[:n]
	// Blocks claimed from both ends: an eighth of the run, or where halves
	// would be written with streaming stores, blocks long enough to be too.
	blk := (n + 7) / 8
	if n/2 >= adamwStreamMin {
		blk = max(adamwStreamMin, (n+15)/16)
	}
	c.parallelMeet(n, blk, 20, func(lo, hi int) {
		if adamwVector(p[lo:hi], g[lo:hi], mm[lo:hi], vv[lo:hi], lr, beta1, beta2, eps, weightDecay, 1/bc1, 1/bc2, gscale) {
			return
		}
		for i := lo; i < hi; i++ {
			gi := g[i]
			if gscale != 1 {
				gi *= gscale
				g[i] = gi
			}
			mi := beta1*mm[i] + (1-beta1)*gi
			vi := beta2*vv[i] + (1-beta2)*gi*gi
			mm[i], vv[i] = mi, vi
			mhat := mi / bc1
			vhat := vi / bc2
			p[i] -= lr * (mhat/(float32(math.Sqrt(float64(vhat)))+eps) + weightDecay*p[i])
		}
	})
}

// adamwStream lets the AVX-512 AdamW (adamwVector) write a part of at least
// adamwStreamMin values with streaming stores (troupe_adamw's nt); benchmarks
// turn it off to compare.
var adamwStream = true

// adamwStreamMin: a part this long (4 buffers of 4 MB) is taken to be out of
// the caches, and the next read of its lines a step away.
const adamwStreamMin = 1 << 20

// adamBiasCorrections are AdamW's 1 - beta1^step and 1 - beta2^step, formed in
// float64: beta2^step is 1 - 1e-3*step for small steps, where float32 would
// round most of the correction away. Every device's AdamW uses them.
func adamBiasCorrections(beta1, beta2 float32, step int) (bc1, bc2 float32) {
	return float32(1 - math.Pow(float64(beta1), float64(step))), float32(1 - math.Pow(float64(beta2), float64(step)))
}
