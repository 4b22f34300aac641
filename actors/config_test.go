package actors

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/learner"
)

const minimalConfig = `stage: pretrain
data:
  train: [corpus.txt]
`

func TestLoadRunConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(path, []byte(minimalConfig+"train:\n  lr: 3e-3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadRunConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultRunConfig()
	want.Stage = "pretrain"
	want.Train.LR = 3e-3
	want.Train.MinLR = 3e-4 // lr/10 when min_lr is not set
	want.Data.Train = []string{filepath.Join(dir, "corpus.txt")}
	wd, _ := os.Getwd()
	want.RunDir = filepath.Join(wd, "runs", "pretrain") // defaults are relative to the working directory
	want.Model.Tokenizer = filepath.Join(wd, "data", "gpt2")
	want.Data.CacheDir = filepath.Join(wd, ".troupe-cache")
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
}

func TestLoadRunConfigPaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "run.yaml")
	src := `stage: sft
run_dir: ../runs/x
model: {init: /abs/ckpt, tokenizer: tok}
data:
  train: "data/*.jsonl"   # one string is a one-element list
  val: [data/val.jsonl]
  cache_dir: cache
`
	cfg, err := ParseRunConfig(path, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	for _, c := range []struct{ got, want string }{
		{cfg.RunDir, filepath.Join(dir, "runs", "x")},
		{cfg.Model.Init, "/abs/ckpt"},
		{cfg.Model.Tokenizer, filepath.Join(sub, "tok")},
		{cfg.Data.Train[0], filepath.Join(sub, "data", "*.jsonl")},
		{cfg.Data.Val[0], filepath.Join(sub, "data", "val.jsonl")},
		{cfg.Data.CacheDir, filepath.Join(sub, "cache")},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}

	// Saved into a run directory and loaded back, the config is the same.
	saved := filepath.Join(dir, "runs", "x", "config.yaml")
	os.MkdirAll(filepath.Dir(saved), 0o755)
	if err := SaveRunConfig(saved, cfg, "resolved by a test\nsecond line"); err != nil {
		t.Fatal(err)
	}
	back, err := LoadRunConfig(saved)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("reloaded %+v\nwant %+v", back, cfg)
	}
	b, _ := os.ReadFile(saved)
	if !strings.HasPrefix(string(b), "# resolved by a test\n# second line\n") || !strings.Contains(string(b), "run_dir: .\n") {
		t.Fatalf("saved config:\n%s", b)
	}
}

func TestLoadRunConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		src  string
		want string // the whole message after "run.yaml: "
	}{
		{"unknown top-level key", minimalConfig + "stpes: 3\n",
			"line 4: stpes: unknown key; allowed: stage, run_dir, seed, threads, device, max_non_finite, model, data, train, ppo, critic, reward, generator, reference, checkpoint, publish, evaluator, nats, cluster"},
		{"unknown key in a section", minimalConfig + "train:\n  steps: 10\n  lrr: 0.1\n",
			"line 6: train.lrr: unknown key; allowed: steps, batch_size, seq_len, grad_accum, lr, min_lr, warmup_steps, weight_decay, beta1, beta2, grad_clip, eval_batches"},
		{"unknown key in a flow mapping", minimalConfig + "checkpoint: {every: 10, kept: 2}\n",
			"line 4: checkpoint.kept: unknown key; allowed: every, keep"},
		{"unknown key under a list", minimalConfig + "evaluator:\n  prompts:\n    - {text: hi}\n",
			"line 6: evaluator.prompts[0]: want a string, got a mapping"},
		{"bad enum", "stage: pretrian\ndata: {train: [a]}\n",
			`line 1: stage: "pretrian" is not a stage; allowed values: pretrain, sft, rm, ppo`},
		{"ppo without a reward", "stage: ppo\ndata: {train: [a]}\n",
			"reward: needs a model (a reward-model checkpoint) or at least one rule (exact_match, length, format)"},
		{"ppo bad algorithm", "stage: ppo\ndata: {train: [a]}\nreward: {rules: [{type: exact_match}]}\nppo:\n  algorithm: reinforce\n",
			`line 5: ppo.algorithm: "reinforce" is not one of ppo, a2c`},
		{"ppo bad rule", "stage: ppo\ndata: {train: [a]}\nreward: {rules: [{type: exact}]}\n",
			`line 3: reward.rules[0].type: "exact" is not one of exact_match, length, format`},
		{"bad device", minimalConfig + "device: gpu\n",
			`line 4: device: "gpu" is not a device; allowed values: cpu, cuda`},
		{"bad max_non_finite", minimalConfig + "max_non_finite: 0\n",
			"line 4: max_non_finite: must be >= 1, got 0"},
		{"ppo bad pool", "stage: ppo\ndata: {train: [a]}\nreward: {rules: [{type: exact_match}]}\ngenerator: {replicas: 0}\n",
			"line 4: generator.replicas: must be in [1, 64], got 0"},
		{"bad enum in a learner section", minimalConfig + "model:\n  shape: huge\n",
			`line 5: model.shape: "huge" is not a shape; allowed values: tiny, small, gpt2`},
		{"number out of range", minimalConfig + "train:\n  steps: 0\n",
			"line 5: train.steps: must be >= 1, got 0"},
		{"fraction out of range", minimalConfig + "  val_fraction: 1.5\n",
			"line 4: data.val_fraction: must be in [0, 1), got 1.5"},
		{"own number out of range", minimalConfig + "evaluator:\n  replicas: 100\n",
			"line 5: evaluator.replicas: must be in [0, 64], got 100"},
		{"negative temperature", minimalConfig + "evaluator: {temperature: -1}\n",
			"line 4: evaluator.temperature: must be in [0, 10] (0 = greedy), got -1"},
		{"cross-field range", minimalConfig + "train: {lr: 1e-3, min_lr: 0.1}\n",
			"line 4: train.min_lr: must be in [0, lr=0.001], got 0.1"},
		{"missing stage", "data: {train: [a]}\n",
			"stage: required; allowed values: pretrain, sft, rm, ppo"},
		{"missing data", "stage: rm\n",
			"data.train: at least one file or glob is required"},
		{"wrong type", minimalConfig + "train:\n  steps: many\n",
			`line 5: train.steps: want an integer, got "many"`},
		{"float for an int", minimalConfig + "checkpoint:\n  every: 2.5\n",
			`line 5: checkpoint.every: want an integer, got "2.5"`},
		{"negative seed", minimalConfig + "seed: -1\n",
			`line 4: seed: want a non-negative integer, got "-1"`},
		{"list for a number", minimalConfig + "threads: [1, 2]\n",
			"line 4: threads: want an integer, got a list"},
		{"scalar for a section", minimalConfig + "train: fast\n",
			`line 4: train: want a mapping with keys steps, batch_size, seq_len, grad_accum, lr, min_lr, warmup_steps, weight_decay, beta1, beta2, grad_clip, eval_batches, got "fast"`},
		{"bad url", minimalConfig + "nats: {url: 'http://x:4222'}\n",
			`line 4: nats.url: scheme "http"; allowed: nats, tls, ws, wss (or empty for an embedded server)`},
		{"two documents", minimalConfig + "---\nstage: sft\n",
			"line 4: a second YAML document; a run config is one document"},
		{"not YAML", "stage: [\n", "line 1: did not find expected node content"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseRunConfig("run.yaml", []byte(c.src))
			if err == nil {
				t.Fatalf("got no error, want %q", c.want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if got := err.Error(); got != "run.yaml: "+c.want {
				t.Fatalf("got  %q\nwant %q", got, "run.yaml: "+c.want)
			}
		})
	}
	// Validation errors of the learner sections keep their cause.
	_, err := ParseRunConfig("run.yaml", []byte(minimalConfig+"train: {steps: 0}\n"))
	if !errors.Is(err, learner.ErrConfig) {
		t.Fatalf("got %v, want it to wrap learner.ErrConfig", err)
	}
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "tok"), 0o755)
	cfg, err := ParseRunConfig(filepath.Join(dir, "run.yaml"), []byte("stage: pretrain\nmodel: {tokenizer: tok}\ndata: {train: ['*.txt', 'missing/*.txt']}\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.CheckFiles()
	if err == nil || !strings.Contains(err.Error(), "data.train[1]: "+filepath.Join(dir, "missing", "*.txt")+" matches no file") {
		t.Fatalf("got %v, want data.train[1] to match no file", err)
	}
	cfg.Data.Train = cfg.Data.Train[:1]
	if err := cfg.CheckFiles(); err != nil {
		t.Fatal(err)
	}
}

func TestRelocateConfig(t *testing.T) {
	src := `# a comment: data/kjv.txt stays
stage: pretrain
run_dir: runs/x   # trailing comment
model: {init: "runs/pre", tokenizer: /abs/tok}
data:
  train: [data/a.txt, 'data/b*.txt']
  val:
    - data/v.txt
  cache_dir: .cache
evaluator:
  prompts: [data/not-a-path]
`
	got, err := RelocateConfig([]byte(src), "/repo", "/repo/configs")
	if err != nil {
		t.Fatal(err)
	}
	want := `# a comment: data/kjv.txt stays
stage: pretrain
run_dir: ../runs/x # trailing comment
model: {init: "../runs/pre", tokenizer: /abs/tok}
data:
  train: [../data/a.txt, '../data/b*.txt']
  val:
    - ../data/v.txt
  cache_dir: ../.cache
evaluator:
  prompts: [data/not-a-path]
`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	// Loaded from /repo/configs, the relocated paths are those of /repo.
	a, err := ParseRunConfig("/repo/run.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseRunConfig("/repo/configs/run.yaml", got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("relocated config differs:\n%+v\n%+v", a, b)
	}
}
