package policy

import (
	"math"
	"math/rand/v2"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
)

// Model is a GPT-2 language model on a device. Params (and Grads, once training
// starts) are single flat buffers; each named tensor is a view into them.
type Model struct {
	Config Config
	Layout Layout
	Dev    kernels.Device
	Params kernels.Tensor // (Layout.Total) all parameters, Hugging Face order
	Grads  kernels.Tensor // (Layout.Total) gradients; allocated by the first Backward

	// Working memory reused across calls (llm.c style), grown on demand. A Model is
	// not safe for concurrent use: these buffers belong to the call in progress.
	train  *trainActs // Forward/ForwardHidden activations kept for backward
	infer  *inferActs // LogProbs and Generate: one layer's worth, no backward
	rl     *rlForward // what BackwardLogProbs needs from ForwardLogProbs
	panels *panelSet  // Generate's panel-packed block weights (panels.go)
	// LogProbs' per-group workspaces on the CPU (score_groups.go)
	scoreActs []*inferActs
}

// New allocates a model with zeroed parameters on dev. Call Init for a fresh
// model, or load a checkpoint into it.
func New(cfg Config, dev kernels.Device) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Config: cfg, Layout: cfg.NewLayout(), Dev: dev}
	m.Params = dev.Alloc(m.Layout.Total)
	return m, nil
}

// Param returns the view of the i-th parameter tensor (an index into Layout.Specs).
func (m *Model) Param(i int) kernels.Tensor {
	s := m.Layout.Specs[i]
	return m.Params.Slice(s.Offset, s.Size)
}

// Grad returns the view of the i-th parameter's gradient.
func (m *Model) Grad(i int) kernels.Tensor {
	s := m.Layout.Specs[i]
	return m.Grads.Slice(s.Offset, s.Size)
}

// Init fills the parameters as GPT-2 does: weights and embeddings N(0, 0.02),
// residual output projections N(0, 0.02/sqrt(2*n_layer)), biases 0, LayerNorm
// weights 1. The same seed gives the same parameters on every device.
func (m *Model) Init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x7472_6f75_7065)) // "troupe"
	host := make([]float32, m.Layout.Total)
	resStd := 0.02 / math.Sqrt(2*float64(m.Config.NumLayers))
	for _, s := range m.Layout.Specs {
		v := host[s.Offset : s.Offset+s.Size]
		switch {
		case strings.HasSuffix(s.Name, "ln_1.weight"), strings.HasSuffix(s.Name, "ln_2.weight"), strings.HasSuffix(s.Name, "ln_f.weight"):
			for i := range v {
				v[i] = 1
			}
		case strings.HasSuffix(s.Name, ".bias"):
			// zeros
		default:
			std := 0.02
			if strings.HasSuffix(s.Name, "c_proj.weight") {
				std = resStd
			}
			for i := range v {
				v[i] = float32(rng.NormFloat64() * std)
			}
		}
	}
	m.Dev.Upload(m.Params, host)
}

// NumParams is the number of float32 parameters (the tied LM head counted once).
func (m *Model) NumParams() int { return m.Layout.Total }
