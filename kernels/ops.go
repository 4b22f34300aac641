package kernels

import "math"

// Composite ops built on Device primitives, so every backend shares them.

// MatmulForward: out (N,OC) = inp (N,C) @ weight (C,OC) + bias (OC).
// weight is stored [in, out] as Hugging Face's Conv1D stores it; bias may be empty.
func MatmulForward(d Device, out, inp, weight, bias Tensor, N, C, OC int) {
	if f, ok := d.(biasMatmuler); ok && !bias.Empty() {
		f.matmulBiasForward(out, inp, weight, bias, N, C, OC)
		return
	}
	d.Gemm(false, false, N, OC, C, 1, inp, C, weight, OC, 0, out, OC)
	if !bias.Empty() {
		d.AddBias(out, bias, N, OC)
	}
}

// MatmulBackward adds dinp (N,C) += dout @ weight^T, dweight (C,OC) += inp^T @ dout,
// dbias (OC) += column sums of dout. Any gradient output may be empty to skip it.
func MatmulBackward(d Device, dinp, dweight, dbias, dout, inp, weight Tensor, N, C, OC int) {
	if !dinp.Empty() {
		d.Gemm(false, true, N, C, OC, 1, dout, OC, weight, OC, 1, dinp, C)
	}
	if !dweight.Empty() && !dbias.Empty() {
		if f, ok := d.(weightBiasGrader); ok && f.weightBiasGrad(dweight, dbias, dout, inp, N, C, OC) {
			return
		}
	}
	if !dweight.Empty() {
		d.Gemm(true, false, C, OC, N, 1, inp, C, dout, OC, 1, dweight, OC)
	}
	if !dbias.Empty() {
		d.BiasBackward(dbias, dout, N, OC)
	}
}

// weightBiasGrader adds a linear's weight and bias gradients in one go
// (dweight += inp^T @ dout, dbias += column sums of dout); false when it does
// not take this shape (MatmulBackward then runs Gemm and BiasBackward).
type weightBiasGrader interface {
	weightBiasGrad(dweight, dbias, dout, inp Tensor, N, C, OC int) bool
}

// MatmulTransForward: out (N,OC) = inp (N,C) @ weight^T with weight stored (OC,C),
// as the LM head uses the tied token embedding wte (V,C).
func MatmulTransForward(d Device, out, inp, weight Tensor, N, C, OC int) {
	d.Gemm(false, true, N, OC, C, 1, inp, C, weight, C, 0, out, OC)
}

// MatmulTransBackward adds dinp (N,C) += dout @ weight and dweight (OC,C) += dout^T @ inp.
func MatmulTransBackward(d Device, dinp, dweight, dout, inp, weight Tensor, N, C, OC int) {
	if !dinp.Empty() {
		d.Gemm(false, false, N, C, OC, 1, dout, OC, weight, C, 1, dinp, C)
	}
	if !dweight.Empty() {
		d.Gemm(true, false, OC, C, N, 1, dout, OC, inp, C, 1, dweight, C)
	}
}

// CrossEntropyForward writes the per-token losses -log p(targets[i]) into losses (N)
// and returns their mean weighted by mask (mask[i] in [0,1]; nil mask = all ones).
// Rows whose mask is 0 (padding, prompt tokens in SFT) do not count.
func CrossEntropyForward(d Device, losses, logits Tensor, targets []int32, mask []float32, N, V int) float32 {
	d.LogProbForward(losses, logits, targets, N, V)
	d.Scale(losses, -1)
	host := make([]float32, N)
	d.Download(host, losses)
	return maskedMean(host, mask)
}

// CrossEntropyBackward adds into dlogits (N,V) the gradient of the masked mean loss
// that CrossEntropyForward returns, times dloss.
func CrossEntropyBackward(d Device, dlogits, logits Tensor, targets []int32, mask []float32, dloss float32, N, V int) {
	dlogp, ok := meanLossGrad(mask, dloss, N)
	if !ok {
		return
	}
	d.LogProbBackward(dlogits, logits, targets, dlogp, N, V)
}

// maskedMean is the mean of losses weighted by mask (nil: all ones); 0 when
// every weight is 0.
func maskedMean(losses, mask []float32) float32 {
	var sum, wsum float64
	for i, l := range losses {
		w := 1.0
		if mask != nil {
			w = float64(mask[i])
		}
		sum += w * float64(l)
		wsum += w
	}
	if wsum == 0 {
		return 0
	}
	return float32(sum / wsum)
}

// meanLossGrad is the gradient of dloss times the masked mean loss with
// respect to each of the N log-probabilities (the losses are their
// negatives): -dloss * mask[i] / sum(mask). ok is false (and dlogp all zero)
// when every weight is 0.
func meanLossGrad(mask []float32, dloss float32, N int) (dlogp []float32, ok bool) {
	dlogp = make([]float32, N)
	wsum := float64(N)
	if mask != nil {
		wsum = 0
		for _, w := range mask[:N] {
			wsum += float64(w)
		}
	}
	if wsum == 0 {
		return dlogp, false
	}
	for i := range dlogp {
		w := float32(1)
		if mask != nil {
			w = mask[i]
		}
		dlogp[i] = -dloss * w / float32(wsum)
	}
	return dlogp, true
}

// ClipGradNorm scales grads so their global L2 norm is at most maxNorm (maxNorm <= 0
// disables clipping) and returns the norm before clipping.
func ClipGradNorm(d Device, grads Tensor, maxNorm float32) float32 {
	norm := math.Sqrt(d.SumSquares(grads))
	ClipToNorm(d, grads, norm, maxNorm)
	return float32(norm)
}

// ClipToNorm is ClipGradNorm for grads whose norm the caller already took.
func ClipToNorm(d Device, grads Tensor, norm float64, maxNorm float32) {
	if maxNorm > 0 && norm > float64(maxNorm) {
		d.Scale(grads, float32(float64(maxNorm)/(norm+1e-6)))
	}
}
