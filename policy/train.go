package policy

import (
	"fmt"

	"github.com/troupe-rl/troupe/kernels"
)

// LossAndBackward runs Forward on B rows of T tokens, the masked mean
// cross-entropy against targets (B*T next-token ids; mask (B*T) weights in [0,1],
// nil = all ones), and the backward pass, ADDING into m.Grads so that callers can
// accumulate micro-batches (call ZeroGrad first). Returns the loss.
func (m *Model) LossAndBackward(tokens, targets []int32, mask []float32, B, T int) float32 {
	d := m.Dev
	N, C, V := B*T, m.Config.Channels, m.Config.VocabSize
	if kernels.LMHeadFused(d) {
		// The device runs the LM head, the loss and the head's backward in one
		// op on scratch of its own: no (N,V) logits here.
		h := m.ForwardHidden(tokens, B, T)
		m.checkTargets(targets, mask, N)
		a := m.train
		m.carveHead(a, N, 0)
		m.ensureGrads()
		loss := kernels.LMHeadLossAndBackward(d, a.losses, a.dln, m.Grad(m.Layout.Wte), kernels.Tensor{}, kernels.Tensor{},
			h, m.Param(m.Layout.Wte), targets, mask, 1, N, C, V)
		m.backwardFromHidden(a.dln)
		return loss
	}
	logits := m.Forward(tokens, B, T)
	a := m.train
	m.checkTargets(targets, mask, N)
	// One pass per row: the losses and dlogits (overwritten, no zeroing), in
	// place of the logits where the device can (they are not read again).
	dlogits, inPlace := logits, kernels.CrossEntropyInPlace(d)
	if !inPlace {
		dlogits = m.dlogitsFor(a, N, V)
	}
	loss := kernels.CrossEntropyForwardBackward(d, a.losses, dlogits, logits, targets, mask, 1, N, V)
	m.BackwardLogits(dlogits)
	if inPlace {
		a.logits = false // replaced by their gradient: nothing may read them now
	}
	return loss
}

// Loss is LossAndBackward without the backward pass (evaluation).
func (m *Model) Loss(tokens, targets []int32, mask []float32, B, T int) float32 {
	logits := m.Forward(tokens, B, T)
	N := B * T
	m.checkTargets(targets, mask, N)
	return kernels.CrossEntropyForward(m.Dev, m.train.losses, logits, targets, mask, N, m.Config.VocabSize)
}

// checkTargets panics on a programmer error in the targets or mask. Targets must
// be valid ids even where the mask is 0 (use any id, e.g. 0, for padding).
func (m *Model) checkTargets(targets []int32, mask []float32, N int) {
	if len(targets) != N || (mask != nil && len(mask) != N) {
		panic(fmt.Errorf("%w: %d targets and %d mask values for %d rows", kernels.ErrShape, len(targets), len(mask), N))
	}
	V := int32(m.Config.VocabSize)
	for i, t := range targets {
		if t < 0 || t >= V {
			panic(fmt.Errorf("%w: target %d at %d out of range [0,%d)", kernels.ErrShape, t, i, V))
		}
	}
}
