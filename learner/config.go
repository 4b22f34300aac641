package learner

import (
	"fmt"
	"strings"
)

// The sections of a run config that the learner reads. YAML maps onto them (the
// actors package embeds them in the whole run config); every field documents
// its default, and Validate names the bad field by its YAML path.

// ModelConfig says where the model starts.
type ModelConfig struct {
	// Init is a checkpoint directory to start from: for sft a pretrained model,
	// for rm an SFT model. Empty (the default) = a fresh model of Shape.
	Init string `yaml:"init"`
	// Shape of a fresh model: tiny | small | gpt2 (default tiny). Ignored with Init.
	Shape string `yaml:"shape"`
	// Optional overrides of the shape (0 = the shape's value).
	NLayer     int `yaml:"n_layer"`
	NHead      int `yaml:"n_head"`
	NEmbd      int `yaml:"n_embd"`
	NPositions int `yaml:"n_positions"`
	// Tokenizer directory for a fresh model (vocab size follows it), default
	// data/gpt2. With Init, the checkpoint's own tokenizer is used.
	Tokenizer string `yaml:"tokenizer"`
}

// DataConfig names the training data.
type DataConfig struct {
	// Train lists files or globs: plain text for pretrain, JSONL for sft
	// ({"prompt","response"} or {"messages":[{"role","content"}...]}) and rm
	// ({"prompt","chosen","rejected"}).
	Train []string `yaml:"train"`
	// Val lists held-out files; empty = the last ValFraction of Train.
	Val []string `yaml:"val"`
	// ValFraction is the held-out share of Train when Val is empty, default 0.05.
	ValFraction float64 `yaml:"val_fraction"`
	// MaxBadFraction: the run refuses to start when more than this share of data
	// lines is malformed (each is reported with file and line), default 0.
	MaxBadFraction float64 `yaml:"max_bad_fraction"`
	// Template formats an SFT/RM prompt; {prompt} is replaced by the prompt text.
	// Default "{prompt}" (the data carries its own wording).
	Template string `yaml:"template"`
	// CacheDir holds tokenised corpora keyed by content and tokenizer hash,
	// default ".troupe-cache".
	CacheDir string `yaml:"cache_dir"`
}

// TrainConfig is the optimisation schedule.
type TrainConfig struct {
	Steps       int     `yaml:"steps"`        // optimizer steps, default 1000
	BatchSize   int     `yaml:"batch_size"`   // sequences (rm: pairs) per micro-batch, default 16
	SeqLen      int     `yaml:"seq_len"`      // tokens per sequence, default 128 (<= n_positions)
	GradAccum   int     `yaml:"grad_accum"`   // micro-batches per optimizer step, default 1
	LR          float64 `yaml:"lr"`           // peak learning rate, default 1e-3
	MinLR       float64 `yaml:"min_lr"`       // floor of the cosine decay, default lr/10
	WarmupSteps int     `yaml:"warmup_steps"` // linear warm-up steps, default 50
	WeightDecay float64 `yaml:"weight_decay"` // AdamW decoupled decay on 2-D weights, default 0.1
	Beta1       float64 `yaml:"beta1"`        // default 0.9
	Beta2       float64 `yaml:"beta2"`        // default 0.95
	GradClip    float64 `yaml:"grad_clip"`    // global L2 norm clip, 0 = off, default 1.0
	EvalBatches int     `yaml:"eval_batches"` // held-out micro-batches per evaluation, default 8
}

// DefaultModelConfig returns the defaults documented on ModelConfig.
func DefaultModelConfig() ModelConfig {
	return ModelConfig{Shape: "tiny", Tokenizer: "data/gpt2"}
}

// DefaultDataConfig returns the defaults documented on DataConfig.
func DefaultDataConfig() DataConfig {
	return DataConfig{ValFraction: 0.05, Template: "{prompt}", CacheDir: ".troupe-cache"}
}

// DefaultTrainConfig returns the defaults documented on TrainConfig.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{Steps: 1000, BatchSize: 16, SeqLen: 128, GradAccum: 1, LR: 1e-3, MinLR: 1e-4,
		WarmupSteps: 50, WeightDecay: 0.1, Beta1: 0.9, Beta2: 0.95, GradClip: 1.0, EvalBatches: 8}
}

func fieldErr(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, path, fmt.Sprintf(format, args...))
}

// Validate checks the model section; prefix is its YAML path, e.g. "model".
func (c ModelConfig) Validate(prefix string) error {
	if c.Init == "" {
		switch c.Shape {
		case "tiny", "small", "gpt2":
		default:
			return fieldErr(prefix+".shape", "%q is not a shape; allowed values: tiny, small, gpt2", c.Shape)
		}
		if c.Tokenizer == "" {
			return fieldErr(prefix+".tokenizer", "a fresh model needs a tokenizer directory (e.g. data/gpt2)")
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"n_layer", c.NLayer}, {"n_head", c.NHead}, {"n_embd", c.NEmbd}, {"n_positions", c.NPositions}} {
		if f.v < 0 {
			return fieldErr(prefix+"."+f.name, "must be >= 0 (0 = the shape's value), got %d", f.v)
		}
	}
	return nil
}

// Validate checks the data section; prefix is its YAML path, e.g. "data".
func (c DataConfig) Validate(prefix string) error {
	if len(c.Train) == 0 {
		return fieldErr(prefix+".train", "at least one file or glob is required")
	}
	if !(c.ValFraction >= 0 && c.ValFraction < 1) {
		return fieldErr(prefix+".val_fraction", "must be in [0, 1), got %g", c.ValFraction)
	}
	if len(c.Val) == 0 && c.ValFraction == 0 {
		return fieldErr(prefix+".val_fraction", "must be > 0 when %s.val is empty (held-out data is needed)", prefix)
	}
	if !(c.MaxBadFraction >= 0 && c.MaxBadFraction <= 1) {
		return fieldErr(prefix+".max_bad_fraction", "must be in [0, 1], got %g", c.MaxBadFraction)
	}
	if !strings.Contains(c.Template, "{prompt}") {
		return fieldErr(prefix+".template", "must contain {prompt}, got %q", c.Template)
	}
	return nil
}

// Validate checks the train section; prefix is its YAML path, e.g. "train".
func (c TrainConfig) Validate(prefix string) error {
	pos := []struct {
		name string
		v    int
	}{{"steps", c.Steps}, {"batch_size", c.BatchSize}, {"seq_len", c.SeqLen}, {"grad_accum", c.GradAccum}, {"eval_batches", c.EvalBatches}}
	for _, f := range pos {
		if f.v < 1 {
			return fieldErr(prefix+"."+f.name, "must be >= 1, got %d", f.v)
		}
	}
	switch {
	case !(c.LR > 0):
		return fieldErr(prefix+".lr", "must be > 0, got %g", c.LR)
	case !(c.MinLR >= 0 && c.MinLR <= c.LR):
		return fieldErr(prefix+".min_lr", "must be in [0, lr=%g], got %g", c.LR, c.MinLR)
	case c.WarmupSteps < 0:
		return fieldErr(prefix+".warmup_steps", "must be >= 0, got %d", c.WarmupSteps)
	case !(c.WeightDecay >= 0):
		return fieldErr(prefix+".weight_decay", "must be >= 0, got %g", c.WeightDecay)
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fieldErr(prefix+".beta1", "must be in [0, 1), got %g", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fieldErr(prefix+".beta2", "must be in [0, 1), got %g", c.Beta2)
	case !(c.GradClip >= 0):
		return fieldErr(prefix+".grad_clip", "must be >= 0 (0 = off), got %g", c.GradClip)
	}
	return nil
}
