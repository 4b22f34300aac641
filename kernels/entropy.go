package kernels

import (
	"fmt"
	"math"
)

// EntropyForward implements Device: ent (N) [i] = -Σ_j p_ij log p_ij with
// p_i = softmax(logits[i,:]) for logits (N,V). Parallel over rows, one exp per
// value: see softmaxEntropy.
func (c *CPU) EntropyForward(ent, logits Tensor, N, V int) {
	need(ent, N, "EntropyForward ent")
	need(logits, N*V, "EntropyForward logits")
	if V <= 0 {
		panic(fmt.Errorf("%w: EntropyForward with V=%d", ErrShape, V))
	}
	c.parallelFor(N, 20*V, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			_, _, h := softmaxEntropy(logits.F[i*V : i*V+V])
			ent.F[i] = float32(h)
		}
	})
}

// EntropyBackward implements Device: dlogits (N,V) [i,j] += dent[i] *
// (-p_ij (log p_ij + ent_i)); rows with dent[i] == 0 are skipped. The entropy
// and the log-normaliser are recomputed from the logits (one more pass of exps
// per row) rather than saved, so the op needs nothing from its forward.
func (c *CPU) EntropyBackward(dlogits, logits Tensor, dent []float32, N, V int) {
	need(dlogits, N*V, "EntropyBackward dlogits")
	need(logits, N*V, "EntropyBackward logits")
	if len(dent) < N || V <= 0 {
		panic(fmt.Errorf("%w: EntropyBackward has %d dent for N=%d, V=%d", ErrShape, len(dent), N, V))
	}
	c.parallelFor(N, 45*V, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := dent[i]
			if g == 0 {
				continue
			}
			x, dx := logits.F[i*V:i*V+V], dlogits.F[i*V:i*V+V]
			mx, lse, h := softmaxEntropy(x)
			shift := mx + float32(lse)
			ent := float32(h)
			for j, v := range x {
				// lp = log p_j; a -Inf logit has p = 0 and adds 0, not 0*Inf = NaN.
				lp := v - shift
				if p := exp32(lp); p != 0 {
					dx[j] -= g * p * (lp + ent)
				}
			}
		}
	})
}

// softmaxEntropy returns the row max mx, lse = log Σ exp(x - mx) and the
// entropy of softmax(x). With e_j = exp(x_j - mx), s = Σ e_j and
// t = Σ e_j (mx - x_j), all in float64: H = -Σ p_j log p_j = log s + t/s. Both
// terms are >= 0, so nothing cancels, and the max shift keeps exp finite.
func softmaxEntropy(x []float32) (mx float32, lse, h float64) {
	mx = x[0]
	for _, v := range x {
		mx = max(mx, v)
	}
	var s, t float64
	for _, v := range x {
		d := v - mx
		if e := float64(exp32(d)); e != 0 { // a -Inf logit adds 0, not 0*Inf
			s += e
			t -= e * float64(d)
		}
	}
	lse = math.Log(s)
	return mx, lse, lse + t/s
}
