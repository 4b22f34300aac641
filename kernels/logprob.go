package kernels

import (
	"fmt"
	"math"
)

// LogProbForward implements Device: logp (N) [i] = log softmax(logits[i,:])[targets[i]]
// for logits (N,V); targets must lie in [0,V). Parallel over rows; each row is
// shifted by its max so exp never overflows, and the sum of exps accumulates in
// float64.
func (c *CPU) LogProbForward(logp, logits Tensor, targets []int32, N, V int) {
	need(logp, N, "LogProbForward logp")
	need(logits, N*V, "LogProbForward logits")
	checkTargets(targets, N, V)
	c.parallelFor(N, 20*V, func(lo, hi int) {
		if logProbVector(logp.F[lo:hi], logits.F[lo*V:hi*V], targets[lo:hi], hi-lo, V) {
			return
		}
		for i := lo; i < hi; i++ {
			x := logits.F[i*V : i*V+V]
			mx, lse := logSumExp(x)
			logp.F[i] = (x[targets[i]] - mx) - lse
		}
	})
}

// LogProbBackward implements Device: dlogits (N,V) [i,:] += dlogp[i] *
// (onehot(targets[i]) - softmax(logits[i,:])); rows with dlogp[i] == 0 are skipped.
func (c *CPU) LogProbBackward(dlogits, logits Tensor, targets []int32, dlogp []float32, N, V int) {
	need(dlogits, N*V, "LogProbBackward dlogits")
	need(logits, N*V, "LogProbBackward logits")
	checkTargets(targets, N, V)
	if len(dlogp) < N {
		panic(fmt.Errorf("%w: LogProbBackward has %d dlogp for N=%d", ErrShape, len(dlogp), N))
	}
	c.parallelFor(N, 25*V, func(lo, hi int) {
		if logProbBackwardVector(dlogits.F[lo*V:hi*V], logits.F[lo*V:hi*V], targets[lo:hi], dlogp[lo:hi], hi-lo, V) {
			return
		}
		for i := lo; i < hi; i++ {
			g := dlogp[i]
			if g == 0 {
				continue
			}
			x, dx := logits.F[i*V:i*V+V], dlogits.F[i*V:i*V+V]
			mx, lse := logSumExp(x)
			// softmax_j = exp(x_j - mx - lse): one exp per value, no division.
			shift := mx + lse
			for j, v := range x {
				dx[j] -= g * exp32(v-shift)
			}
			dx[targets[i]] += g
		}
	})
}

// logSumExp returns the row max mx and lse = log sum exp(x - mx), so that
// log softmax(x)_j = x_j - mx - lse.
func logSumExp(x []float32) (mx, lse float32) {
	mx = x[0]
	for _, v := range x {
		mx = max(mx, v)
	}
	var s0, s1 float64
	j := 0
	for ; j+2 <= len(x); j += 2 {
		s0 += float64(exp32(x[j] - mx))
		s1 += float64(exp32(x[j+1] - mx))
	}
	for ; j < len(x); j++ {
		s0 += float64(exp32(x[j] - mx))
	}
	return mx, float32(math.Log(s0 + s1))
}

// checkTargets panics unless targets holds N ids in [0,V).
func checkTargets(targets []int32, N, V int) {
	if len(targets) < N || V <= 0 {
		panic(fmt.Errorf("%w: %d targets for N=%d, V=%d", ErrShape, len(targets), N, V))
	}
	for i, t := range targets[:N] {
		if t < 0 || int(t) >= V {
			panic(fmt.Errorf("%w: target %d of row %d is outside [0,%d)", ErrShape, t, i, V))
		}
	}
}
