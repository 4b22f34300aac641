package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

func init() {
	register(&command{
		name:    "init-model",
		usage:   "init-model --config tiny|small|gpt2|custom [--n-embd C --n-layer L --n-head H --n-positions T --vocab V] [--tokenizer DIR] --out DIR [--seed S]",
		summary: "write a freshly initialised checkpoint (with a tokenizer) to try score and generate",
		run:     runInitModel,
	})
}

// runInitModel writes a GPT-2-initialised checkpoint. The shape is a named
// config (tiny, small, gpt2) with any of the shape flags overriding it, or
// "custom", where --n-embd, --n-layer, --n-head and --n-positions are required.
// With --tokenizer, the tokenizer files are copied into the checkpoint and the
// vocabulary size is the tokenizer's unless --vocab says otherwise (it may be
// larger, e.g. 50304 for 50257 rounded up to a multiple of 64).
func runInitModel(args []string) error {
	c := commands["init-model"]
	fs := newFlags(c)
	name := fs.String("config", "tiny", "model shape: tiny, small, gpt2 or custom")
	out := fs.String("out", "", "checkpoint directory to create (required; must not hold a checkpoint)")
	tokDir := fs.String("tokenizer", "", "tokenizer directory (tokenizer.json, or vocab.json + merges.txt) to copy in")
	seed := fs.Uint64("seed", 0, "initialisation seed")
	vocab := fs.Int("vocab", 0, "vocab_size (default: the tokenizer's, else the named config's)")
	nEmbd := fs.Int("n-embd", 0, "n_embd: model width, a multiple of --n-head")
	nLayer := fs.Int("n-layer", 0, "n_layer: transformer blocks")
	nHead := fs.Int("n-head", 0, "n_head: attention heads")
	nPos := fs.Int("n-positions", 0, "n_positions: longest sequence")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *out == "" {
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}

	var cfg policy.Config
	if *name == "custom" {
		for _, f := range []string{"n-embd", "n-layer", "n-head", "n-positions"} {
			if !set[f] {
				return fmt.Errorf("%w: --config custom needs --%s", errUsage, f)
			}
		}
		if !set["vocab"] && *tokDir == "" {
			return fmt.Errorf("%w: --config custom needs --vocab or --tokenizer", errUsage)
		}
		cfg.LayerNormEps = 1e-5
	} else {
		var err error
		if cfg, err = policy.NamedConfig(*name); err != nil {
			return fmt.Errorf("%w: --config %q: allowed: tiny, small, gpt2, custom", errUsage, *name)
		}
	}
	for _, o := range []struct {
		flag string
		v    int
		dst  *int
	}{
		{"n-embd", *nEmbd, &cfg.Channels}, {"n-layer", *nLayer, &cfg.NumLayers},
		{"n-head", *nHead, &cfg.NumHeads}, {"n-positions", *nPos, &cfg.MaxSeqLen}, {"vocab", *vocab, &cfg.VocabSize},
	} {
		if !set[o.flag] {
			continue
		}
		if o.v <= 0 {
			return fmt.Errorf("%w: --%s must be > 0, got %d", errUsage, o.flag, o.v)
		}
		*o.dst = o.v
	}
	if set["n-embd"] || set["n-head"] {
		if cfg.Channels%cfg.NumHeads != 0 {
			return fmt.Errorf("%w: --n-embd (%d) must be a multiple of --n-head (%d)", errUsage, cfg.Channels, cfg.NumHeads)
		}
	}

	var tok *tokenizer.Tokenizer
	if *tokDir != "" {
		var err error
		if tok, err = tokenizer.Load(*tokDir); err != nil {
			return err
		}
		switch {
		case !set["vocab"]:
			cfg.VocabSize = tok.VocabSize()
		case *vocab < tok.VocabSize():
			return fmt.Errorf("%w: --vocab %d is smaller than the tokenizer's %d ids", errUsage, *vocab, tok.VocabSize())
		}
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	for _, f := range []string{policy.ModelFile, policy.ConfigFile} {
		if _, err := os.Stat(filepath.Join(*out, f)); err == nil {
			return fmt.Errorf("%s already holds a checkpoint (%s); remove it or choose another --out", *out, f)
		}
	}

	m, err := policy.New(cfg, kernels.NewCPU(0))
	if err != nil {
		return err
	}
	m.Init(*seed)
	if tok != nil {
		err = policy.SaveWithTokenizer(m, tok, *out)
	} else {
		err = m.Save(*out)
	}
	if err != nil {
		return err
	}
	ev := log.Info().Str("out", *out).Int("params", m.NumParams()).
		Int("vocab_size", cfg.VocabSize).Int("n_positions", cfg.MaxSeqLen).
		Int("n_layer", cfg.NumLayers).Int("n_head", cfg.NumHeads).Int("n_embd", cfg.Channels)
	if tok == nil {
		ev = ev.Str("note", "no --tokenizer: score needs {\"tokens\": ...} input and generate will not run")
	}
	ev.Msg("wrote checkpoint")
	return nil
}
