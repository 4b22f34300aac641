package policy

import (
	"fmt"

	"github.com/troupe-rl/troupe/kernels"
)

// carver hands out consecutive views of one device buffer, so a whole set of
// activations is a single allocation. With buf empty it only counts (a dry run
// that sizes the buffer).
type carver struct {
	buf kernels.Tensor
	off int
}

func (c *carver) take(n int) kernels.Tensor {
	off := c.off
	c.off += n
	if c.buf.Empty() {
		return kernels.Tensor{}
	}
	return c.buf.Slice(off, n)
}

// grow returns buf if it holds at least n floats, else a fresh zeroed one (the old
// one freed).
func grow(dev kernels.Device, buf kernels.Tensor, n int) kernels.Tensor {
	if buf.N >= n {
		return buf
	}
	if !buf.Empty() {
		dev.Free(buf)
	}
	return dev.Alloc(n)
}

// layerActs is one block's saved activations for N = B*T rows.
type layerActs struct {
	ln1, ln1Mean, ln1Rstd kernels.Tensor // (N,C), (N), (N): ln_1 output and stats
	qkv                   kernels.Tensor // (N,3C) c_attn output
	att                   kernels.Tensor // (B,NH,T,T) softmax weights
	atty                  kernels.Tensor // (N,C) attention output, heads concatenated
	res2                  kernels.Tensor // (N,C) residual after attention
	ln2, ln2Mean, ln2Rstd kernels.Tensor // (N,C), (N), (N)
	fch, fchGelu          kernels.Tensor // (N,4C) c_fc output, after gelu_new
	res3                  kernels.Tensor // (N,C) residual after the MLP (the block's output)
}

// trainActs is everything Forward saves for backward, plus backward's scratch
// (llm.c's ActivationTensors and the activation half of its gradients). The
// projection outputs are written straight into the residual buffers, so they
// take no memory of their own.
type trainActs struct {
	B, T   int            // shape of the last forward
	logits bool           // the last forward computed logits (Forward, not ForwardHidden)
	buf    kernels.Tensor // backing store for every view below but the head's
	head   kernels.Tensor // backing store for logitsT, losses
	dhead  kernels.Tensor // backing store for dlogits, allocated on first need (dlogitsFor)
	tokens []int32        // (N) copy of the input ids, for the embedding backward
	pos    []int32        // (N) 0..T-1 per row

	encoded               kernels.Tensor // (N,C) wte[tok] + wpe[pos]
	layers                []layerActs
	lnf, lnfMean, lnfRstd kernels.Tensor // (N,C), (N), (N): final LayerNorm
	logitsT               kernels.Tensor // (N,V)
	losses                kernels.Tensor // (N) per-token cross-entropy
	dres, dln             kernels.Tensor // (N,C) residual-stream gradient; C-wide scratch
	dqkv                  kernels.Tensor // (N,3C)
	dfch, dfchGelu        kernels.Tensor // (N,4C); dfchGelu only where MatmulGeluBackwardOverwrite needs scratch
}

// carveHead lays out the LM head's tensors, which only Forward needs (a reward
// or value head on ForwardHidden does without these (N,V) buffers).
func (a *trainActs) carveHead(c *carver, N, V int) {
	a.logitsT = c.take(N * V)
	a.losses = c.take(N)
}

// carve lays the views out for (B,T); with c.buf empty it only sizes them.
// geluTmp: the device needs dfchGelu as MatmulGeluBackwardOverwrite's scratch.
func (a *trainActs) carve(c *carver, cfg Config, B, T int, geluTmp bool) {
	N, C, NH := B*T, cfg.Channels, cfg.NumHeads
	a.encoded = c.take(N * C)
	a.layers = a.layers[:0]
	for l := 0; l < cfg.NumLayers; l++ {
		var la layerActs
		la.ln1, la.ln1Mean, la.ln1Rstd = c.take(N*C), c.take(N), c.take(N)
		la.qkv = c.take(N * 3 * C)
		la.att = c.take(B * NH * T * T)
		la.atty = c.take(N * C)
		la.res2 = c.take(N * C)
		la.ln2, la.ln2Mean, la.ln2Rstd = c.take(N*C), c.take(N), c.take(N)
		la.fch, la.fchGelu = c.take(N*4*C), c.take(N*4*C)
		la.res3 = c.take(N * C)
		a.layers = append(a.layers, la)
	}
	a.lnf, a.lnfMean, a.lnfRstd = c.take(N*C), c.take(N), c.take(N)
	a.dres, a.dln = c.take(N*C), c.take(N*C)
	a.dqkv = c.take(N * 3 * C)
	a.dfch = c.take(N * 4 * C)
	a.dfchGelu = kernels.Tensor{}
	if geluTmp {
		a.dfchGelu = c.take(N * 4 * C)
	}
}

// trainActsFor returns the model's training activations laid out for (B,T),
// reusing the buffer when it is big enough.
func (m *Model) trainActsFor(B, T int) *trainActs {
	if m.train == nil {
		m.train = &trainActs{}
	}
	a := m.train
	var dry carver
	geluTmp := kernels.MatmulGeluBackwardNeedsTmp(m.Dev)
	a.carve(&dry, m.Config, B, T, geluTmp)
	a.buf = grow(m.Dev, a.buf, dry.off)
	a.carve(&carver{buf: a.buf}, m.Config, B, T, geluTmp)
	a.B, a.T = B, T
	N := B * T
	if cap(a.tokens) < N {
		a.tokens = make([]int32, N)
		a.pos = make([]int32, N)
	}
	a.tokens, a.pos = a.tokens[:N], a.pos[:N]
	return a
}

// checkTokens panics on a programmer error: wrong length or an id out of range.
func (m *Model) checkTokens(tokens []int32, B, T int) {
	if B <= 0 || T <= 0 || T > m.Config.MaxSeqLen || len(tokens) != B*T {
		panic(fmt.Errorf("%w: %d tokens for B=%d T=%d (max T %d)", kernels.ErrShape, len(tokens), B, T, m.Config.MaxSeqLen))
	}
	V := int32(m.Config.VocabSize)
	for i, t := range tokens {
		if t < 0 || t >= V {
			panic(fmt.Errorf("%w: token %d at %d out of range [0,%d)", kernels.ErrShape, t, i, V))
		}
	}
}

// ForwardHidden runs the transformer on B rows of T tokens (positions 0..T-1 in
// every row) and returns the final LayerNorm's output (B*T, C). It saves the
// activations for BackwardHidden. The returned tensor is a view into the model's
// working memory, valid until the next forward.
func (m *Model) ForwardHidden(tokens []int32, B, T int) kernels.Tensor {
	m.checkTokens(tokens, B, T)
	d, cfg := m.Dev, m.Config
	N, C, NH := B*T, cfg.Channels, cfg.NumHeads
	a := m.trainActsFor(B, T)
	a.logits = false
	copy(a.tokens, tokens)
	for i := range a.pos {
		a.pos[i] = int32(i % T)
	}
	L := m.Layout
	d.EncoderForward(a.encoded, a.tokens, a.pos, m.Param(L.Wte), m.Param(L.Wpe), N, C)
	res := a.encoded
	for l, lp := range L.Layers {
		la := &a.layers[l]
		d.LayerNormForward(la.ln1, la.ln1Mean, la.ln1Rstd, res, m.Param(lp.Ln1W), m.Param(lp.Ln1B), N, C, cfg.LayerNormEps)
		kernels.MatmulForward(d, la.qkv, la.ln1, m.Param(lp.AttnW), m.Param(lp.AttnB), N, C, 3*C)
		d.AttentionForward(la.atty, la.att, la.qkv, B, T, C, NH)
		kernels.MatmulForwardResidual(d, la.res2, la.atty, m.Param(lp.AttnProjW), m.Param(lp.AttnProjB), res, N, C, C)
		d.LayerNormForward(la.ln2, la.ln2Mean, la.ln2Rstd, la.res2, m.Param(lp.Ln2W), m.Param(lp.Ln2B), N, C, cfg.LayerNormEps)
		kernels.MatmulGeluForward(d, la.fch, la.fchGelu, la.ln2, m.Param(lp.FcW), m.Param(lp.FcB), N, C, 4*C)
		kernels.MatmulForwardResidual(d, la.res3, la.fchGelu, m.Param(lp.FcProjW), m.Param(lp.FcProjB), la.res2, N, 4*C, C)
		res = la.res3
	}
	d.LayerNormForward(a.lnf, a.lnfMean, a.lnfRstd, res, m.Param(L.LnfW), m.Param(L.LnfB), N, C, cfg.LayerNormEps)
	return a.lnf
}

// Forward runs ForwardHidden and the LM head tied to wte, returning the logits
// (B*T, V); a view valid until the next forward. Saves activations for BackwardLogits.
func (m *Model) Forward(tokens []int32, B, T int) kernels.Tensor {
	h := m.ForwardHidden(tokens, B, T)
	a := m.train
	m.carveHead(a, B*T, m.Config.VocabSize)
	kernels.MatmulTransForward(m.Dev, a.logitsT, h, m.Param(m.Layout.Wte), B*T, m.Config.Channels, m.Config.VocabSize)
	a.logits = true
	return a.logitsT
}

// carveHead lays out a.head for N rows of V logits and N losses (V may be 0:
// the losses alone), growing it as needed.
func (m *Model) carveHead(a *trainActs, N, V int) {
	var dry carver
	a.carveHead(&dry, N, V)
	a.head = grow(m.Dev, a.head, dry.off)
	a.carveHead(&carver{buf: a.head}, N, V)
}

// dlogitsFor returns an (N,V) gradient buffer for the logits, a view of
// a.dhead grown on first need: pretraining and SFT on a device whose
// cross-entropy works in place never allocate it (the gradient replaces the
// logits), only the RL head's log-prob and entropy backward does.
func (m *Model) dlogitsFor(a *trainActs, N, V int) kernels.Tensor {
	a.dhead = grow(m.Dev, a.dhead, N*V)
	return a.dhead.Slice(0, N*V)
}

// ReleaseWorkspace frees the activation and KV-cache memory kept between calls
// (on an accelerator it is most of the memory besides the parameters); the next
// call allocates afresh. Params, Grads and optimizer state are untouched.
func (m *Model) ReleaseWorkspace() {
	if a := m.train; a != nil {
		for _, t := range []kernels.Tensor{a.buf, a.head, a.dhead} {
			if !t.Empty() {
				m.Dev.Free(t)
			}
		}
		m.train = nil
	}
	if a := m.infer; a != nil {
		if !a.buf.Empty() {
			m.Dev.Free(a.buf)
		}
		m.infer = nil
	}
	if p := m.panels; p != nil {
		if !p.buf.Empty() {
			m.Dev.Free(p.buf)
		}
		m.panels = nil
	}
	m.scoreActs = nil // host memory of single-threaded CPU views: the GC's
}
