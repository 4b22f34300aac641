package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/policy"
)

func TestInitModel(t *testing.T) {
	// A named config without a tokenizer keeps its own vocabulary.
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := runInitModel([]string{"--config", "tiny", "--out", dir, "--seed", "1"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.LoadConfig(dir)
	tiny, _ := policy.NamedConfig("tiny")
	if err != nil || cfg != tiny {
		t.Fatalf("got %+v, %v; want %+v", cfg, err, tiny)
	}
	if _, err := os.Stat(filepath.Join(dir, "vocab.json")); err == nil {
		t.Fatalf("tokenizer files written without --tokenizer")
	}
	// The same seed gives the same weights; overrides apply to a named config.
	again := filepath.Join(t.TempDir(), "again")
	if err := runInitModel([]string{"--config", "tiny", "--out", again, "--seed", "1"}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, policy.ModelFile))
	b, _ := os.ReadFile(filepath.Join(again, policy.ModelFile))
	if string(a) != string(b) {
		t.Fatalf("same seed, different checkpoints")
	}
	// Writing over an existing checkpoint is refused.
	if err := runInitModel([]string{"--config", "tiny", "--out", dir}); err == nil || !strings.Contains(err.Error(), "already holds a checkpoint") {
		t.Fatalf("got %v, want a refusal to overwrite", err)
	}

	// With a tokenizer, its vocabulary size wins unless --vocab says more.
	if _, err := os.Stat(filepath.Join(gpt2TokDir, "vocab.json")); err != nil {
		t.Skipf("GPT-2 tokenizer files: %v", err)
	}
	dir = filepath.Join(t.TempDir(), "padded")
	if err := runInitModel([]string{"--config", "custom", "--n-embd", "8", "--n-layer", "1", "--n-head", "2", "--n-positions", "16",
		"--vocab", "50304", "--tokenizer", gpt2TokDir, "--out", dir}); err != nil {
		t.Fatal(err)
	}
	want := policy.Config{VocabSize: 50304, MaxSeqLen: 16, NumLayers: 1, NumHeads: 2, Channels: 8, LayerNormEps: 1e-5}
	if cfg, err := policy.LoadConfig(dir); err != nil || cfg != want {
		t.Fatalf("got %+v, %v; want %+v", cfg, err, want)
	}
	for _, f := range []string{"vocab.json", "merges.txt", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("tokenizer file %s not written: %v", f, err)
		}
	}
}

func TestInitModelErrors(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", "tiny"}, "--out DIR is required"},
		{[]string{"--config", "huge", "--out", out}, `--config "huge": allowed: tiny, small, gpt2, custom`},
		{[]string{"--config", "custom", "--out", out, "--n-embd", "8", "--n-layer", "1", "--n-head", "2", "--vocab", "10"}, "--config custom needs --n-positions"},
		{[]string{"--config", "custom", "--out", out, "--n-embd", "8", "--n-layer", "1", "--n-head", "2", "--n-positions", "4"}, "--config custom needs --vocab or --tokenizer"},
		{[]string{"--config", "tiny", "--out", out, "--n-head", "3"}, "--n-embd (128) must be a multiple of --n-head (3)"},
		{[]string{"--config", "tiny", "--out", out, "--n-layer", "0"}, "--n-layer must be > 0, got 0"},
		{[]string{"--config", "tiny", "--out", out, "--vocab", "100", "--tokenizer", gpt2TokDir}, "--vocab 100 is smaller than the tokenizer's 50257 ids"},
		{[]string{"--config", "tiny", "--out", out, "stray"}, `unexpected argument "stray"`},
	} {
		err := runInitModel(tc.args)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a refused init-model created %s", out)
	}
}
