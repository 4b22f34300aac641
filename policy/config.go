// Package policy is the transformer language model (GPT-2 layout): its parameters
// in one flat buffer with named views, forward/backward, per-token log-probs,
// KV-cache sampling, and checkpoints in Hugging Face's file formats.
package policy

import (
	"errors"
	"fmt"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("policy: bad config")

// Config is one GPT-2 model's shape. Field comments give the Hugging Face
// config.json key and an example.
type Config struct {
	VocabSize    int     // vocab_size: token ids, e.g. 50257
	MaxSeqLen    int     // n_positions: longest sequence (learned positions), e.g. 1024
	NumLayers    int     // n_layer: transformer blocks, e.g. 12
	NumHeads     int     // n_head: attention heads, e.g. 12
	Channels     int     // n_embd: model width, e.g. 768 (a multiple of NumHeads)
	LayerNormEps float32 // layer_norm_epsilon, e.g. 1e-5
}

// GPT2Small is the 124M GPT-2 shape.
func GPT2Small() Config {
	return Config{VocabSize: 50257, MaxSeqLen: 1024, NumLayers: 12, NumHeads: 12, Channels: 768, LayerNormEps: 1e-5}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.VocabSize <= 0:
		return fmt.Errorf("%w: vocab_size must be > 0, got %d", ErrConfig, c.VocabSize)
	case c.MaxSeqLen <= 0:
		return fmt.Errorf("%w: n_positions must be > 0, got %d", ErrConfig, c.MaxSeqLen)
	case c.NumLayers <= 0:
		return fmt.Errorf("%w: n_layer must be > 0, got %d", ErrConfig, c.NumLayers)
	case c.NumHeads <= 0:
		return fmt.Errorf("%w: n_head must be > 0, got %d", ErrConfig, c.NumHeads)
	case c.Channels <= 0 || c.Channels%c.NumHeads != 0:
		return fmt.Errorf("%w: n_embd must be a positive multiple of n_head (%d), got %d", ErrConfig, c.NumHeads, c.Channels)
	case !(c.LayerNormEps > 0):
		return fmt.Errorf("%w: layer_norm_epsilon must be > 0, got %g", ErrConfig, c.LayerNormEps)
	}
	return nil
}

// HeadSize is Channels/NumHeads, e.g. 64.
func (c Config) HeadSize() int { return c.Channels / c.NumHeads }

// ParamSpec is one named parameter tensor: a view at Offset into the flat buffer.
// Name and Shape are exactly Hugging Face GPT2LMHeadModel's (Conv1D weights are
// stored [in, out]).
type ParamSpec struct {
	Name   string // e.g. "transformer.h.0.attn.c_attn.weight"
	Shape  []int  // e.g. [768, 2304]
	Offset int    // first element in the flat buffer
	Size   int    // product of Shape
	Decay  bool   // AdamW weight decay applies (2-D weights and embeddings, not biases/LayerNorm)
}

// LayerParams indexes one block's tensors within ParamSpecs.
type LayerParams struct {
	Ln1W, Ln1B, AttnW, AttnB, AttnProjW, AttnProjB, Ln2W, Ln2B, FcW, FcB, FcProjW, FcProjB int
}

// Layout is the flat-buffer layout: every tensor's spec, plus indices for the model code.
type Layout struct {
	Specs    []ParamSpec
	Total    int // number of float32 parameters
	Wte, Wpe int // indices into Specs
	Layers   []LayerParams
	LnfW     int
	LnfB     int
}

// NewLayout lays out the parameters in Hugging Face's order: wte, wpe, the blocks,
// ln_f. The LM head is tied to wte and has no storage of its own.
func (c Config) NewLayout() Layout {
	var l Layout
	add := func(name string, decay bool, shape ...int) int {
		size := 1
		for _, s := range shape {
			size *= s
		}
		l.Specs = append(l.Specs, ParamSpec{Name: name, Shape: shape, Offset: l.Total, Size: size, Decay: decay})
		l.Total += size
		return len(l.Specs) - 1
	}
	C := c.Channels
	l.Wte = add("transformer.wte.weight", true, c.VocabSize, C)
	l.Wpe = add("transformer.wpe.weight", true, c.MaxSeqLen, C)
	for i := 0; i < c.NumLayers; i++ {
		p := fmt.Sprintf("transformer.h.%d.", i)
		var lp LayerParams
		lp.Ln1W = add(p+"ln_1.weight", false, C)
		lp.Ln1B = add(p+"ln_1.bias", false, C)
		lp.AttnW = add(p+"attn.c_attn.weight", true, C, 3*C)
		lp.AttnB = add(p+"attn.c_attn.bias", false, 3*C)
		lp.AttnProjW = add(p+"attn.c_proj.weight", true, C, C)
		lp.AttnProjB = add(p+"attn.c_proj.bias", false, C)
		lp.Ln2W = add(p+"ln_2.weight", false, C)
		lp.Ln2B = add(p+"ln_2.bias", false, C)
		lp.FcW = add(p+"mlp.c_fc.weight", true, C, 4*C)
		lp.FcB = add(p+"mlp.c_fc.bias", false, 4*C)
		lp.FcProjW = add(p+"mlp.c_proj.weight", true, 4*C, C)
		lp.FcProjB = add(p+"mlp.c_proj.bias", false, C)
		l.Layers = append(l.Layers, lp)
	}
	l.LnfW = add("transformer.ln_f.weight", false, C)
	l.LnfB = add("transformer.ln_f.bias", false, C)
	return l
}

// NamedConfig returns a preset shape by name: "tiny" (V256, maxT 128, L4, H4, d128),
// "small" (V512, maxT 256, L6, H6, d384) or "gpt2" (the 124M shape). The names and
// sizes match cmd/troupe/bench_torch.py's CONFIGS.
func NamedConfig(name string) (Config, error) {
	switch name {
	case "tiny":
		return Config{VocabSize: 256, MaxSeqLen: 128, NumLayers: 4, NumHeads: 4, Channels: 128, LayerNormEps: 1e-5}, nil
	case "small":
		return Config{VocabSize: 512, MaxSeqLen: 256, NumLayers: 6, NumHeads: 6, Channels: 384, LayerNormEps: 1e-5}, nil
	case "gpt2":
		return GPT2Small(), nil
	}
	return Config{}, fmt.Errorf("%w: unknown config name %q (allowed: tiny, small, gpt2)", ErrConfig, name)
}
