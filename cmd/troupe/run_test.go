package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/actors"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// runFixture is a directory with a byte-level tokenizer, a small corpus and
// SFT/RM data, for tiny end-to-end runs.
type runFixture struct{ dir string }

func newRunFixture(t *testing.T) runFixture {
	t.Helper()
	dir := t.TempDir()
	kjv, err := os.ReadFile(filepath.Join("..", "..", "data", "kjv.txt"))
	if err != nil {
		t.Skipf("corpus: %v", err)
	}
	corpus := kjv[:200_000]
	os.WriteFile(filepath.Join(dir, "corpus.txt"), corpus, 0o644)
	tok, err := tokenizer.Train(bytes.NewReader(corpus), 257, nil, nil) // the 256 bytes and <|endoftext|>
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Save(filepath.Join(dir, "tok")); err != nil {
		t.Fatal(err)
	}
	var sft, rm bytes.Buffer
	for i := 0; i < 64; i++ {
		a, b := 17*i%97, 31*i%89
		json.NewEncoder(&sft).Encode(map[string]string{"prompt": fmt.Sprintf("%d+%d=", a, b), "response": fmt.Sprint(a + b)})
		json.NewEncoder(&rm).Encode(map[string]string{"prompt": fmt.Sprintf("%d+%d=", a, b), "chosen": fmt.Sprint(a + b), "rejected": fmt.Sprint(a + b + 1 + i%9)})
	}
	os.WriteFile(filepath.Join(dir, "sft.jsonl"), sft.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "rm.jsonl"), rm.Bytes(), 0o644)
	return runFixture{dir}
}

// config writes a tiny run config into the fixture and returns its path.
func (f runFixture) config(t *testing.T, name, stage, init, train string, steps int) string {
	t.Helper()
	src := fmt.Sprintf(`stage: %s
run_dir: runs/%s
threads: 1
model: {init: %q, shape: tiny, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 64, tokenizer: tok}
data: {train: [%s], val_fraction: 0.2, cache_dir: cache}
train: {steps: %d, batch_size: 4, seq_len: 32, lr: 0.003, warmup_steps: 2, eval_batches: 2}
checkpoint: {every: 2, keep: 1}
publish: {every: 2}
evaluator: {replicas: 1, prompts: ["1+2="], max_new_tokens: 4, temperature: 0}
`, stage, name, init, train, steps)
	path := filepath.Join(f.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCapture(t *testing.T, target string, o runOptions) (string, error) {
	t.Helper()
	var out bytes.Buffer
	o.stdout = &out
	err := runStage(target, o)
	return out.String(), err
}

func readSteps(t *testing.T, runDir string) []actors.StepRecord {
	t.Helper()
	m, err := actors.ReadMetrics(filepath.Join(runDir, actors.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	return m.Steps
}

// TestRunPipeline runs pretrain -> sft -> rm end to end (real jobs, real
// actors, embedded NATS), each stage starting from the previous run directory.
func TestRunPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end runs: skipped with -short")
	}
	f := newRunFixture(t)
	pre := f.config(t, "pre", "pretrain", "", "corpus.txt", 4)
	out, err := runCapture(t, pre, runOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runDir := filepath.Join(f.dir, "runs", "pre")
	for _, want := range []string{"final val loss", "unigram entropy", "below unigram by", "plots"} {
		if !strings.Contains(out, want) {
			t.Errorf("pretrain output lacks %q:\n%s", want, out)
		}
	}
	if steps := readSteps(t, runDir); len(steps) != 4 || steps[3].Step != 4 {
		t.Fatalf("metrics.jsonl has %d steps, want 4", len(steps))
	}
	for _, p := range []string{actors.ConfigFile, actors.SamplesFile, "plots/overview.png", "plots/loss.svg", "checkpoints/latest", "checkpoints/step-4"} {
		if _, err := os.Stat(filepath.Join(runDir, p)); err != nil {
			t.Errorf("run directory: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(runDir, "checkpoints", "step-2")); err == nil {
		if _, s, _ := actors.BestCheckpoint(runDir); s != 2 {
			t.Errorf("step-2 kept though keep is 1 and it is not the best")
		}
	}
	// The saved config loads back to the same run.
	if cfg, err := actors.LoadRunConfig(filepath.Join(runDir, actors.ConfigFile)); err != nil || cfg.RunDir != runDir {
		t.Fatalf("saved config: %+v, %v", cfg, err)
	}
	// A second start in the same directory is refused, naming it.
	if _, err := runCapture(t, pre, runOptions{}); err == nil || !strings.Contains(err.Error(), runDir+" is not empty") {
		t.Fatalf("got %v, want a refusal naming %s", err, runDir)
	}

	// Resuming it with another model or schedule is refused; other sections may change.
	b, _ := os.ReadFile(pre)
	for _, c := range []struct{ from, to, section string }{{"n_embd: 32", "n_embd: 64", "model"}, {"steps: 4", "steps: 6", "train"}} {
		os.WriteFile(pre, bytes.Replace(b, []byte(c.from), []byte(c.to), 1), 0o644)
		if _, err := runCapture(t, pre, runOptions{resume: true}); err == nil || !strings.Contains(err.Error(), c.section+" differs") {
			t.Fatalf("got %v, want a refusal to resume with another %s section", err, c.section)
		}
	}
	os.WriteFile(pre, bytes.Replace(b, []byte("replicas: 1"), []byte("replicas: 2"), 1), 0o644)
	if _, err := runCapture(t, pre, runOptions{resume: true}); err != nil {
		t.Fatal(err)
	}
	if steps := readSteps(t, runDir); len(steps) != 4 {
		t.Fatalf("resumed finished run has %d steps, want 4", len(steps))
	}

	sft := f.config(t, "sft", "sft", "runs/pre", "sft.jsonl", 4)
	out, err = runCapture(t, sft, runOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "held-out response loss: initial") || !strings.Contains(out, "(step 0, version") {
		t.Errorf("sft output lacks the initial and final response loss:\n%s", out)
	}

	rm := f.config(t, "rm", "rm", "runs/sft", "rm.jsonl", 4)
	out, err = runCapture(t, rm, runOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "held-out pairwise accuracy") {
		t.Errorf("rm output lacks the accuracy:\n%s", out)
	}
}

// TestRunResume interrupts a run of each stage (as Ctrl-C does), resumes it
// from its run directory, and compares every step's loss with an
// uninterrupted run.
func TestRunResume(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end runs: skipped with -short")
	}
	f := newRunFixture(t)
	for _, c := range []struct{ stage, data string }{{"pretrain", "corpus.txt"}, {"sft", "sft.jsonl"}, {"rm", "rm.jsonl"}} {
		t.Run(c.stage, func(t *testing.T) {
			const steps = 12
			full := f.config(t, c.stage+"-full", c.stage, "", c.data, steps)
			if _, err := runCapture(t, full, runOptions{}); err != nil {
				t.Fatal(err)
			}
			want := readSteps(t, filepath.Join(f.dir, "runs", c.stage+"-full"))

			part := f.config(t, c.stage+"-part", c.stage, "", c.data, steps)
			runDir := filepath.Join(f.dir, "runs", c.stage+"-part")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stopAt := func(step int) { // as a Ctrl-C after step 5 would
				if step == 5 {
					cancel()
				}
			}
			_, err := runCapture(t, part, runOptions{ctx: ctx, afterStep: stopAt})
			_, stopped, perr := actors.LatestCheckpoint(runDir)
			if perr != nil {
				t.Fatal(perr)
			}
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("interrupted: checkpoint at step %d written", stopped)) {
				t.Fatalf("interrupted run: %v", err)
			}
			if stopped >= steps {
				t.Fatalf("the run was not interrupted (stopped at step %d)", stopped)
			}
			t.Logf("interrupted at step %d of %d", stopped, steps)

			// Resuming from the run directory (its saved config).
			if _, err := runCapture(t, runDir, runOptions{resume: true}); err != nil {
				t.Fatal(err)
			}
			got := readSteps(t, runDir)
			if len(got) != len(want) {
				t.Fatalf("resumed run has %d step records, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].Step != want[i].Step || got[i].Loss != want[i].Loss || got[i].LR != want[i].LR {
					t.Errorf("step %d: loss %v lr %v, uninterrupted %v %v", want[i].Step, got[i].Loss, got[i].LR, want[i].Loss, want[i].LR)
				}
			}
			// A run directory without --resume is refused.
			if _, err := runCapture(t, runDir, runOptions{}); err == nil || !strings.Contains(err.Error(), "--resume") {
				t.Fatalf("got %v, want a hint to use --resume", err)
			}
		})
	}
}

// ppoConfig writes a tiny PPO config: a fresh policy rewarded for answering
// with digits (a format rule) and for the right sum, 2 generators.
func (f runFixture) ppoConfig(t *testing.T, name string, iterations int) string {
	t.Helper()
	var rl bytes.Buffer
	for i := 0; i < 64; i++ {
		a, b := 13*i%97, 29*i%89
		json.NewEncoder(&rl).Encode(map[string]string{"prompt": fmt.Sprintf("%d+%d=", a, b), "answer": fmt.Sprint(a + b)})
	}
	os.WriteFile(filepath.Join(f.dir, "rl.jsonl"), rl.Bytes(), 0o644)
	src := fmt.Sprintf(`stage: ppo
run_dir: runs/%s
threads: 1
model: {shape: tiny, n_layer: 1, n_head: 2, n_embd: 32, n_positions: 32, tokenizer: tok}
data: {train: [rl.jsonl], val_fraction: 0.25}
ppo: {iterations: %d, prompts_per_iter: 16, max_new_tokens: 4, lr: 0.003, minibatches: 2, eval_prompts: 16}
critic: {init: policy, lr: 0.003}
reward: {rules: [{type: format, pattern: "^[0-9]"}, {type: exact_match}], missing_eos_penalty: 0}
generator: {replicas: 2}
checkpoint: {every: 2, keep: 1}
evaluator: {replicas: 1, every: 2, prompts: ["1+2="], max_new_tokens: 4, temperature: 0}
`, name, iterations)
	path := filepath.Join(f.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunPPO runs the RL stage from the CLI (learning itself is
// learner.TestPPOLearns's): the start-vs-trained comparison is printed, every
// iteration metric is recorded, and an interrupted run resumed from its
// directory trains exactly as an uninterrupted one.
func TestRunPPO(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end runs: skipped with -short")
	}
	f := newRunFixture(t)
	const its = 8
	out, err := runCapture(t, f.ppoConfig(t, "ppo-full", its), runOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ppo run finished", "start    trained", "exact-match accuracy (greedy)", "KL to the reference", "entropy", "distinct-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("ppo output lacks %q:\n%s", want, out)
		}
	}
	runDir := filepath.Join(f.dir, "runs", "ppo-full")
	want := readSteps(t, runDir)
	if len(want) != its {
		t.Fatalf("metrics.jsonl has %d iterations, want %d", len(want), its)
	}
	for _, k := range []string{"reward_mean", "score_mean", "kl", "entropy", "clip_frac", "approx_kl", "value_loss", "explained_variance",
		"response_length", "rollout_tokens_per_s", "generate_seconds", "reference_seconds", "reward_seconds", "train_seconds", "weights_version", "max_version_lag"} {
		if _, ok := want[its-1].Extra[k]; !ok {
			t.Errorf("iteration metrics lack %s", k)
		}
	}
	for _, p := range []string{"plots/reward.png", "plots/kl.svg", "checkpoints/step-8/critic/model.safetensors"} {
		if _, err := os.Stat(filepath.Join(runDir, p)); err != nil {
			t.Errorf("run directory: %v", err)
		}
	}

	part := f.ppoConfig(t, "ppo-part", its)
	partDir := filepath.Join(f.dir, "runs", "ppo-part")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = runCapture(t, part, runOptions{ctx: ctx, afterStep: func(it int) {
		if it == 3 {
			cancel()
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted run: %v", err)
	}
	if _, err := runCapture(t, partDir, runOptions{resume: true}); err != nil {
		t.Fatal(err)
	}
	got := readSteps(t, partDir)
	if len(got) != its {
		t.Fatalf("resumed run has %d iteration records, want %d", len(got), its)
	}
	for i := range want {
		if got[i].Loss != want[i].Loss || got[i].Extra["score_mean"] != want[i].Extra["score_mean"] {
			t.Errorf("iteration %d: loss %v score %v, uninterrupted %v %v", want[i].Step, got[i].Loss, got[i].Extra["score_mean"], want[i].Loss, want[i].Extra["score_mean"])
		}
	}
}
