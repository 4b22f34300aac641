package kernels

import "fmt"

// Fused training-step ops. Each is a package function any Device can run: a
// device that implements the matching optional interface below (the CPU does)
// gets one pass over memory instead of several; any other device gets the
// composition of its primitives, with the same result.

// biasMatmuler computes out = inp @ weight + bias with the bias added by the
// product itself (no separate pass over out).
type biasMatmuler interface {
	matmulBiasForward(out, inp, weight, bias Tensor, N, C, OC int)
}

// residualMatmuler computes out = inp @ weight + bias + res with the bias and
// the residual added by the product itself.
type residualMatmuler interface {
	matmulResidualForward(out, inp, weight, bias, res Tensor, N, C, OC int)
}

// geluBackwardSetter overwrites dinp with the GELU gradient (no zeroing first).
type geluBackwardSetter interface {
	geluBackwardSet(dinp, inp, dout Tensor, n int)
}

// crossEntropyFuser runs the log-softmax forward and backward in one pass per row.
type crossEntropyFuser interface {
	crossEntropyFused(logp, dlogits, logits Tensor, targets []int32, dlogp []float32, N, V int)
}

// adamWScaler is AdamW after grads *= gscale, in the same pass.
type adamWScaler interface {
	adamWScaled(params, grads, m, v Tensor, gscale float32, step int, lr, beta1, beta2, eps, weightDecay float32)
}

// MatmulForwardResidual is MatmulForward plus a residual in the same pass:
// out (N,OC) = inp (N,C) @ weight (C,OC) + bias (OC) + res (N,OC). bias may be
// empty; out must not alias inp or res.
func MatmulForwardResidual(d Device, out, inp, weight, bias, res Tensor, N, C, OC int) {
	if f, ok := d.(residualMatmuler); ok {
		f.matmulResidualForward(out, inp, weight, bias, res, N, C, OC)
		return
	}
	MatmulForward(d, out, inp, weight, bias, N, C, OC)
	d.AddInto(out.Slice(0, N*OC), res.Slice(0, N*OC))
}

// MatmulBackwardOverwrite is MatmulBackward except that dinp is overwritten
// (dinp = dout @ weight^T), so callers need not zero it first; dweight and dbias
// still accumulate.
func MatmulBackwardOverwrite(d Device, dinp, dweight, dbias, dout, inp, weight Tensor, N, C, OC int) {
	if !dinp.Empty() {
		d.Gemm(false, true, N, C, OC, 1, dout, OC, weight, OC, 0, dinp, C)
	}
	MatmulBackward(d, Tensor{}, dweight, dbias, dout, inp, weight, N, C, OC)
}

// MatmulTransBackwardOverwrite is MatmulTransBackward except that dinp is
// overwritten (dinp = dout @ weight); dweight still accumulates.
func MatmulTransBackwardOverwrite(d Device, dinp, dweight, dout, inp, weight Tensor, N, C, OC int) {
	if !dinp.Empty() {
		d.Gemm(false, false, N, C, OC, 1, dout, OC, weight, C, 0, dinp, C)
	}
	MatmulTransBackward(d, Tensor{}, dweight, dout, inp, weight, N, C, OC)
}

// GeluBackwardOverwrite sets dinp (n) = gelu'(inp) * dout (GeluBackward adds).
// dinp must not alias dout on devices without the fused op.
func GeluBackwardOverwrite(d Device, dinp, inp, dout Tensor, n int) {
	if f, ok := d.(geluBackwardSetter); ok {
		f.geluBackwardSet(dinp, inp, dout, n)
		return
	}
	d.Zero(dinp.Slice(0, n))
	d.GeluBackward(dinp, inp, dout, n)
}

// CrossEntropyForwardBackward is CrossEntropyForward and CrossEntropyBackward
// in one go: it writes the per-token losses (N), OVERWRITES dlogits (N,V) with
// the gradient of the masked mean loss times dloss (no zeroing needed), and
// returns the mean loss. dlogits must not alias logits.
func CrossEntropyForwardBackward(d Device, losses, dlogits, logits Tensor, targets []int32, mask []float32, dloss float32, N, V int) float32 {
	f, ok := d.(crossEntropyFuser)
	if !ok {
		loss := CrossEntropyForward(d, losses, logits, targets, mask, N, V)
		d.Zero(dlogits.Slice(0, N*V))
		CrossEntropyBackward(d, dlogits, logits, targets, mask, dloss, N, V)
		return loss
	}
	if mask != nil && len(mask) < N {
		panic(fmt.Errorf("%w: CrossEntropyForwardBackward has %d mask values for N=%d", ErrShape, len(mask), N))
	}
	dlogp, _ := meanLossGrad(mask, dloss, N) // all zero when every row is masked out
	f.crossEntropyFused(losses, dlogits, logits, targets, dlogp, N, V)
	host := make([]float32, N)
	d.Download(host, losses)
	return maskedMean(host, mask)
}

// AdamWScaled multiplies grads by gscale in place (gradient clipping) and then
// runs d.AdamW on them: on the CPU both happen in one pass over the buffers.
func AdamWScaled(d Device, params, grads, m, v Tensor, gscale float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	if f, ok := d.(adamWScaler); ok {
		f.adamWScaled(params, grads, m, v, gscale, step, lr, beta1, beta2, eps, weightDecay)
		return
	}
	if gscale != 1 {
		d.Scale(grads, gscale)
	}
	d.AdamW(params, grads, m, v, step, lr, beta1, beta2, eps, weightDecay)
}

// matmulBiasForward implements biasMatmuler: out's rows are set to the bias and
// the product added with beta = 1. A product with beta = 0 clears C first
// anyway, so the bias costs nothing beyond that clearing pass.
func (c *CPU) matmulBiasForward(out, inp, weight, bias Tensor, N, C, OC int) {
	need(out, N*OC, "MatmulForward out")
	need(bias, OC, "MatmulForward bias")
	o, bb := out.F, bias.F[:OC]
	c.parallelFor(N, OC/4, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			copy(o[i*OC:i*OC+OC], bb)
		}
	})
	c.Gemm(false, false, N, OC, C, 1, inp, C, weight, OC, 1, out, OC)
}

// matmulResidualForward implements residualMatmuler: out's rows are set to
// res + bias, then the product is added with beta = 1.
func (c *CPU) matmulResidualForward(out, inp, weight, bias, res Tensor, N, C, OC int) {
	need(out, N*OC, "MatmulForwardResidual out")
	need(res, N*OC, "MatmulForwardResidual res")
	if !bias.Empty() {
		need(bias, OC, "MatmulForwardResidual bias")
	}
	o, r := out.F, res.F
	c.parallelFor(N, OC/2, func(lo, hi int) {
		if bias.Empty() {
			copy(o[lo*OC:hi*OC], r[lo*OC:hi*OC])
			return
		}
		bb := bias.F[:OC]
		for i := lo; i < hi; i++ {
			oo, rr := o[i*OC:i*OC+OC], r[i*OC:i*OC+OC]
			for j, b := range bb {
				oo[j] = rr[j] + b
			}
		}
	})
	c.Gemm(false, false, N, OC, C, 1, inp, C, weight, OC, 1, out, OC)
}

// crossEntropyFused implements crossEntropyFuser: logp (N) gets the NEGATED
// log-probabilities of the targets (the losses) and dlogits (N,V) is overwritten
// with dlogp[i] * (onehot(targets[i]) - softmax(logits[i,:])).
func (c *CPU) crossEntropyFused(losses, dlogits, logits Tensor, targets []int32, dlogp []float32, N, V int) {
	need(losses, N, "CrossEntropyForwardBackward losses")
	need(logits, N*V, "CrossEntropyForwardBackward logits")
	need(dlogits, N*V, "CrossEntropyForwardBackward dlogits")
	checkTargets(targets, N, V)
	if len(dlogp) < N {
		panic(fmt.Errorf("%w: CrossEntropyForwardBackward has %d dlogp for N=%d", ErrShape, len(dlogp), N))
	}
	c.parallelFor(N, 25*V, func(lo, hi int) {
		lp := losses.F[lo:hi]
		if !crossEntropyVector(lp, dlogits.F[lo*V:hi*V], logits.F[lo*V:hi*V], targets[lo:hi], dlogp[lo:hi], hi-lo, V) {
			for i := lo; i < hi; i++ {
				x, dx := logits.F[i*V:i*V+V], dlogits.F[i*V:i*V+V]
				mx, lse := logSumExp(x)
				lp[i-lo] = (x[targets[i]] - mx) - lse
				g := dlogp[i]
				if g == 0 {
					clear(dx)
					continue
				}
				shift := mx + lse
				for j, v := range x {
					dx[j] = -g * exp32(v-shift)
				}
				dx[targets[i]] += g
			}
		}
		for i := range lp {
			lp[i] = -lp[i]
		}
	})
}
