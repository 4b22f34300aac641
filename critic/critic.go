// Package critic is PPO's value model: the GPT-2 trunk of package policy with a
// per-token scalar head, v_t = hidden_t · w + b, and checkpoints in the layout
// the other models use.
package critic

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/reward"
)

// Sentinel errors, wrapped with context by every caller.
var (
	ErrBadCheckpoint = errors.New("critic: bad checkpoint")
	ErrInput         = errors.New("critic: bad input")
)

// The value head's tensor names: a Linear(n_embd, 1) with a bias, as
// OpenRLHF's critic names its head.
const (
	HeadWeightName = "value_head.weight" // (1,C)
	HeadBiasName   = "value_head.bias"   // (1)
)

// HeadInitScale multiplies the 1/sqrt(C) standard deviation of a fresh head
// (see InitHead): reward.HeadInitScale's reasoning, small starting values.
const HeadInitScale = reward.HeadInitScale

// Model is a value model on a device: v_t = hidden_t · w + b at every position.
//
// Parameters, gradients (and the optimizer's moments, see Optim) are single flat
// buffers laid out as the trunk's parameters followed by the head (C + 1 values):
// the trunk's own Params and Grads are views of the first Trunk.Layout.Total
// values, as in reward.Model.
type Model struct {
	// Trunk, Dev, Params (trunk, value_head.weight (1,C), value_head.bias (1)),
	// Grads, and Layout, ZeroGrad, Optim, Weights, NumParams.
	*policy.Headed

	// The last Values call, for Backward, and working memory grown on demand
	// (a Model is not safe for concurrent use).
	hidden kernels.Tensor // (B*T, C) the trunk's output: a view of its activations
	B, T   int            // shape of the last Values; 0 when there is none
	work   kernels.Tensor // backing store of the views below
}

// New allocates a value model with zeroed parameters on dev. Use FromPolicy or
// FromReward for a model to train, or Load a checkpoint.
func New(cfg policy.Config, dev kernels.Device) (*Model, error) {
	C := cfg.Channels
	// The head weight decays as reward's score head does; a bias never does.
	h, err := policy.NewHeaded(cfg, dev,
		policy.ParamSpec{Name: HeadWeightName, Shape: []int{1, C}, Size: C, Decay: true},
		policy.ParamSpec{Name: HeadBiasName, Shape: []int{1}, Size: 1, Decay: false})
	if err != nil {
		return nil, err
	}
	return &Model{Headed: h}, nil
}

// FromPolicy starts a value model from a language model (the SFT policy, say):
// the trunk's parameters are copied from p (on p's device; p may go on
// training, nothing is shared), the LM head is dropped, the head weight is drawn
// by InitHead(seed) and the bias is 0.
func FromPolicy(p *policy.Model, seed uint64) (*Model, error) {
	m, err := New(p.Config, p.Dev)
	if err != nil {
		return nil, err
	}
	m.Dev.Copy(m.Trunk.Params, p.Params)
	m.InitHead(seed)
	return m, nil
}

// FromReward starts a value model from a reward model: a copy of its trunk,
// its score.weight as the value head's weight and a bias of 0, so the first
// values at a sequence's last token are its rewards.
func FromReward(r *reward.Model) (*Model, error) {
	m, err := New(r.Trunk.Config, r.Dev)
	if err != nil {
		return nil, err
	}
	m.Dev.Copy(m.Trunk.Params, r.Trunk.Params)
	m.Dev.Copy(m.HeadWeight(), r.Head())
	return m, nil
}

// InitHead draws the head weight from N(0, HeadInitScale/sqrt(C)) and zeroes
// the bias; the same seed gives the same head on every device.
func (m *Model) InitHead(seed uint64) {
	C := m.Trunk.Config.Channels
	rng := rand.New(rand.NewPCG(seed, 0x76616c7565)) // "value"
	std := HeadInitScale / math.Sqrt(float64(C))
	w := make([]float32, C+1)
	for i := range C {
		w[i] = float32(rng.NormFloat64() * std)
	}
	m.Dev.Upload(m.Params.Slice(m.Trunk.Layout.Total, C+1), w)
}

// HeadWeight returns the view of value_head.weight (1,C).
func (m *Model) HeadWeight() kernels.Tensor {
	return m.Params.Slice(m.Trunk.Layout.Total, m.Trunk.Config.Channels)
}

// HeadBias returns the view of value_head.bias (1).
func (m *Model) HeadBias() kernels.Tensor {
	return m.Params.Slice(m.Trunk.Layout.Total+m.Trunk.Config.Channels, 1)
}

// SetWeights loads a flat weights buffer (the layout of Params, e.g. a
// broadcast blob) into the model.
func (m *Model) SetWeights(w []float32) error {
	if len(w) != m.Params.N {
		return fmt.Errorf("%w: %d weights, the model has %d (trunk %d + head %d)",
			ErrInput, len(w), m.Params.N, m.Trunk.Layout.Total, m.Trunk.Config.Channels+1)
	}
	m.Dev.Upload(m.Params, w)
	return nil
}

// views carves the working memory for N rows: the values (N), their upstream
// gradient (N) and the hidden states' gradient (N,C).
func (m *Model) views(N int) (values, dvalues, dhidden kernels.Tensor) {
	C := m.Trunk.Config.Channels
	if need := N*C + 2*N; m.work.N < need {
		if !m.work.Empty() {
			m.Dev.Free(m.work)
		}
		m.work = m.Dev.Alloc(need)
	}
	return m.work.Slice(0, N), m.work.Slice(N, N), m.work.Slice(2*N, N*C)
}

// Values runs the model on B rows of T tokens (positions 0..T-1 in every row)
// and returns v (B*T) on the host, v[i] the value of the prefix ending at token
// i. Rows may be right-padded: causal attention keeps the pads from changing
// the values before them. The activations are kept for Backward until the next
// forward on m or its trunk. Bad tokens are a programmer error (panic), as in
// the trunk's ForwardHidden.
func (m *Model) Values(tokens []int32, B, T int) []float32 {
	h := m.Trunk.ForwardHidden(tokens, B, T)
	N, C := B*T, m.Trunk.Config.Channels
	v, _, _ := m.views(N)
	// w stored (1,C) is the (C,1) matrix MatmulForward wants, same memory.
	kernels.MatmulForward(m.Dev, v, h, m.HeadWeight(), m.HeadBias(), N, C, 1)
	out := make([]float32, N)
	m.Dev.Download(out, v)
	m.hidden, m.B, m.T = h, B, T
	return out
}

// Backward adds into Grads (trunk and head) the gradient of Σ_i dvalues[i]·v[i]
// for the v of the last Values call, whose (B*T) shape dvalues must have: for
// a loss L, pass dvalues = ∂L/∂v.
func (m *Model) Backward(dvalues []float32) {
	if m.hidden.Empty() {
		panic(policy.ErrNoForward)
	}
	N, C := m.B*m.T, m.Trunk.Config.Channels
	if len(dvalues) != N {
		panic(fmt.Errorf("%w: Backward has %d dvalues for the last Values' %d", kernels.ErrShape, len(dvalues), N))
	}
	m.EnsureGrads()
	_, dv, dh := m.views(N)
	m.Dev.Upload(dv, dvalues)
	m.Dev.Zero(dh)
	total := m.Trunk.Layout.Total
	kernels.MatmulBackward(m.Dev, dh, m.Grads.Slice(total, C), m.Grads.Slice(total+C, 1), dv, m.hidden, m.HeadWeight(), N, C, 1)
	m.Trunk.BackwardHidden(dh)
}

// ReleaseWorkspace frees the activation memory kept between calls; a pending
// Backward is no longer possible.
func (m *Model) ReleaseWorkspace() {
	m.Trunk.ReleaseWorkspace()
	if !m.work.Empty() {
		m.Dev.Free(m.work)
		m.work = kernels.Tensor{}
	}
	m.hidden, m.B, m.T = kernels.Tensor{}, 0, 0
}
