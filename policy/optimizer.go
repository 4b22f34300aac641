package policy

import (
	"math"

	"github.com/troupe-rl/troupe/kernels"
)

// AdamWConfig holds AdamW's hyper-parameters. Zero Beta1, Beta2 and Eps are read
// as their defaults; zero WeightDecay and GradClip mean "off".
type AdamWConfig struct {
	LR          float32 // base learning rate for schedules, e.g. 3e-4 (Update takes the step's own)
	Beta1       float32 // first-moment decay, default 0.9
	Beta2       float32 // second-moment decay, default 0.95
	Eps         float32 // denominator epsilon, default 1e-8
	WeightDecay float32 // decoupled decay on tensors whose ParamSpec.Decay is set, e.g. 0.1
	GradClip    float32 // max global gradient L2 norm, e.g. 1.0; 0 = no clipping
}

// DefaultAdamWConfig is nanoGPT's: lr 3e-4, betas (0.9, 0.95), eps 1e-8, weight
// decay 0.1 on 2-D weights and embeddings, gradient clipping at norm 1.
func DefaultAdamWConfig() AdamWConfig {
	return AdamWConfig{LR: 3e-4, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradClip: 1}
}

// AdamW is the optimizer state: both moments are flat buffers laid out like Params.
type AdamW struct {
	Config AdamWConfig
	M, V   kernels.Tensor // (Layout.Total) first and second moments
	Step   int            // updates done so far; the next one is Step+1

	runs []kernels.AdamWRun // UpdateWithNorm's runs of tensors, reused
}

// NewAdamW allocates zeroed moments for m's parameters on m's device.
func NewAdamW(m *Model, cfg AdamWConfig) *AdamW {
	def := DefaultAdamWConfig()
	if cfg.Beta1 == 0 {
		cfg.Beta1 = def.Beta1
	}
	if cfg.Beta2 == 0 {
		cfg.Beta2 = def.Beta2
	}
	if cfg.Eps == 0 {
		cfg.Eps = def.Eps
	}
	return &AdamW{Config: cfg, M: m.Dev.Alloc(m.Layout.Total), V: m.Dev.Alloc(m.Layout.Total)}
}

// Update clips m.Grads to Config.GradClip, then applies one AdamW step with
// learning rate lr (pass o.Config.LR for a constant rate), decaying only the
// tensors whose ParamSpec.Decay is set. Returns the global gradient norm before
// clipping. The gradients are left clipped, not zeroed.
func (o *AdamW) Update(m *Model, lr float32) (gradNorm float32) {
	return o.UpdateWithNorm(m, lr, GradNorm(m))
}

// GradNorm is the global L2 norm of m.Grads (one pass over them), e.g. to
// refuse a non-finite step before UpdateWithNorm.
func GradNorm(m *Model) float64 {
	m.ensureGrads()
	return math.Sqrt(m.Dev.SumSquares(m.Grads))
}

// UpdateWithNorm is Update given the gradients' norm from GradNorm, so a
// caller that checks the norm first does not take it twice.
func (o *AdamW) UpdateWithNorm(m *Model, lr float32, norm float64) (gradNorm float32) {
	m.ensureGrads()
	// Clipping scales the gradients inside the AdamW pass (same result as
	// kernels.ClipToNorm first, one pass fewer over the gradients).
	gscale := float32(1)
	if maxNorm := o.Config.GradClip; maxNorm > 0 && norm > float64(maxNorm) {
		gscale = float32(float64(maxNorm) / (norm + 1e-6))
	}
	gradNorm = float32(norm)
	o.Step++
	c := o.Config
	// The runs of neighbouring tensors with the same decay flag, in one call.
	specs := m.Layout.Specs
	o.runs = o.runs[:0]
	for i := 0; i < len(specs); {
		j, decay := i, specs[i].Decay
		for j < len(specs) && specs[j].Decay == decay {
			j++
		}
		off := specs[i].Offset
		run := kernels.AdamWRun{Off: off, N: specs[j-1].Offset + specs[j-1].Size - off}
		if decay {
			run.WeightDecay = c.WeightDecay
		}
		o.runs = append(o.runs, run)
		i = j
	}
	kernels.AdamWRuns(m.Dev, m.Params, m.Grads, o.M, o.V, o.runs, gscale, o.Step, lr, c.Beta1, c.Beta2, c.Eps)
	return gradNorm
}
