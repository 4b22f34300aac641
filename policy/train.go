package policy

import (
	"fmt"

	"github.com/troupe-rl/troupe/kernels"
)

// LossAndBackward runs the model on B rows of T tokens, the masked mean
// cross-entropy against targets (B*T next-token ids; mask (B*T) weights in [0,1],
// nil = all ones), and the backward pass, ADDING into m.Grads so that callers can
// accumulate micro-batches (call ZeroGrad first). Returns the loss.
func (m *Model) LossAndBackward(tokens, targets []int32, mask []float32, B, T int) float32 {
	d := m.Dev
	N, C, V := B*T, m.Config.Channels, m.Config.VocabSize
	h := m.ForwardHidden(tokens, B, T)
	m.checkTargets(targets, mask, N)
	a := m.train
	m.ensureGrads()
	// The LM head, the loss and the head's backward in one call. A device that
	// fuses them works on scratch of its own (no (N,V) logits here); others form
	// the logits in a.logitsT and their gradient over them where the
	// cross-entropy works in place, else in dlogitsFor's buffer.
	var logits, dlogits kernels.Tensor
	if kernels.LMHeadFused(d) {
		m.carveHead(a, N, 0)
	} else {
		m.carveHead(a, N, V)
		logits, dlogits = a.logitsT, a.logitsT
		if !kernels.CrossEntropyInPlace(d) {
			dlogits = m.dlogitsFor(a, N, V)
		}
	}
	loss := kernels.LMHeadLossAndBackward(d, a.losses, a.dln, m.Grad(m.Layout.Wte), logits, dlogits,
		h, m.Param(m.Layout.Wte), targets, mask, 1, N, C, V)
	m.backwardFromHidden(a.dln)
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
