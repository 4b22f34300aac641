package learner

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// BuildModel returns the language model a stage starts from, on dev, and its
// tokenizer:
//   - mc.Init set: the checkpoint there (policy.Load) with the tokenizer saved
//     beside it; Shape and the overrides are ignored, the checkpoint's shape wins;
//   - otherwise a fresh model of mc.Shape with the non-zero overrides applied,
//     vocab_size taken from the tokenizer in mc.Tokenizer, initialised from seed.
//
// Errors name the config field at fault ("model.init: ...").
func BuildModel(mc ModelConfig, dev kernels.Device, seed uint64) (*policy.Model, *tokenizer.Tokenizer, error) {
	if err := mc.Validate("model"); err != nil {
		return nil, nil, err
	}
	if mc.Init != "" {
		tok, err := tokenizer.Load(mc.Init)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: model.init: %s: %w", ErrConfig, mc.Init, err)
		}
		m, err := policy.Load(mc.Init, dev)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: model.init: %w", ErrConfig, err)
		}
		if tok.VocabSize() > m.Config.VocabSize {
			return nil, nil, fieldErr("model.init", "%s: the tokenizer has %d ids but the model's vocab_size is %d",
				mc.Init, tok.VocabSize(), m.Config.VocabSize)
		}
		return m, tok, nil
	}
	tok, err := tokenizer.Load(mc.Tokenizer)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: model.tokenizer: %s: %w", ErrConfig, mc.Tokenizer, err)
	}
	cfg, err := freshConfig(mc, tok.VocabSize())
	if err != nil {
		return nil, nil, err
	}
	m, err := policy.New(cfg, dev)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: model: %w", ErrConfig, err)
	}
	m.Init(seed)
	return m, tok, nil
}

// freshConfig is mc.Shape with mc's overrides and the given vocabulary size.
func freshConfig(mc ModelConfig, vocab int) (policy.Config, error) {
	cfg, err := policy.NamedConfig(mc.Shape)
	if err != nil {
		return cfg, fieldErr("model.shape", "%v", err)
	}
	cfg.VocabSize = vocab
	for _, o := range []struct {
		dst  *int
		v    int
		name string
	}{{&cfg.NumLayers, mc.NLayer, "n_layer"}, {&cfg.NumHeads, mc.NHead, "n_head"}, {&cfg.Channels, mc.NEmbd, "n_embd"}, {&cfg.MaxSeqLen, mc.NPositions, "n_positions"}} {
		if o.v > 0 {
			*o.dst = o.v
		}
	}
	if cfg.Channels%cfg.NumHeads != 0 {
		return cfg, fieldErr("model.n_embd", "%d is not a multiple of n_head %d", cfg.Channels, cfg.NumHeads)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%w: model: %w", ErrConfig, err)
	}
	return cfg, nil
}

// tokenizerDir is the directory BuildModel reads the tokenizer from.
func tokenizerDir(mc ModelConfig) string {
	if mc.Init != "" {
		return mc.Init
	}
	return mc.Tokenizer
}

// tokenizerHash is the sha256 of the tokenizer files in dir that
// tokenizer.Load may read (each name, then its content), the tokenizer's half
// of a token cache key.
func tokenizerHash(dir string) ([32]byte, error) {
	h := sha256.New()
	for _, name := range []string{"tokenizer.json", "vocab.json", "merges.txt"} {
		f, err := os.Open(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return [32]byte{}, err
		}
		fmt.Fprintf(h, "%s\x00", name)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return [32]byte{}, err
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}
