package policy

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/troupe-rl/troupe/kernels"
)

// ErrSequence is wrapped by every error about an input token sequence.
var ErrSequence = errors.New("policy: bad sequence")

// inferBudget bounds the floats of working memory that LogProbs and Generate ask
// for at once (on top of the parameters): 2^25 floats = 128 MiB. A batch that
// needs more is split into chunks; one sequence is never split, so a single long
// sequence of a big model may exceed it. A variable so tests can force chunking.
var inferBudget = 1 << 25

// rowBufs is one block's scratch for N rows in the inference path (no backward):
// the residual stream x is updated in place, so one layer's worth serves all.
type rowBufs struct {
	x, ln, mean, rstd kernels.Tensor // (N,C), (N,C), (N), (N)
	qkv               kernels.Tensor // (N,3C)
	atty, tmp         kernels.Tensor // (N,C)
	fch, fchGelu      kernels.Tensor // (N,4C)
}

func (r *rowBufs) carve(c *carver, N, C int) {
	r.x, r.ln, r.mean, r.rstd = c.take(N*C), c.take(N*C), c.take(N), c.take(N)
	r.qkv = c.take(N * 3 * C)
	r.atty, r.tmp = c.take(N*C), c.take(N*C)
	r.fch, r.fchGelu = c.take(N*4*C), c.take(N*4*C)
}

// rowFloats is what rowBufs.carve takes per row.
func rowFloats(C int) int { return 17*C + 2 }

// first returns the views of the first n rows.
func (r rowBufs) first(n, C int) rowBufs {
	return rowBufs{
		x: r.x.Slice(0, n*C), ln: r.ln.Slice(0, n*C), mean: r.mean.Slice(0, n), rstd: r.rstd.Slice(0, n),
		qkv:  r.qkv.Slice(0, n*3*C),
		atty: r.atty.Slice(0, n*C), tmp: r.tmp.Slice(0, n*C),
		fch: r.fch.Slice(0, n*4*C), fchGelu: r.fchGelu.Slice(0, n*4*C),
	}
}

// inferActs is the inference path's working memory, one buffer carved per use.
type inferActs struct {
	buf kernels.Tensor
	r   rowBufs
	// LogProbs
	att    kernels.Tensor // (B,NH,T,T)
	logits kernels.Tensor // (rows,V)
	logp   kernels.Tensor // (rows)
	// Generate
	kcache, vcache kernels.Tensor // (L,S,Tc,C) per layer (S,Tc,C)
	last           kernels.Tensor // (S,C) the residual rows whose next token is sampled
}

// inferFor carves the model's inference memory with fn, growing the buffer as needed.
func (m *Model) inferFor(fn func(a *inferActs, c *carver)) *inferActs {
	if m.infer == nil {
		m.infer = &inferActs{}
	}
	a := m.infer
	var dry carver
	fn(a, &dry)
	a.buf = grow(m.Dev, a.buf, dry.off)
	fn(a, &carver{buf: a.buf})
	return a
}

// blockCache selects the attention of inferBlocks: full causal attention over B
// rows of T tokens (kcache empty), or cached attention for rows at (slot, pos).
type blockCache struct {
	kcache, vcache kernels.Tensor // (L,S,Tc,C); empty: no cache
	slot, pos      []int32        // (N)
	S, Tc          int
	B, T           int            // full attention: N = B*T
	att            kernels.Tensor // (B,NH,T,T) full attention's scratch
	panels         *panelSet      // the block weights panel-packed, or nil
}

// inferBlocks runs every transformer block over the N rows of r.x in place.
func (m *Model) inferBlocks(r rowBufs, N int, bc *blockCache) {
	d, cfg := m.Dev, m.Config
	C, NH, eps := cfg.Channels, cfg.NumHeads, cfg.LayerNormEps
	layer := bc.S * bc.Tc * C
	for l, lp := range m.Layout.Layers {
		var pw [4]kernels.Tensor // empty: InferLinearPanels is InferLinear
		if bc.panels != nil {
			pw = bc.panels.w[l]
		}
		d.LayerNormForward(r.ln, r.mean, r.rstd, r.x, m.Param(lp.Ln1W), m.Param(lp.Ln1B), N, C, eps)
		kernels.InferLinearPanels(d, r.qkv, r.ln, pw[0], m.Param(lp.AttnW), m.Param(lp.AttnB), kernels.Tensor{}, N, C, 3*C, false, false)
		if bc.kcache.Empty() {
			d.AttentionForward(r.atty, bc.att, r.qkv, bc.B, bc.T, C, NH)
		} else {
			d.AttentionCached(r.atty, r.qkv, bc.kcache.Slice(l*layer, layer), bc.vcache.Slice(l*layer, layer),
				bc.slot, bc.pos, N, C, NH, bc.Tc)
		}
		// x += atty @ W + b and x += gelu(ln @ W + b) @ W + b: the residual adds
		// and the GELU are fused into the products where the device can.
		kernels.InferLinearPanels(d, r.x, r.atty, pw[1], m.Param(lp.AttnProjW), m.Param(lp.AttnProjB), r.tmp, N, C, C, true, false)
		d.LayerNormForward(r.ln, r.mean, r.rstd, r.x, m.Param(lp.Ln2W), m.Param(lp.Ln2B), N, C, eps)
		kernels.InferLinearPanels(d, r.fchGelu, r.ln, pw[2], m.Param(lp.FcW), m.Param(lp.FcB), r.fch, N, C, 4*C, false, true)
		kernels.InferLinearPanels(d, r.x, r.fchGelu, pw[3], m.Param(lp.FcProjW), m.Param(lp.FcProjB), r.tmp, N, 4*C, C, true, false)
	}
}

// lmHead writes the logits (n,V) of the n residual rows x (n,C) through ln_f and
// the tied wte, using ln, mean, rstd (at least n rows) as scratch.
func (m *Model) lmHead(logits, x, ln, mean, rstd kernels.Tensor, n int) {
	C, V := m.Config.Channels, m.Config.VocabSize
	L := m.Layout
	m.Dev.LayerNormForward(ln.Slice(0, n*C), mean.Slice(0, n), rstd.Slice(0, n), x.Slice(0, n*C),
		m.Param(L.LnfW), m.Param(L.LnfB), n, C, m.Config.LayerNormEps)
	kernels.MatmulTransForward(m.Dev, logits.Slice(0, n*V), ln.Slice(0, n*C), m.Param(L.Wte), n, C, V)
}

// fuseHead selects LogProbsT's LM head: kernels.InferHeadLogProb (the product
// and the log-softmax per cache-sized block where the device fuses them) or the
// (N,V) logits of lmHead then InferLogProb. A variable for the in-process A/B.
var fuseHead = true

// headScratch is the floats of logits LogProbsT needs for n rows.
func (m *Model) headScratch(n int) int {
	if !fuseHead {
		return n * m.Config.VocabSize
	}
	return kernels.InferHeadScratch(m.Dev, n, m.Config.VocabSize)
}

// checkSeq validates one input sequence; what names it in the error.
func (m *Model) checkSeq(s []int32, what string, i int) error {
	if len(s) < 1 {
		return fmt.Errorf("%w: %s %d is empty", ErrSequence, what, i)
	}
	if len(s) > m.Config.MaxSeqLen {
		return fmt.Errorf("%w: %s %d has %d tokens, more than n_positions %d", ErrSequence, what, i, len(s), m.Config.MaxSeqLen)
	}
	for j, t := range s {
		if t < 0 || int(t) >= m.Config.VocabSize {
			return fmt.Errorf("%w: %s %d token %d is %d, outside [0,%d)", ErrSequence, what, i, j, t, m.Config.VocabSize)
		}
	}
	return nil
}

// LogProbs returns, for each sequence of a ragged batch, the log-probability of
// every token after the first given the tokens before it:
// out[i][j] = log p(seqs[i][j+1] | seqs[i][:j+1]), len(out[i]) = len(seqs[i])-1.
// Sequences are grouped by length and right-padded to the longest of their chunk
// (causal attention keeps pads invisible to real tokens); chunks keep the working
// memory near inferBudget. Errors if a sequence is empty, longer than MaxSeqLen,
// or holds an id outside the vocabulary.
func (m *Model) LogProbs(seqs [][]int32) ([][]float32, error) { return m.LogProbsT(seqs, 1) }

// LogProbsT is LogProbs under softmax(logits/temperature), the distribution a
// sampler with that temperature draws from (what PPO's ratio compares); a
// temperature of 0 or 1 is plain LogProbs.
func (m *Model) LogProbsT(seqs [][]int32, temperature float32) ([][]float32, error) {
	if !(temperature >= 0) || math.IsInf(float64(temperature), 0) {
		return nil, fmt.Errorf("%w: temperature must be finite and >= 0 (0 = none), got %g", ErrOptions, temperature)
	}
	for i, s := range seqs {
		if err := m.checkSeq(s, "sequence", i); err != nil {
			return nil, err
		}
	}
	if g := m.scoreGroupsFor(len(seqs)); g > 1 {
		return m.logProbsGroups(seqs, temperature, g)
	}
	return m.logProbsBatch(seqs, temperature)
}

// logProbsBatch is LogProbsT after the checks, on m's device.
func (m *Model) logProbsBatch(seqs [][]int32, temperature float32) ([][]float32, error) {
	out := make([][]float32, len(seqs))
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	// Longest first, so each chunk pads to its first sequence and similar lengths share chunks.
	slices.SortStableFunc(order, func(a, b int) int { return len(seqs[b]) - len(seqs[a]) })
	C, V, NH := m.Config.Channels, m.Config.VocabSize, m.Config.NumHeads
	var tokens, targets []int32
	var host []float32
	for lo := 0; lo < len(order); {
		// A sequence's last token predicts nothing scored here and, under causal
		// attention, changes no earlier row, so a chunk runs one row fewer than
		// its longest sequence (as PyTorch's reference scores s[:, :-1]).
		T := len(seqs[order[lo]]) - 1
		if T == 0 { // the rest are all one token long: nothing to score
			for _, k := range order[lo:] {
				out[k] = []float32{}
			}
			break
		}
		perSeq := T*(rowFloats(C)+1) + NH*T*T + m.headScratch(T)
		B := max(1, inferBudget/perSeq)
		hi := min(len(order), lo+B)
		B = hi - lo
		N := B * T
		a := m.inferFor(func(a *inferActs, c *carver) {
			a.r.carve(c, N, C)
			a.att = c.take(B * NH * T * T)
			a.logits = c.take(m.headScratch(N))
			a.logp = c.take(N)
		})
		tokens, targets, host = slices.Grow(tokens[:0], N)[:N], slices.Grow(targets[:0], N)[:N], slices.Grow(host[:0], N)[:N]
		pos := make([]int32, N)
		for b := 0; b < B; b++ {
			s := seqs[order[lo+b]]
			for t := 0; t < T; t++ {
				i := b*T + t
				pos[i] = int32(t)
				tokens[i], targets[i] = 0, 0
				if t < len(s) {
					tokens[i] = s[t]
				}
				if t+1 < len(s) {
					targets[i] = s[t+1]
				}
			}
		}
		L := m.Layout
		m.Dev.EncoderForward(a.r.x, tokens, pos, m.Param(L.Wte), m.Param(L.Wpe), N, C)
		m.inferBlocks(a.r, N, &blockCache{B: B, T: T, att: a.att})
		if fuseHead {
			m.Dev.LayerNormForward(a.r.ln, a.r.mean, a.r.rstd, a.r.x, m.Param(L.LnfW), m.Param(L.LnfB), N, C, m.Config.LayerNormEps)
			kernels.InferHeadLogProb(m.Dev, a.logp, a.logits, a.r.ln, m.Param(L.Wte), targets, N, C, V, temperature)
		} else {
			m.lmHead(a.logits, a.r.x, a.r.ln, a.r.mean, a.r.rstd, N)
			kernels.InferLogProb(m.Dev, a.logp, a.logits, targets, N, V, temperature)
		}
		m.Dev.Download(host, a.logp)
		for b := 0; b < B; b++ {
			k := order[lo+b]
			out[k] = slices.Clone(host[b*T : b*T+len(seqs[k])-1])
		}
		lo = hi
	}
	return out, nil
}
