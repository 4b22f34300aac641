package learner

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner/datagen"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// kjvSlice is the first 400 kB of the King James Bible (about 2,300 verses).
var kjvSlice = sync.OnceValues(func() ([]byte, error) {
	b, err := os.ReadFile("../data/kjv.txt")
	if err != nil {
		return nil, err
	}
	return b[:min(len(b), 400_000)], nil
})

// lmCorpus writes the KJV slice and a 512-id BPE trained on it into a temp
// directory, returning the text file and the tokenizer directory.
func lmCorpus(t testing.TB) (text, tokDir string) {
	t.Helper()
	b, err := kjvSlice()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Train(bytes.NewReader(b), 512, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	text, tokDir = filepath.Join(dir, "kjv.txt"), filepath.Join(dir, "tokenizer")
	if err := tok.Save(tokDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(text, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return text, tokDir
}

// lmTiny is a 2-layer, 64-wide model on tokDir's tokenizer.
func lmTiny(tokDir string) ModelConfig {
	mc := DefaultModelConfig()
	mc.Tokenizer, mc.NLayer, mc.NHead, mc.NEmbd, mc.NPositions = tokDir, 2, 4, 64, 64
	return mc
}

func pretrainSetup(t testing.TB) (ModelConfig, DataConfig, TrainConfig) {
	text, tokDir := lmCorpus(t)
	dc := DefaultDataConfig()
	dc.Train, dc.CacheDir = []string{text}, filepath.Join(t.TempDir(), "cache")
	tc := DefaultTrainConfig()
	tc.Steps, tc.BatchSize, tc.SeqLen, tc.WarmupSteps, tc.LR, tc.MinLR, tc.EvalBatches = 120, 16, 64, 10, 3e-3, 3e-4, 8
	return lmTiny(tokDir), dc, tc
}

// additionSFT writes 2-digit addition SFT files and a byte-level tokenizer.
func additionSFT(t testing.TB) (train, val, tokDir string) {
	t.Helper()
	d, err := datagen.Addition(datagen.AdditionConfig{Digits: 2, Train: 1500, Val: 200, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := d.Write(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Train(strings.NewReader("0123456789+="), 257, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokDir = filepath.Join(dir, "tokenizer")
	if err := tok.Save(tokDir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, datagen.SFTTrainFile), filepath.Join(dir, datagen.SFTValFile), tokDir
}

func sftSetup(t testing.TB) (ModelConfig, DataConfig, TrainConfig) {
	train, val, tokDir := additionSFT(t)
	dc := DefaultDataConfig()
	dc.Train, dc.Val = []string{train}, []string{val}
	tc := DefaultTrainConfig()
	tc.Steps, tc.BatchSize, tc.SeqLen, tc.WarmupSteps, tc.LR, tc.MinLR, tc.EvalBatches = 150, 32, 16, 10, 3e-3, 3e-4, 4
	mc := lmTiny(tokDir)
	mc.NPositions = 16
	return mc, dc, tc
}

func evalOnce(t testing.TB, j Job, opts EvalOptions) EvalResult {
	t.Helper()
	ev, err := j.NewEvaluator(opts)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ev.Evaluate(j.Weights())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPretrainLearns: ~120 steps of a 2-layer, 64-wide GPT on a slice of the
// KJV bring held-out loss well below the unigram entropy of the training
// tokens (what a model that ignores context reaches).
func TestPretrainLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for ~10 s")
	}
	mc, dc, tc := pretrainSetup(t)
	j, err := NewPretrain(mc, dc, tc, 1, kernels.NewCPU(0))
	if err != nil {
		t.Fatal(err)
	}
	rep := j.DataReport()
	if rep.UnigramEntropy < 3 || rep.UnigramEntropy > math.Log(512) {
		t.Fatalf("unigram entropy %.3f nats, want in [3, ln 512]", rep.UnigramEntropy)
	}
	opts := EvalOptions{Prompts: []string{"In the beginning"}, MaxNewTokens: 16}
	before := evalOnce(t, j, opts).Metrics["val_loss"]
	start := time.Now()
	var last StepMetrics
	for !j.Done() {
		if last, err = j.Step(); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	res := evalOnce(t, j, opts)
	after := res.Metrics["val_loss"]
	t.Logf("unigram entropy %.3f, val loss %.3f -> %.3f after %d steps (%v, %.0f tok/s); sample %q",
		rep.UnigramEntropy, before, after, last.Step, took, float64(tc.Steps*tc.BatchSize*tc.SeqLen)/took.Seconds(), res.Samples[0].Completion)
	if last.Step != tc.Steps || last.Tokens != tc.BatchSize*tc.SeqLen {
		t.Fatalf("last step %+v, want step %d with %d tokens", last, tc.Steps, tc.BatchSize*tc.SeqLen)
	}
	if want := rep.UnigramEntropy - 0.8; !(after < want) {
		t.Fatalf("val loss %.3f, want < unigram entropy - 0.8 = %.3f", after, want)
	}
	if len(res.Samples) != 1 || res.Samples[0].Prompt != "In the beginning" || res.Samples[0].Completion == "" {
		t.Fatalf("samples %+v, want one non-empty completion of the prompt", res.Samples)
	}
}

// TestSFTLearns: SFT of a fresh tiny model on 2-digit addition lowers the
// held-out response loss well below the starting model's.
func TestSFTLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for ~10 s")
	}
	mc, dc, tc := sftSetup(t)
	j, err := NewSFT(mc, dc, tc, 1, kernels.NewCPU(0))
	if err != nil {
		t.Fatal(err)
	}
	opts := EvalOptions{Prompts: []string{"12+34="}, MaxNewTokens: 4}
	r0 := evalOnce(t, j, opts)
	var m StepMetrics
	for !j.Done() {
		if m, err = j.Step(); err != nil {
			t.Fatal(err)
		}
	}
	if m.Extra["loss_tokens"] < float64(3*tc.BatchSize) || m.Tokens <= int(m.Extra["loss_tokens"]) {
		t.Fatalf("last step %+v: want >= 3 loss tokens per example and more tokens than loss tokens", m)
	}
	r1 := evalOnce(t, j, opts)
	t.Logf("held-out response loss %.3f -> %.3f; 12+34= -> %q", r0.Metrics["val_response_loss"], r1.Metrics["val_response_loss"], r1.Samples[0].Completion)
	if r1.Metrics["val_response_loss"] != r1.Metrics["val_loss"] {
		t.Fatalf("val_response_loss %v != val_loss %v", r1.Metrics["val_response_loss"], r1.Metrics["val_loss"])
	}
	if !(r1.Metrics["val_response_loss"] < r0.Metrics["val_response_loss"]-2) {
		t.Fatalf("held-out response loss %.3f -> %.3f, want a drop of > 2 nats", r0.Metrics["val_response_loss"], r1.Metrics["val_response_loss"])
	}
}

// runSteps takes n steps and returns their losses.
func runSteps(t testing.TB, j Job, n int) []float64 {
	t.Helper()
	var out []float64
	for range n {
		m, err := j.Step()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Loss)
	}
	return out
}

// TestResumeEquality: 6 steps in one go, and 3 steps, a checkpoint, a fresh
// job restored from it and 3 more, give bit-identical losses for steps 4-6
// and identical weights, for both stages (with gradient accumulation).
func TestResumeEquality(t *testing.T) {
	for _, stage := range []string{"pretrain", "sft"} {
		t.Run(stage, func(t *testing.T) {
			var mc ModelConfig
			var dc DataConfig
			var tc TrainConfig
			newJob := NewPretrain
			if stage == "pretrain" {
				mc, dc, tc = pretrainSetup(t)
			} else {
				mc, dc, tc = sftSetup(t)
				newJob = NewSFT
			}
			tc.Steps, tc.GradAccum, tc.WarmupSteps = 6, 2, 2
			build := func() Job {
				j, err := newJob(mc, dc, tc, 7, kernels.NewCPU(2))
				if err != nil {
					t.Fatal(err)
				}
				return j
			}
			whole := build()
			want := runSteps(t, whole, 6)

			first := build()
			runSteps(t, first, 3)
			dir := filepath.Join(t.TempDir(), "step-3")
			if err := first.SaveCheckpoint(dir); err != nil {
				t.Fatal(err)
			}
			resumed := build()
			if err := resumed.Restore(dir); err != nil {
				t.Fatal(err)
			}
			if resumed.StepsDone() != 3 {
				t.Fatalf("StepsDone after restore = %d, want 3", resumed.StepsDone())
			}
			got := runSteps(t, resumed, 3)
			for i := range got {
				if got[i] != want[3+i] {
					t.Fatalf("step %d: loss %v after resume, %v uninterrupted", 4+i, got[i], want[3+i])
				}
			}
			if !resumed.Done() {
				t.Fatalf("resumed job not done after %d steps", resumed.StepsDone())
			}
			w1, w2 := whole.Weights(), resumed.Weights()
			for i := range w1 {
				if w1[i] != w2[i] {
					t.Fatalf("weight %d: %v resumed, %v uninterrupted", i, w2[i], w1[i])
				}
			}
		})
	}
}

// TestRestoreRefuses: a missing, cut short, corrupt or mismatched checkpoint
// is refused with ErrCheckpoint and a reason, and the job is left untouched.
func TestRestoreRefuses(t *testing.T) {
	mc, dc, tc := pretrainSetup(t)
	tc.Steps = 4
	j, err := NewPretrain(mc, dc, tc, 1, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, j, 2)
	good := filepath.Join(t.TempDir(), "good")
	if err := j.SaveCheckpoint(good); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.safetensors", "config.json", OptimizerFile, TrainerStateFile, "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(good, name)); err != nil {
			t.Fatalf("checkpoint lacks %s: %v", name, err)
		}
	}
	// copyCkpt copies good into a new directory, applying edit to one file.
	copyCkpt := func(file string, edit func([]byte) []byte) string {
		dir := t.TempDir()
		ents, err := os.ReadDir(good)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(good, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if e.Name() == file {
				if b = edit(b); b == nil {
					continue
				}
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	half := func(b []byte) []byte { return b[:len(b)/2] }
	drop := func([]byte) []byte { return nil }
	tcOther := tc
	tcOther.LR *= 2
	other, err := NewPretrain(mc, dc, tcOther, 1, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		job  Job
		dir  string
		want string
	}{
		{"missing dir", j, filepath.Join(t.TempDir(), "nope"), TrainerStateFile},
		{"no trainer state", j, copyCkpt(TrainerStateFile, drop), TrainerStateFile},
		{"torn trainer state", j, copyCkpt(TrainerStateFile, half), TrainerStateFile},
		{"torn model", j, copyCkpt("model.safetensors", half), "model.safetensors"},
		{"no optimizer", j, copyCkpt(OptimizerFile, drop), OptimizerFile},
		{"torn optimizer", j, copyCkpt(OptimizerFile, half), OptimizerFile},
		{"edited config", j, copyCkpt(TrainerStateFile, func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"train.batch_size": "16"`), []byte(`"train.batch_size": "8"`), 1)
		}), "config_hash"},
		{"other lr", other, good, "train.lr"},
	}
	before := j.Weights()
	for _, c := range cases {
		err := c.job.Restore(c.dir)
		if !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Restore = %v, want ErrCheckpoint naming %s", c.name, err, c.want)
		}
	}
	if j.StepsDone() != 2 {
		t.Fatalf("StepsDone = %d after refused restores, want 2", j.StepsDone())
	}
	after := j.Weights()
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("weight %d changed by a refused restore", i)
		}
	}
	sftMC, sftDC, sftTC := sftSetup(t)
	s, err := NewSFT(sftMC, sftDC, sftTC, 1, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(good); !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), `"pretrain" checkpoint`) {
		t.Fatalf("sft Restore(pretrain checkpoint) = %v, want ErrCheckpoint naming the stage", err)
	}
}

// TestEvaluatorFixed: the evaluator scores the same batches every time (the
// same weights give the same figures), its samples are reproducible, and
// weights of the wrong size are refused.
func TestEvaluatorFixed(t *testing.T) {
	mc, dc, tc := sftSetup(t)
	j, err := NewSFT(mc, dc, tc, 1, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := j.NewEvaluator(EvalOptions{Prompts: []string{"1+2=", "30+40="}, MaxNewTokens: 3, Temperature: 1, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, j, 3)
	w := j.Weights()
	a, err := ev.Evaluate(w)
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, j, 1) // the job moving on does not change what the evaluator sees
	b, err := ev.Evaluate(w)
	if err != nil {
		t.Fatal(err)
	}
	if a.Metrics["val_loss"] != b.Metrics["val_loss"] || len(a.Samples) != 2 {
		t.Fatalf("two evaluations of the same weights: %v and %v (%d samples)", a.Metrics, b.Metrics, len(a.Samples))
	}
	for i := range a.Samples {
		if a.Samples[i] != b.Samples[i] {
			t.Fatalf("sample %d: %+v then %+v", i, a.Samples[i], b.Samples[i])
		}
	}
	if _, err := ev.Evaluate(w[1:]); err == nil {
		t.Fatal("Evaluate accepted weights of the wrong size")
	}
}

// TestNewLMConfigErrors: bad configs are refused with the field's YAML path.
func TestNewLMConfigErrors(t *testing.T) {
	mc, dc, tc := pretrainSetup(t)
	cases := []struct {
		name string
		edit func(*ModelConfig, *DataConfig, *TrainConfig)
		want string
	}{
		{"steps", func(_ *ModelConfig, _ *DataConfig, tc *TrainConfig) { tc.Steps = 0 }, "train.steps"},
		{"seq_len", func(_ *ModelConfig, _ *DataConfig, tc *TrainConfig) { tc.SeqLen = 65 }, "train.seq_len"},
		{"min_lr", func(_ *ModelConfig, _ *DataConfig, tc *TrainConfig) { tc.MinLR = 1 }, "train.min_lr"},
		{"shape", func(mc *ModelConfig, _ *DataConfig, _ *TrainConfig) { mc.Shape = "huge" }, "model.shape"},
		{"n_embd", func(mc *ModelConfig, _ *DataConfig, _ *TrainConfig) { mc.NEmbd = 66 }, "model.n_embd"},
		{"tokenizer", func(mc *ModelConfig, _ *DataConfig, _ *TrainConfig) { mc.Tokenizer = t.TempDir() }, "model.tokenizer"},
		{"init", func(mc *ModelConfig, _ *DataConfig, _ *TrainConfig) { mc.Init = t.TempDir() }, "model.init"},
		{"train glob", func(_ *ModelConfig, dc *DataConfig, _ *TrainConfig) { dc.Train = []string{"/nonexistent/*.txt"} }, `data.train: glob "/nonexistent/*.txt" matches no file`},
		{"train file", func(_ *ModelConfig, dc *DataConfig, _ *TrainConfig) { dc.Train = []string{"/nonexistent.txt"} }, "data.train"},
		{"val_fraction", func(_ *ModelConfig, dc *DataConfig, _ *TrainConfig) { dc.ValFraction = 1e-6 }, "data.val_fraction"},
		{"val glob", func(_ *ModelConfig, dc *DataConfig, _ *TrainConfig) { dc.Val = []string{"/nonexistent/*.txt"} }, "data.val"},
	}
	for _, c := range cases {
		mc, dc, tc := mc, dc, tc
		c.edit(&mc, &dc, &tc)
		_, err := NewPretrain(mc, dc, tc, 1, kernels.NewCPU(1))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: NewPretrain = %v, want an error naming %s", c.name, err, c.want)
		}
	}
}

// TestEvaluatorConcurrent: an evaluator runs beside its job's steps (run
// with -race to check that they share nothing mutable).
func TestEvaluatorConcurrent(t *testing.T) {
	mc, dc, tc := pretrainSetup(t)
	tc.Steps, tc.BatchSize = 6, 4
	j, err := NewPretrain(mc, dc, tc, 1, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := j.NewEvaluator(EvalOptions{Prompts: []string{"And God said"}, MaxNewTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	w := j.Weights()
	go func() {
		for range 3 {
			if _, err := ev.Evaluate(w); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	runSteps(t, j, 6)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
