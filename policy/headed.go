package policy

import (
	"slices"

	"github.com/troupe-rl/troupe/kernels"
)

// Headed is a GPT trunk with extra head tensors after it, all in one flat
// buffer: a reward model's score head, a critic's value head. The trunk's own
// Params and Grads are views of the first Trunk.Layout.Total values, so a
// broadcast, a checksum and an AdamW update each cover the whole model at once.
type Headed struct {
	Trunk  *Model         // only ForwardHidden/BackwardHidden are used
	Dev    kernels.Device // Trunk.Dev
	Params kernels.Tensor // trunk parameters, then the heads
	Grads  kernels.Tensor // same layout; allocated by ZeroGrad, Optim or EnsureGrads
	layout Layout         // the trunk's specs plus the heads'
}

// NewHeaded allocates a zeroed trunk of cfg on dev followed by heads, whose
// Offsets are set here, in order, after the trunk's parameters.
func NewHeaded(cfg Config, dev kernels.Device, heads ...ParamSpec) (*Headed, error) {
	trunk, err := New(cfg, dev)
	if err != nil {
		return nil, err
	}
	h := &Headed{Trunk: trunk, Dev: dev, layout: trunk.Layout}
	h.layout.Specs = slices.Clone(trunk.Layout.Specs)
	for _, s := range heads {
		s.Offset = h.layout.Total
		h.layout.Specs = append(h.layout.Specs, s)
		h.layout.Total += s.Size
	}
	h.Params = dev.Alloc(h.layout.Total)
	dev.Free(trunk.Params)
	trunk.Params = h.Params.Slice(0, trunk.Layout.Total)
	return h, nil
}

// Layout is the flat layout: the trunk's specs followed by the heads'.
func (h *Headed) Layout() Layout { return h.layout }

// NumParams is the number of float32 parameters, trunk and heads.
func (h *Headed) NumParams() int { return h.Params.N }

// ZeroGrad sets every gradient (trunk and heads) to zero, allocating on first use.
func (h *Headed) ZeroGrad() {
	if h.Grads.Empty() {
		h.EnsureGrads()
		return
	}
	h.Dev.Zero(h.Grads)
}

// EnsureGrads allocates the gradients (zeroed) if they are not yet, the
// trunk's as a view of them.
func (h *Headed) EnsureGrads() {
	if !h.Grads.Empty() {
		return
	}
	h.Grads = h.Dev.Alloc(h.Params.N)
	if !h.Trunk.Grads.Empty() {
		h.Dev.Free(h.Trunk.Grads)
	}
	h.Trunk.Grads = h.Grads.Slice(0, h.Trunk.Layout.Total)
}

// Optim returns a Model that spans the whole buffer, for NewAdamW and
// (*AdamW).Update: its Layout is Layout() and its Params and Grads are the
// whole flat buffers. Only the optimizer may use it (it has no forward: its
// Config is the trunk's, which does not describe the heads).
func (h *Headed) Optim() *Model {
	h.EnsureGrads()
	return &Model{Config: h.Trunk.Config, Layout: h.layout, Dev: h.Dev, Params: h.Params, Grads: h.Grads}
}

// Weights returns a host copy of Params (trunk then heads).
func (h *Headed) Weights() []float32 {
	w := make([]float32, h.Params.N)
	h.Dev.Download(w, h.Params)
	return w
}
