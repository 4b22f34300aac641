package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/actors"
	"github.com/troupe-rl/troupe/actors/examples"
	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/learner/datagen"
)

func TestInitExamplesLoad(t *testing.T) {
	out := filepath.Join(t.TempDir(), "cfg")
	if err := runInit([]string{"--out", out}); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	for _, s := range examples.Stages {
		cfg, err := actors.LoadRunConfig(filepath.Join(out, s+".yaml"))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if cfg.Stage != s {
			t.Errorf("%s.yaml has stage %q", s, cfg.Stage)
		}
		// The paths, rewritten for the new directory, name the same files
		// relative to the working directory.
		if want := filepath.Join(wd, "runs", s); cfg.RunDir != want {
			t.Errorf("%s: run_dir %q, want %q", s, cfg.RunDir, want)
		}
		if !strings.HasPrefix(cfg.Data.Train[0], filepath.Join(wd, "data")+string(filepath.Separator)) {
			t.Errorf("%s: data.train %q is not under %s/data", s, cfg.Data.Train[0], wd)
		}
		// sft and rm read the files `troupe data` writes.
		for _, f := range append(append([]string(nil), cfg.Data.Train...), cfg.Data.Val...) {
			switch b := filepath.Base(f); {
			case s == "pretrain" && b == "kjv.txt":
			case s == "sft" && (b == datagen.SFTTrainFile || b == datagen.SFTValFile):
			case s == "rm" && (b == datagen.PrefTrainFile || b == datagen.PrefValFile):
			case s == "ppo" && (b == datagen.RLTrainFile || b == datagen.RLValFile):
			default:
				t.Errorf("%s: data file %s is not one that troupe data writes", s, f)
			}
		}
		if len(cfg.Warnings()) != 0 {
			t.Errorf("%s: warnings %v", s, cfg.Warnings())
		}
	}
	// Every field of every section is written (and so commented) in every example.
	for _, s := range examples.Stages {
		src, _ := examples.FS.ReadFile(s + ".yaml")
		for _, key := range []string{"stage:", "run_dir:", "seed:", "threads:", "init:", "shape:", "n_layer:", "n_head:", "n_embd:", "n_positions:", "tokenizer:",
			"train:", "val:", "val_fraction:", "max_bad_fraction:", "template:", "cache_dir:", "steps:", "batch_size:", "seq_len:", "grad_accum:",
			"lr:", "min_lr:", "warmup_steps:", "weight_decay:", "beta1:", "beta2:", "grad_clip:", "eval_batches:", "every:", "keep:",
			"replicas:", "prompts:", "max_new_tokens:", "temperature:", "url:"} {
			if s == "ppo" && slices.Contains([]string{"steps:", "batch_size:", "grad_accum:", "min_lr:", "warmup_steps:", "eval_batches:"}, key) {
				continue // ppo has no train section: its ppo section says how it trains
			}
			if !strings.Contains(string(src), key) {
				t.Errorf("%s.yaml does not set %s", s, key)
			}
		}
	}
	// The RL example documents every field of its sections.
	src, _ := examples.FS.ReadFile("ppo.yaml")
	for _, v := range []any{learner.PPOConfig{}, learner.CriticConfig{}, learner.RewardConfig{}, actors.PoolConfig{}} {
		tt := reflect.TypeOf(v)
		for i := 0; i < tt.NumField(); i++ {
			key := strings.Split(tt.Field(i).Tag.Get("yaml"), ",")[0] + ":"
			if !strings.Contains(string(src), key) {
				t.Errorf("ppo.yaml does not set %s", key)
			}
		}
	}

	// Existing files are not overwritten without --force.
	if err := runInit([]string{"--out", out, "--stage", "sft"}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("got %v, want a refusal to overwrite", err)
	}
	if err := runInit([]string{"--out", out, "--stage", "sft", "--force"}); err != nil {
		t.Fatal(err)
	}
	if err := runInit([]string{"--stage", "a2c"}); !errors.Is(err, errUsage) {
		t.Fatalf("got %v, want a usage error", err)
	}
}

// configs/ in the repository is `troupe init --out configs` run at the root.
func TestInitConfigsDirUpToDate(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range examples.Stages {
		src, _ := examples.FS.ReadFile(s + ".yaml")
		want, err := actors.RelocateConfig(src, root, filepath.Join(root, "configs"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, "configs", s+".yaml"))
		if err != nil || string(got) != string(want) {
			t.Errorf("configs/%s.yaml is out of date (%v); regenerate it: go run ./cmd/troupe init --out configs --force", s, err)
		}
	}
}
