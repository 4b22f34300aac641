package policy

import (
	"errors"
	"fmt"

	"github.com/troupe-rl/troupe/kernels"
)

// ErrNoForward is the panic value when a backward is called without its forward.
var ErrNoForward = errors.New("policy: backward without a matching forward")

// ZeroGrad sets every gradient to zero, allocating Grads on first use.
func (m *Model) ZeroGrad() {
	if m.Grads.Empty() {
		m.Grads = m.Dev.Alloc(m.Layout.Total)
		return
	}
	m.Dev.Zero(m.Grads)
}

func (m *Model) ensureGrads() {
	if m.Grads.Empty() {
		m.Grads = m.Dev.Alloc(m.Layout.Total)
	}
}

// BackwardLogits adds into m.Grads the gradient of the parameters given dlogits
// (B*T, V), the upstream gradient of the logits of the last Forward.
func (m *Model) BackwardLogits(dlogits kernels.Tensor) {
	a := m.train
	if a == nil || !a.logits {
		panic(ErrNoForward)
	}
	m.ensureGrads()
	N, C, V := a.B*a.T, m.Config.Channels, m.Config.VocabSize
	if dlogits.N != N*V {
		panic(fmt.Errorf("%w: dlogits has %d values, want %d", kernels.ErrShape, dlogits.N, N*V))
	}
	kernels.MatmulTransBackwardOverwrite(m.Dev, a.dln, m.Grad(m.Layout.Wte), dlogits, a.lnf, m.Param(m.Layout.Wte), N, C, V)
	m.backwardFromHidden(a.dln)
}

// BackwardHidden adds into m.Grads the gradient of the parameters given dhidden
// (B*T, C), the upstream gradient of the last ForwardHidden's (or Forward's) output.
func (m *Model) BackwardHidden(dhidden kernels.Tensor) {
	a := m.train
	if a == nil {
		panic(ErrNoForward)
	}
	m.ensureGrads()
	if N, C := a.B*a.T, m.Config.Channels; dhidden.N != N*C {
		panic(fmt.Errorf("%w: dhidden has %d values, want %d", kernels.ErrShape, dhidden.N, N*C))
	}
	m.backwardFromHidden(dhidden)
}

// backwardFromHidden runs the blocks backwards from the gradient of the final
// LayerNorm's output. dlnf may alias a.dln: it is read only by the first op.
func (m *Model) backwardFromHidden(dlnf kernels.Tensor) {
	d, a, L := m.Dev, m.train, m.Layout
	B, T := a.B, a.T
	N, C, NH := B*T, m.Config.Channels, m.Config.NumHeads
	last := a.encoded
	if n := len(a.layers); n > 0 {
		last = a.layers[n-1].res3
	}
	d.Zero(a.dres)
	d.LayerNormBackward(a.dres, m.Grad(L.LnfW), m.Grad(L.LnfB), dlnf, last, m.Param(L.LnfW), a.lnfMean, a.lnfRstd, N, C)
	// a.dres now holds dL/d(residual) at the current depth; each op adds into it
	// what flows back around its residual branch.
	for l := len(L.Layers) - 1; l >= 0; l-- {
		lp, la := L.Layers[l], &a.layers[l]
		resIn := a.encoded
		if l > 0 {
			resIn = a.layers[l-1].res3
		}
		// MLP: res3 = res2 + c_proj(gelu(c_fc(ln_2(res2))))
		kernels.MatmulGeluBackwardOverwrite(d, a.dfch, a.dfchGelu, m.Grad(lp.FcProjW), m.Grad(lp.FcProjB), a.dres, la.fchGelu, m.Param(lp.FcProjW), la.fch, N, 4*C, C)
		kernels.MatmulBackwardOverwrite(d, a.dln, m.Grad(lp.FcW), m.Grad(lp.FcB), a.dfch, la.ln2, m.Param(lp.FcW), N, C, 4*C)
		d.LayerNormBackward(a.dres, m.Grad(lp.Ln2W), m.Grad(lp.Ln2B), a.dln, la.res2, m.Param(lp.Ln2W), la.ln2Mean, la.ln2Rstd, N, C)
		// Attention: res2 = resIn + c_proj(attn(c_attn(ln_1(resIn))))
		// a.dln as d(atty), overwritten
		kernels.MatmulBackwardOverwrite(d, a.dln, m.Grad(lp.AttnProjW), m.Grad(lp.AttnProjB), a.dres, la.atty, m.Param(lp.AttnProjW), N, C, C)
		kernels.AttentionBackwardOverwrite(d, a.dqkv, a.dln, la.qkv, la.att, B, T, C, NH)
		// a.dln as d(ln1), overwritten
		kernels.MatmulBackwardOverwrite(d, a.dln, m.Grad(lp.AttnW), m.Grad(lp.AttnB), a.dqkv, la.ln1, m.Param(lp.AttnW), N, C, 3*C)
		d.LayerNormBackward(a.dres, m.Grad(lp.Ln1W), m.Grad(lp.Ln1B), a.dln, resIn, m.Param(lp.Ln1W), la.ln1Mean, la.ln1Rstd, N, C)
	}
	d.EncoderBackward(m.Grad(L.Wte), m.Grad(L.Wpe), a.dres, a.tokens, a.pos, N, C)
}
