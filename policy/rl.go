package policy

import (
	"fmt"
	"math"

	"github.com/troupe-rl/troupe/kernels"
)

// The policy-gradient path: per-token log-probs (and entropies) under the
// sampling temperature with activations kept, and the backward of any linear
// combination of them. PPO's loss is computed on the host from these; only its
// per-token coefficients come back.

// rlForward is what BackwardLogProbs needs from the ForwardLogProbs before it.
type rlForward struct {
	acts    *trainActs // m.train at the forward: a ReleaseWorkspace in between is caught
	B, T    int
	targets []int32      // (N) copy of the targets
	scale   float32      // the logits were multiplied by this (1/temperature, or 1)
	coef    [2][]float32 // (N) host scratch for the scaled dlogp and dent
}

// rlState returns m's rlForward, creating it (zero) on first use.
func (m *Model) rlState() *rlForward {
	if m.rl == nil {
		m.rl = &rlForward{}
	}
	return m.rl
}

// ForwardLogProbs runs the training forward on tokens (B,T) (saving activations like Forward),
// scales the logits by 1/temperature (temperature 0 or 1 = none) and returns, on the host,
// logp[i] = log softmax(logits_i/temperature)[targets[i]] and, when wantEntropy, ent[i] = entropy of that
// distribution (else nil), for all N = B*T rows.
//
// The scaling is LogProbsT's (logits times float32(1/temperature)), so the two
// agree on the same sequences. Any other forward on m before BackwardLogProbs
// overwrites what it needs.
func (m *Model) ForwardLogProbs(tokens, targets []int32, B, T int, temperature float32, wantEntropy bool) (logp, ent []float32) {
	if !(temperature >= 0) || math.IsInf(float64(temperature), 1) {
		panic(fmt.Errorf("policy: ForwardLogProbs temperature %v, want a finite value >= 0", temperature))
	}
	N, V := B*T, m.Config.VocabSize
	m.checkTargets(targets, nil, N)
	logits := m.Forward(tokens, B, T)
	a, d := m.train, m.Dev
	scale := float32(1)
	if temperature > 0 && temperature != 1 {
		scale = 1 / temperature
		d.Scale(logits, scale)
	}
	d.LogProbForward(a.losses, logits, targets, N, V)
	logp = make([]float32, N)
	d.Download(logp, a.losses)
	if wantEntropy {
		// The log-probs are on the host now: a.losses holds the entropies.
		e := a.losses.Slice(0, N)
		d.EntropyForward(e, logits, N, V)
		ent = make([]float32, N)
		d.Download(ent, e)
	}
	st := m.rlState()
	st.acts, st.B, st.T, st.scale = a, B, T, scale
	st.targets = append(st.targets[:0], targets...)
	return logp, ent
}

// BackwardLogProbs accumulates into m.Grads the gradient of Σ_i dlogp[i]*logp[i] + dent[i]*ent[i]
// (dent may be nil) through the temperature scaling and the whole model, after ForwardLogProbs with the same B,T.
// Rows with zero coefficients cost nothing in the head kernels.
//
// With z = s·logits (s = 1/temperature), d/dlogits = s · d/dz, so the
// coefficients are multiplied by s on the host (N values) rather than the
// (N,V) gradient on the device.
func (m *Model) BackwardLogProbs(dlogp, dent []float32) {
	a, st := m.train, m.rlState()
	if a == nil || st.acts != a || !a.logits || a.B != st.B || a.T != st.T {
		panic(ErrNoForward)
	}
	N, V := a.B*a.T, m.Config.VocabSize
	if len(dlogp) != N || (dent != nil && len(dent) != N) {
		panic(fmt.Errorf("%w: BackwardLogProbs has %d dlogp and %d dent for %d rows", kernels.ErrShape, len(dlogp), len(dent), N))
	}
	d := m.Dev
	dlogits := m.dlogitsFor(a, N, V)
	d.Zero(dlogits)
	d.LogProbBackward(dlogits, a.logitsT, st.targets, st.scaled(0, dlogp), N, V)
	if dent != nil {
		d.EntropyBackward(dlogits, a.logitsT, st.scaled(1, dent), N, V)
	}
	m.BackwardLogits(dlogits)
}

// scaled returns c times st.scale (c itself when the scale is 1) in st.coef[k]:
// one buffer per coefficient vector, so a device that uploads the first one
// asynchronously never sees it overwritten by the second.
func (st *rlForward) scaled(k int, c []float32) []float32 {
	if st.scale == 1 {
		return c
	}
	out := append(st.coef[k][:0], c...)
	for i := range out {
		out[i] *= st.scale
	}
	st.coef[k] = out
	return out
}
