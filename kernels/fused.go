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

// geluMatmuler runs MatmulGeluForward with the bias and GELU in the product's
// store (pre and out written once each, no pass of their own).
type geluMatmuler interface {
	matmulGeluForward(pre, out, inp, weight, bias Tensor, N, C, OC int)
}

// geluMatmulBackwarder runs MatmulGeluBackwardOverwrite with GELU's derivative
// applied in the product's store.
type geluMatmulBackwarder interface {
	matmulGeluBackward(dpre, dweight, dbias, dout, inp, weight, pre Tensor, N, C, OC int)
}

// attentionBackwardSetter runs AttentionBackwardOverwrite without zeroing dqkv.
type attentionBackwardSetter interface {
	attentionBackwardSet(dqkv, dout, qkv, att Tensor, B, T, C, NH int)
}

// headLossFuser runs LMHeadLossAndBackward itself, the logits in its own
// (padded) scratch: the caller needs no (N,V) buffer.
type headLossFuser interface {
	headLossBackward(losses, dx, dwte, x, wte Tensor, targets []int32, dlogp []float32, N, C, V int)
	fusesHead() bool // the fused op is switched on
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

// AttentionBackwardOverwrite is AttentionBackward except that dqkv (B,T,3C) is
// OVERWRITTEN with the gradient (no zeroing first).
func AttentionBackwardOverwrite(d Device, dqkv, dout, qkv, att Tensor, B, T, C, NH int) {
	if f, ok := d.(attentionBackwardSetter); ok {
		f.attentionBackwardSet(dqkv, dout, qkv, att, B, T, C, NH)
		return
	}
	d.Zero(dqkv.Slice(0, B*T*3*C))
	d.AttentionBackward(dqkv, dout, qkv, att, B, T, C, NH)
}

// MatmulGeluForward is MatmulForward followed by GELU: pre (N,OC) = inp (N,C) @
// weight (C,OC) + bias (OC; may be empty) and out (N,OC) = gelu(pre), both kept
// (the backward needs pre, the next product out). out must not alias pre or inp.
func MatmulGeluForward(d Device, pre, out, inp, weight, bias Tensor, N, C, OC int) {
	if f, ok := d.(geluMatmuler); ok {
		f.matmulGeluForward(pre, out, inp, weight, bias, N, C, OC)
		return
	}
	MatmulForward(d, pre, inp, weight, bias, N, C, OC)
	d.GeluForward(out, pre, N*OC)
}

// MatmulGeluBackwardOverwrite is the backward of y = gelu(pre) @ weight + bias
// through the product and the GELU before it: dpre (N,C) is OVERWRITTEN with
// (dout (N,OC) @ weight^T) * gelu'(pre), dweight (C,OC) += inp^T @ dout and dbias
// (OC) += column sums of dout, where inp = gelu(pre) as the forward kept it.
// tmp (N*C) is scratch for devices without the fused op (the CPU takes an empty
// one); dpre must not alias dout, inp or pre.
func MatmulGeluBackwardOverwrite(d Device, dpre, tmp, dweight, dbias, dout, inp, weight, pre Tensor, N, C, OC int) {
	if f, ok := d.(geluMatmulBackwarder); ok {
		f.matmulGeluBackward(dpre, dweight, dbias, dout, inp, weight, pre, N, C, OC)
		return
	}
	MatmulBackwardOverwrite(d, tmp, dweight, dbias, dout, inp, weight, N, C, OC)
	GeluBackwardOverwrite(d, dpre, pre, tmp, N*C)
}

// MatmulGeluBackwardNeedsTmp reports whether MatmulGeluBackwardOverwrite uses
// its tmp on d (false where d fuses the op).
func MatmulGeluBackwardNeedsTmp(d Device) bool {
	_, ok := d.(geluMatmulBackwarder)
	return !ok
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
// returns the mean loss. dlogits must not alias logits unless
// CrossEntropyInPlace(d).
func CrossEntropyForwardBackward(d Device, losses, dlogits, logits Tensor, targets []int32, mask []float32, dloss float32, N, V int) float32 {
	f, ok := d.(crossEntropyFuser)
	if !ok {
		loss := CrossEntropyForward(d, losses, logits, targets, mask, N, V)
		d.Zero(dlogits.Slice(0, N*V))
		CrossEntropyBackward(d, dlogits, logits, targets, mask, dloss, N, V)
		return loss
	}
	return fusedMeanLoss(d, "CrossEntropyForwardBackward", losses, mask, dloss, N, func(dlogp []float32) {
		f.crossEntropyFused(losses, dlogits, logits, targets, dlogp, N, V)
	})
}

// fusedMeanLoss runs a fused loss op (run) given each row's loss gradient for
// the masked mean loss times dloss (all zero when every row is masked out),
// and returns that mean of the per-row losses run wrote into losses.
func fusedMeanLoss(d Device, op string, losses Tensor, mask []float32, dloss float32, N int, run func(dlogp []float32)) float32 {
	if mask != nil && len(mask) < N {
		panic(fmt.Errorf("%w: %s has %d mask values for N=%d", ErrShape, op, len(mask), N))
	}
	dlogp, _ := meanLossGrad(mask, dloss, N)
	run(dlogp)
	host := make([]float32, N)
	d.Download(host, losses)
	return maskedMean(host, mask)
}

// LMHeadFused reports whether d runs LMHeadLossAndBackward without the caller's
// logits and dlogits buffers (it may pass empty ones).
func LMHeadFused(d Device) bool {
	f, ok := d.(headLossFuser)
	return ok && f.fusesHead()
}

// LMHeadLossAndBackward is the tied LM head of pretraining and SFT with its loss
// and backward in one op: logits (N,V) = x (N,C) @ wte (V,C)^T, the per-row
// cross-entropy against targets into losses (N) and the masked mean returned (as
// CrossEntropyForwardBackward with dloss), dx (N,C) OVERWRITTEN with the
// gradient of the loss and dwte (V,C) += its gradient. Devices without the fused
// op form the logits in logits (N*V) and their gradient in dlogits (N*V; may be
// logits itself on a CrossEntropyInPlace device); where LMHeadFused(d) both may
// be empty. dx must not alias x.
func LMHeadLossAndBackward(d Device, losses, dx, dwte, logits, dlogits, x, wte Tensor, targets []int32, mask []float32, dloss float32, N, C, V int) float32 {
	f, ok := d.(headLossFuser)
	if !ok || !f.fusesHead() {
		MatmulTransForward(d, logits, x, wte, N, C, V)
		loss := CrossEntropyForwardBackward(d, losses, dlogits, logits, targets, mask, dloss, N, V)
		MatmulTransBackwardOverwrite(d, dx, dwte, dlogits, x, wte, N, C, V)
		return loss
	}
	return fusedMeanLoss(d, "LMHeadLossAndBackward", losses, mask, dloss, N, func(dlogp []float32) {
		f.headLossBackward(losses, dx, dwte, x, wte, targets, dlogp, N, C, V)
	})
}

// AdamWRun is a run of neighbouring parameters that share a weight decay:
// values [Off, Off+N) of the flat buffers AdamWRuns updates.
type AdamWRun struct {
	Off, N      int
	WeightDecay float32
}

// adamWRunner runs AdamWRuns in one pass over the buffers; false when it does
// not take these runs (the caller then updates them one by one).
type adamWRunner interface {
	adamWRuns(params, grads, m, v Tensor, runs []AdamWRun, gscale float32, step int, lr, beta1, beta2, eps float32) bool
}

// AdamWRuns is AdamWScaled over each run of the flat buffers params, grads, m
// and v with the run's own weight decay: one pass over the whole model where
// the device can (a GPU then launches one kernel, not one per run).
func AdamWRuns(d Device, params, grads, m, v Tensor, runs []AdamWRun, gscale float32, step int, lr, beta1, beta2, eps float32) {
	if f, ok := d.(adamWRunner); ok && f.adamWRuns(params, grads, m, v, runs, gscale, step, lr, beta1, beta2, eps) {
		return
	}
	for _, r := range runs {
		AdamWScaled(d, params.Slice(r.Off, r.N), grads.Slice(r.Off, r.N), m.Slice(r.Off, r.N), v.Slice(r.Off, r.N),
			gscale, step, lr, beta1, beta2, eps, r.WeightDecay)
	}
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

// gemmEpilogue is what the packed sgemm's tile store does besides alpha and
// beta (gemmPackedEpi), each slice starting at element (0,0) of C: add bias
// (n) and the residual rows res (stride ldr) as res + bias, the sum a C
// pre-filled with them would hold; multiply the result by GELU'(dgx) (rows at
// ldx); then GELU with gelu, into gout (rows at ldg) when set while C keeps the
// value before it, else into C.
type gemmEpilogue struct {
	bias, res, dgx, gout []float32
	ldr, ldx, ldg        int
	gelu                 bool
}

// biasGelu is the epilogue that adds bias (nil: none) and then applies GELU
// (when gelu), as the inference linears use it; nil when it does neither.
func biasGelu(bias []float32, gelu bool) *gemmEpilogue {
	if bias == nil && !gelu {
		return nil
	}
	return &gemmEpilogue{bias: bias, gelu: gelu}
}

// band is e for the rows [i0,...) of C.
func (e gemmEpilogue) band(i0 int) gemmEpilogue {
	if e.res != nil {
		e.res = e.res[i0*e.ldr:]
	}
	if e.dgx != nil {
		e.dgx = e.dgx[i0*e.ldx:]
	}
	if e.gout != nil {
		e.gout = e.gout[i0*e.ldg:]
	}
	return e
}

// trainEpilogues lets the training ops fuse into the packed sgemm's tile
// store (gemmEpiBands); benchmarks turn it off to compare.
var trainEpilogues = true

// gemmEpiBands computes C (m,n) = A (m,k) @ op(B) with the epilogue e (beta 0,
// alpha 1) on the packed sgemm, in row bands of whole register tiles, one per
// thread. It reports false, doing nothing, when the packed kernel would not
// take a band of this shape (gemmPackedWins; the caller then composes the op
// from Gemm and passes of its own).
func (c *CPU) gemmEpiBands(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int,
	cc []float32, ldc int, e gemmEpilogue) bool {
	if !trainEpilogues {
		return false
	}
	tiles := (m + gemmPackedMR - 1) / gemmPackedMR
	parts := min(c.threads, max(1, 2*m*n*k/gemmSplitWork), tiles)
	if !gemmPackedWins(false, transB, (m+parts-1)/parts, n, k) {
		return false
	}
	if parts > 1 && c.gemmShared(false, transB, m, n, k, 1, a, lda, b, ldb, 0, cc, ldc, &e, nil) {
		return true
	}
	c.parallelFor(parts, minChunkWork, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			i0, i1 := min(m, tiles*p/parts*gemmPackedMR), min(m, tiles*(p+1)/parts*gemmPackedMR)
			if i0 >= i1 {
				continue
			}
			be := e.band(i0)
			gemmPackedEpi(false, transB, i1-i0, n, k, 1, a[i0*lda:], lda, b, ldb, 0, cc[i0*ldc:], ldc, &be)
		}
	})
	return true
}

// checkLinear panics with ErrShape unless out (N,OC), inp (N,C), weight (C,OC)
// and bias (OC; may be empty) hold their values, naming what; it returns the
// bias's values, nil when empty.
func checkLinear(what string, out, inp, weight, bias Tensor, N, C, OC int) []float32 {
	need(out, N*OC, what+" out")
	need(inp, N*C, what+" inp")
	need(weight, C*OC, what+" weight")
	if bias.Empty() {
		return nil
	}
	need(bias, OC, what+" bias")
	return bias.F[:OC]
}

// matmulBiasForward implements biasMatmuler: the packed sgemm adds the bias in
// its tile store; elsewhere out's rows are set to the bias and the product
// added with beta = 1 (a product with beta = 0 clears C first anyway).
func (c *CPU) matmulBiasForward(out, inp, weight, bias Tensor, N, C, OC int) {
	need(bias, OC, "MatmulForward bias")
	o, bb := out.F, checkLinear("MatmulForward", out, inp, weight, bias, N, C, OC)
	if c.gemmEpiBands(false, N, OC, C, inp.F, C, weight.F, OC, o, OC, gemmEpilogue{bias: bb}) {
		return
	}
	c.parallelFor(N, OC/4, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			copy(o[i*OC:i*OC+OC], bb)
		}
	})
	c.Gemm(false, false, N, OC, C, 1, inp, C, weight, OC, 1, out, OC)
}

// matmulResidualForward implements residualMatmuler: the packed sgemm adds
// res + bias in its tile store; elsewhere out's rows are set to res + bias,
// then the product is added with beta = 1.
func (c *CPU) matmulResidualForward(out, inp, weight, bias, res Tensor, N, C, OC int) {
	need(res, N*OC, "MatmulForwardResidual res")
	bb := checkLinear("MatmulForwardResidual", out, inp, weight, bias, N, C, OC)
	o, r := out.F, res.F
	if c.gemmEpiBands(false, N, OC, C, inp.F, C, weight.F, OC, o, OC, gemmEpilogue{bias: bb, res: r, ldr: OC}) {
		return
	}
	c.parallelFor(N, OC/2, func(lo, hi int) {
		if bb == nil {
			copy(o[lo*OC:hi*OC], r[lo*OC:hi*OC])
			return
		}
		for i := lo; i < hi; i++ {
			oo, rr := o[i*OC:i*OC+OC], r[i*OC:i*OC+OC]
			for j, b := range bb {
				oo[j] = rr[j] + b
			}
		}
	})
	c.Gemm(false, false, N, OC, C, 1, inp, C, weight, OC, 1, out, OC)
}

// matmulGeluForward implements geluMatmuler: the packed sgemm's tile store
// adds the bias, stores pre and GELU's output; elsewhere the product and
// GeluForward as two ops.
func (c *CPU) matmulGeluForward(pre, out, inp, weight, bias Tensor, N, C, OC int) {
	need(pre, N*OC, "MatmulGeluForward pre")
	bb := checkLinear("MatmulGeluForward", out, inp, weight, bias, N, C, OC)
	if c.gemmEpiBands(false, N, OC, C, inp.F, C, weight.F, OC, pre.F, OC, gemmEpilogue{bias: bb, gout: out.F, ldg: OC, gelu: true}) {
		return
	}
	MatmulForward(c, pre, inp, weight, bias, N, C, OC)
	c.GeluForward(out, pre, N*OC)
}

// matmulGeluBackward implements geluMatmulBackwarder: dpre = (dout @ weight^T)
// with GELU's derivative applied in the packed sgemm's tile store (elsewhere
// the product, then geluBackwardSet in place), then the weight and bias
// gradients as MatmulBackward.
func (c *CPU) matmulGeluBackward(dpre, dweight, dbias, dout, inp, weight, pre Tensor, N, C, OC int) {
	need(dpre, N*C, "MatmulGeluBackwardOverwrite dpre")
	need(pre, N*C, "MatmulGeluBackwardOverwrite pre")
	need(dout, N*OC, "MatmulGeluBackwardOverwrite dout")
	need(weight, C*OC, "MatmulGeluBackwardOverwrite weight")
	if !c.gemmEpiBands(true, N, C, OC, dout.F, OC, weight.F, OC, dpre.F, C, gemmEpilogue{dgx: pre.F, ldx: C}) {
		c.Gemm(false, true, N, C, OC, 1, dout, OC, weight, OC, 0, dpre, C)
		c.geluBackwardSet(dpre, pre, dpre, N*C)
	}
	MatmulBackward(c, Tensor{}, dweight, dbias, dout, inp, weight, N, C, OC)
}

// crossEntropyInPlacer marks a device whose crossEntropyFused may overwrite
// the logits with dlogits.
type crossEntropyInPlacer interface {
	crossEntropyInPlace()
}

// CrossEntropyInPlace reports whether CrossEntropyForwardBackward on d may be
// given the logits as dlogits (the gradient then replaces them, and the (N,V)
// buffer a separate dlogits needs is saved: 206 MB at GPT-2's vocabulary and
// 1024 rows).
func CrossEntropyInPlace(d Device) bool {
	_, ok := d.(crossEntropyInPlacer)
	return ok
}

// crossEntropyInPlace implements crossEntropyInPlacer: each row is read (its
// max, its target's logit) before its gradient is written, element by element
// after the value it replaces.
func (c *CPU) crossEntropyInPlace() {}

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
	// Rows in blocks of 16 claimed from both ends (each row is its own).
	c.parallelMeet(N, 16, 25*V, func(lo, hi int) {
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
