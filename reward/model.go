// Package reward is the reward model: the GPT-2 trunk of package policy with a
// scalar head on the last token (Hugging Face's GPT2ForSequenceClassification
// with num_labels 1), its pairwise Bradley–Terry loss, and checkpoints in
// Hugging Face's layout.
package reward

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// Sentinel errors, wrapped with context by every caller.
var (
	ErrBadCheckpoint = errors.New("reward: bad checkpoint")
	ErrInput         = errors.New("reward: bad input")
	// ErrNoHead is wrapped (with ErrBadCheckpoint) when a checkpoint has no
	// score.weight: a language model's, which FromPolicy turns into a reward model.
	ErrNoHead = errors.New("reward: no score head")
)

// HeadName is the scalar head's tensor name in Hugging Face's
// GPT2ForSequenceClassification: a Linear(n_embd, num_labels, bias=False).
const HeadName = "score.weight"

// Model is a reward model on a device: r(x) = hidden(x)[last real token] · w.
//
// Parameters, gradients (and the optimizer's moments, see Optim) are single flat
// buffers laid out as the trunk's parameters followed by the head: the trunk's
// own Params and Grads are views of the first Trunk.Layout.Total values, so a
// broadcast, a checksum and an AdamW update each cover the whole model at once.
type Model struct {
	// Trunk, Dev, Params (trunk parameters, then score.weight (1,C)), Grads,
	// and Layout, ZeroGrad, Optim, Weights, NumParams.
	*policy.Headed

	// PadID is the pad_token_id written to config.json: the tokenizer's
	// end-of-text id (GPT-2 has no pad token). Hugging Face scores the last
	// token that is not PadID, so inputs must not contain it (see Encode in
	// package learner's RM data: prompt + response, no end-of-text).
	PadID int32

	// Working memory of the pairwise loss, grown on demand (a Model is not safe
	// for concurrent use).
	dhidden kernels.Tensor // (B*T, C) upstream gradient, zero but for the picked rows
	hrow    []float32      // (C) one picked hidden row on the host
}

// New allocates a reward model with zeroed parameters on dev; padID is the
// tokenizer's end-of-text id (-1 if unknown). Call InitHead (and the trunk's
// Init) for a fresh model, or load a checkpoint into it.
func New(cfg policy.Config, dev kernels.Device, padID int32) (*Model, error) {
	C := cfg.Channels
	h, err := policy.NewHeaded(cfg, dev, policy.ParamSpec{Name: HeadName, Shape: []int{1, C}, Size: C, Decay: true})
	if err != nil {
		return nil, err
	}
	return &Model{Headed: h, PadID: padID}, nil
}

// FromPolicy starts a reward model from a language model (an SFT checkpoint, say):
// the trunk's parameters are copied from p (p is left as it was), the LM head is
// dropped, and the score head is drawn by InitHead(seed).
func FromPolicy(p *policy.Model, seed uint64) (*Model, error) {
	m, err := New(p.Config, p.Dev, -1)
	if err != nil {
		return nil, err
	}
	m.Dev.Copy(m.Trunk.Params, p.Params)
	m.InitHead(seed)
	return m, nil
}

// Fresh returns a randomly initialised reward model: the trunk as GPT-2 is
// initialised (policy.Model.Init(seed)) and the head by InitHead(seed).
func Fresh(cfg policy.Config, dev kernels.Device, padID int32, seed uint64) (*Model, error) {
	m, err := New(cfg, dev, padID)
	if err != nil {
		return nil, err
	}
	m.Trunk.Init(seed)
	m.InitHead(seed)
	return m, nil
}

// InitHead draws the score head from N(0, 1/sqrt(C)·HeadInitScale). With the
// final LayerNorm's output near unit variance per channel, 1/sqrt(C) would
// give rewards of unit scale at the start; the extra factor keeps the starting
// rewards small (|r| ~ 0.1), so the first loss is close to log 2 and the early
// gradients are not dominated by the head's random direction, yet the trunk
// receives gradient from the first step (a zero head would give it none).
func (m *Model) InitHead(seed uint64) {
	C := m.Trunk.Config.Channels
	rng := rand.New(rand.NewPCG(seed, 0x73636f7265)) // "score"
	std := HeadInitScale / math.Sqrt(float64(C))
	w := make([]float32, C)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * std)
	}
	m.Dev.Upload(m.Head(), w)
}

// HeadInitScale multiplies the 1/sqrt(C) standard deviation of the head's init.
const HeadInitScale = 0.1

// Head returns the view of score.weight (1,C).
func (m *Model) Head() kernels.Tensor {
	return m.Params.Slice(m.Trunk.Layout.Total, m.Trunk.Config.Channels)
}

// HeadGrad returns the view of score.weight's gradient (1,C).
func (m *Model) HeadGrad() kernels.Tensor {
	return m.Grads.Slice(m.Trunk.Layout.Total, m.Trunk.Config.Channels)
}

// SetWeights loads a flat weights buffer (the layout of Params, e.g. a
// broadcast blob) into the model.
func (m *Model) SetWeights(w []float32) error {
	if len(w) != m.Params.N {
		return fmt.Errorf("%w: %d weights, the model has %d (trunk %d + head %d)", ErrInput, len(w), m.Params.N, m.Trunk.Layout.Total, m.Trunk.Config.Channels)
	}
	m.Dev.Upload(m.Params, w)
	return nil
}

// Encode returns the tokens a reward model scores for a prompt (already
// formatted by any template) and a response: each encoded as plain text (a
// "<|endoftext|>" in them is text, not the special token) and concatenated,
// with no end-of-text. Hugging Face's GPT2ForSequenceClassification, whose
// pad_token_id is the end-of-text id, scores the last token that is not one, so
// an input must hold none. The parts are encoded separately, as a policy's
// prompt and its sampled response are. A sequence longer than maxLen keeps its
// last maxLen tokens: the response and the end of the prompt (the last token is
// the one scored); maxLen <= 0 keeps everything.
func Encode(tok *tokenizer.Tokenizer, prompt, response string, maxLen int) []int32 {
	s := append(tok.EncodeOrdinary(prompt), tok.EncodeOrdinary(response)...)
	if maxLen > 0 && len(s) > maxLen {
		s = s[len(s)-maxLen:]
	}
	return s
}

// checkSeq validates one input sequence; what names it in the error.
func (m *Model) checkSeq(s []int32, what string, i int) error {
	cfg := m.Trunk.Config
	if len(s) < 1 {
		return fmt.Errorf("%w: %s %d is empty", ErrInput, what, i)
	}
	if len(s) > cfg.MaxSeqLen {
		return fmt.Errorf("%w: %s %d has %d tokens, more than n_positions %d", ErrInput, what, i, len(s), cfg.MaxSeqLen)
	}
	for j, t := range s {
		if t < 0 || int(t) >= cfg.VocabSize {
			return fmt.Errorf("%w: %s %d token %d is %d, outside [0,%d)", ErrInput, what, i, j, t, cfg.VocabSize)
		}
	}
	return nil
}

// scoreBudget bounds the floats of training activations one Scores chunk may
// take (128 MiB), so a large ragged batch is cut into chunks.
var scoreBudget = 1 << 25

// actFloats estimates ForwardHidden's working memory for B rows of T tokens.
func actFloats(cfg policy.Config, B, T int) int {
	C, NH, L := cfg.Channels, cfg.NumHeads, cfg.NumLayers
	N := B * T
	return N*(L*17*C+10*C) + L*B*NH*T*T
}

// Scores returns r for every sequence of a ragged batch: the head applied to the
// trunk's final hidden state at the sequence's last token. Sequences are sorted
// by length, right-padded to the longest of their chunk (causal attention keeps
// the pads invisible to the real tokens) and run through ForwardHidden in
// chunks of about scoreBudget floats of activations. Errors if a sequence is
// empty, longer than n_positions, or holds an id outside the vocabulary. Scores
// overwrites the activations a pending backward would need.
func (m *Model) Scores(seqs [][]int32) ([]float32, error) {
	for i, s := range seqs {
		if err := m.checkSeq(s, "sequence", i); err != nil {
			return nil, err
		}
	}
	out := make([]float32, len(seqs))
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(seqs[b]) - len(seqs[a]) })
	w := m.hostHead()
	var tokens []int32
	for lo := 0; lo < len(order); {
		T := len(seqs[order[lo]])
		B := max(1, scoreBudget/actFloats(m.Trunk.Config, 1, T))
		hi := min(len(order), lo+B)
		B = hi - lo
		tokens = slices.Grow(tokens[:0], B*T)[:B*T]
		batch := make([][]int32, B)
		for b := range batch {
			batch[b] = seqs[order[lo+b]]
		}
		padBatch(tokens, batch, T)
		h := m.Trunk.ForwardHidden(tokens, B, T)
		for b, s := range batch {
			out[order[lo+b]] = float32(m.rowDot(h, b*T+len(s)-1, w))
		}
		lo = hi
	}
	return out, nil
}

// padBatch writes seqs right-padded with token 0 into tokens (len(seqs)*T).
func padBatch(tokens []int32, seqs [][]int32, T int) {
	for b, s := range seqs {
		row := tokens[b*T : (b+1)*T]
		copy(row, s)
		clear(row[len(s):])
	}
}

// hostHead returns a host copy of score.weight.
func (m *Model) hostHead() []float32 {
	w := make([]float32, m.Trunk.Config.Channels)
	m.Dev.Download(w, m.Head())
	return w
}

// rowDot returns hidden row `row` (of h, (N,C)) · w in float64, leaving the row
// in m.hrow.
func (m *Model) rowDot(h kernels.Tensor, row int, w []float32) float64 {
	C := m.Trunk.Config.Channels
	if cap(m.hrow) < C {
		m.hrow = make([]float32, C)
	}
	m.hrow = m.hrow[:C]
	m.Dev.Download(m.hrow, h.Slice(row*C, C))
	var r float64
	for i, x := range m.hrow {
		r += float64(x) * float64(w[i])
	}
	return r
}

// PairStats is what the pairwise loss reports for a batch of pairs.
type PairStats struct {
	Loss     float64 // mean over pairs of -log σ(r_chosen - r_rejected)
	Accuracy float64 // share of pairs with r_chosen > r_rejected
	Margin   float64 // mean of r_chosen - r_rejected
	Chosen   []float32
	Rejected []float32 // the rewards, pair by pair
}

// pairForward scores chosen and rejected together in one forward: rows
// 0..P-1 are the chosen sequences, P..2P-1 the rejected ones, right-padded
// to the longest. It returns the hidden states and T.
func (m *Model) pairForward(chosen, rejected [][]int32) (kernels.Tensor, int, error) {
	if len(chosen) != len(rejected) || len(chosen) == 0 {
		return kernels.Tensor{}, 0, fmt.Errorf("%w: %d chosen and %d rejected sequences, want the same number > 0", ErrInput, len(chosen), len(rejected))
	}
	seqs := append(slices.Clip(chosen), rejected...)
	T := 0
	for i, s := range seqs {
		what := "chosen"
		k := i
		if i >= len(chosen) {
			what, k = "rejected", i-len(chosen)
		}
		if err := m.checkSeq(s, what, k); err != nil {
			return kernels.Tensor{}, 0, err
		}
		T = max(T, len(s))
	}
	tokens := make([]int32, len(seqs)*T)
	padBatch(tokens, seqs, T)
	return m.Trunk.ForwardHidden(tokens, len(seqs), T), T, nil
}

// PairLoss returns the pairwise Bradley–Terry loss and its figures for P pairs
// (chosen[i] preferred to rejected[i]) without a backward pass.
func (m *Model) PairLoss(chosen, rejected [][]int32) (PairStats, error) {
	h, T, err := m.pairForward(chosen, rejected)
	if err != nil {
		return PairStats{}, err
	}
	w := m.hostHead()
	P := len(chosen)
	st := PairStats{Chosen: make([]float32, P), Rejected: make([]float32, P)}
	for i := 0; i < P; i++ {
		rc := m.rowDot(h, i*T+len(chosen[i])-1, w)
		rr := m.rowDot(h, (P+i)*T+len(rejected[i])-1, w)
		st.add(i, rc, rr)
	}
	st.finish(P)
	return st, nil
}

func (st *PairStats) add(i int, rc, rr float64) {
	st.Chosen[i], st.Rejected[i] = float32(rc), float32(rr)
	d := rc - rr
	st.Loss += softplus(-d)
	st.Margin += d
	if d > 0 {
		st.Accuracy++
	}
}

func (st *PairStats) finish(P int) {
	st.Loss /= float64(P)
	st.Margin /= float64(P)
	st.Accuracy /= float64(P)
}

// PairLossAndBackward is PairLoss plus the backward pass, ADDING scale times the
// gradient of the mean loss into Grads (trunk and head), so that callers can
// accumulate micro-batches (call ZeroGrad first; scale = 1/micro-batches).
//
// With d = r_c - r_r and L = mean softplus(-d): dL/dr_c = -σ(-d)/P and
// dL/dr_r = +σ(-d)/P; then dL/dw = Σ dL/dr · h_last and dL/dh_last = dL/dr · w,
// the hidden gradient being zero at every row but the picked ones.
func (m *Model) PairLossAndBackward(chosen, rejected [][]int32, scale float32) (PairStats, error) {
	h, T, err := m.pairForward(chosen, rejected)
	if err != nil {
		return PairStats{}, err
	}
	m.EnsureGrads()
	C := m.Trunk.Config.Channels
	P := len(chosen)
	N := 2 * P * T
	if m.dhidden.N < N*C {
		if !m.dhidden.Empty() {
			m.Dev.Free(m.dhidden)
		}
		m.dhidden = m.Dev.Alloc(N * C)
	}
	dh := m.dhidden.Slice(0, N*C)
	m.Dev.Zero(dh)
	w := m.hostHead()
	dw := make([]float64, C)
	drow := make([]float32, C)
	st := PairStats{Chosen: make([]float32, P), Rejected: make([]float32, P)}
	rows := [2]int{}
	hs := [2][]float32{make([]float32, C), make([]float32, C)}
	for i := 0; i < P; i++ {
		rows[0], rows[1] = i*T+len(chosen[i])-1, (P+i)*T+len(rejected[i])-1
		rc := m.rowDot(h, rows[0], w)
		copy(hs[0], m.hrow)
		rr := m.rowDot(h, rows[1], w)
		copy(hs[1], m.hrow)
		st.add(i, rc, rr)
		g := sigmoid(-(rc - rr)) / float64(P) * float64(scale)
		for k, dr := range [2]float64{-g, g} {
			for c := range C {
				dw[c] += dr * float64(hs[k][c])
				drow[c] = float32(dr * float64(w[c]))
			}
			m.Dev.Upload(dh.Slice(rows[k]*C, C), drow)
		}
	}
	st.finish(P)
	m.Trunk.BackwardHidden(dh)
	gw := make([]float32, C)
	m.Dev.Download(gw, m.HeadGrad())
	for c := range gw {
		gw[c] += float32(dw[c])
	}
	m.Dev.Upload(m.HeadGrad(), gw)
	return st, nil
}

// softplus(x) = log(1 + e^x), computed without overflow.
func softplus(x float64) float64 {
	if x > 0 {
		return x + math.Log1p(math.Exp(-x))
	}
	return math.Log1p(math.Exp(x))
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// ReleaseWorkspace frees the activation memory kept between calls.
func (m *Model) ReleaseWorkspace() {
	m.Trunk.ReleaseWorkspace()
	if !m.dhidden.Empty() {
		m.Dev.Free(m.dhidden)
		m.dhidden = kernels.Tensor{}
	}
}
