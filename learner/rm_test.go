package learner

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner/datagen"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// byteTokenizerDir saves a byte-level tokenizer (256 bytes + <|endoftext|>,
// no merges): one token per character, which suits arithmetic.
func byteTokenizerDir(t testing.TB) string {
	t.Helper()
	tok, err := tokenizer.Train(strings.NewReader("0123456789+="), 257, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tokenizer")
	if err := tok.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// additionPairs writes addition preference files and returns their paths.
func additionPairs(t testing.TB, cfg datagen.AdditionConfig) (train, val string) {
	t.Helper()
	d, err := datagen.Addition(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := d.Write(dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, datagen.PrefTrainFile), filepath.Join(dir, datagen.PrefValFile)
}

// smallRM is a fresh model of the given width and depth on the byte tokenizer.
func smallRM(tokDir string, layers, heads, embd, positions int) ModelConfig {
	mc := DefaultModelConfig()
	mc.Tokenizer = tokDir
	mc.NLayer, mc.NHead, mc.NEmbd, mc.NPositions = layers, heads, embd, positions
	return mc
}

func newRMJob(t testing.TB, mc ModelConfig, dc DataConfig, tc TrainConfig, seed uint64, threads int) *rmJob {
	t.Helper()
	j, err := NewRM(mc, dc, tc, seed, kernels.NewCPU(threads))
	if err != nil {
		t.Fatal(err)
	}
	return j.(*rmJob)
}

// TestRMLearnsAddition: a small fresh reward model trained briefly on 2-digit
// addition pairs ranks held-out pairs above chance. From scratch the task is
// slow to learn (the last token must check the whole sum); the demo starts
// the reward model from an SFT model that can add, and reaches ~84% on
// 3-digit pairs (see TestRMExperiment).
func TestRMLearnsAddition(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for ~15 s")
	}
	train, val := additionPairs(t, datagen.AdditionConfig{Digits: 2, Train: 2200, Val: 300, Seed: 1})
	dc := DefaultDataConfig()
	dc.Train, dc.Val = []string{train}, []string{val}
	tc := DefaultTrainConfig()
	tc.Steps, tc.BatchSize, tc.SeqLen, tc.LR, tc.MinLR, tc.WarmupSteps, tc.EvalBatches = 3000, 32, 16, 3e-3, 3e-4, 50, 10
	j := newRMJob(t, smallRM(byteTokenizerDir(t), 2, 2, 64, 16), dc, tc, 1, 2)
	ev, err := j.NewEvaluator(EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := ev.Evaluate(j.Weights())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for !j.Done() {
		m, err := j.Step()
		if err != nil {
			t.Fatal(err)
		}
		if m.Step%250 == 0 {
			t.Logf("step %d loss %.4f acc %.3f lr %.2g gn %.3f", m.Step, m.Loss, m.Extra["accuracy"], m.LR, m.GradNorm)
		}
	}
	after, err := ev.Evaluate(j.Weights())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d steps in %v: held-out %v -> %v", tc.Steps, time.Since(start).Round(time.Millisecond), before.Metrics, after.Metrics)
	for _, k := range []string{"val_accuracy_digit", "val_accuracy_offset", "val_accuracy_addition"} {
		if _, ok := after.Metrics[k]; !ok {
			t.Fatalf("no %s in %v", k, after.Metrics)
		}
	}
	// From scratch the held-out accuracy rises 9-15 points in 3000 steps (0.47 ->
	// 0.56-0.63 over seeds 1-3, AVX-512 and pure-Go kernels). Any change of
	// rounding changes the trajectory (a 1-ulp different exp in GELU took seed 1
	// from 0.57 to 0.51 at 1500 steps, the length this test used to have), so
	// the bar sits below all of those. The demo's RM, started from an SFT model,
	// reaches > 90% on these pairs.
	if acc, acc0 := after.Metrics["val_accuracy"], before.Metrics["val_accuracy"]; !(acc > 0.53 && acc > acc0+0.05) {
		t.Fatalf("held-out accuracy %.3f after training (%.3f before), want > 0.53 and 0.05 above", acc, acc0)
	}
}

// TestRMResumeExact: a run checkpointed and restored into a fresh job gives the
// same losses, step for step, as one that never stopped.
func TestRMResumeExact(t *testing.T) {
	train, _ := additionPairs(t, datagen.AdditionConfig{Digits: 2, Train: 60, Val: 10, Seed: 2})
	dc := DefaultDataConfig()
	dc.Train, dc.ValFraction = []string{train}, 0.2
	tc := DefaultTrainConfig()
	tc.Steps, tc.BatchSize, tc.SeqLen, tc.GradAccum, tc.WarmupSteps = 8, 4, 12, 2, 2
	mc := smallRM(byteTokenizerDir(t), 1, 2, 16, 12)
	run := func(j *rmJob, n int) []float64 {
		var out []float64
		for range n {
			m, err := j.Step()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m.Loss, m.GradNorm, m.Extra["accuracy"])
		}
		return out
	}
	whole := run(newRMJob(t, mc, dc, tc, 3, 1), 8)

	first := newRMJob(t, mc, dc, tc, 3, 1)
	head := run(first, 5) // 5 steps x 2 x 4 = 40 pairs: crosses the 48-pair epoch in the tail
	dir := filepath.Join(t.TempDir(), "step-5")
	if err := first.SaveCheckpoint(dir); err != nil {
		t.Fatal(err)
	}
	second := newRMJob(t, mc, dc, tc, 3, 1)
	if err := second.Restore(dir); err != nil {
		t.Fatal(err)
	}
	if second.StepsDone() != 5 {
		t.Fatalf("restored at step %d, want 5", second.StepsDone())
	}
	tail := run(second, 3)
	got := append(head, tail...)
	for i := range whole {
		if math.Float64bits(got[i]) != math.Float64bits(whole[i]) {
			t.Fatalf("value %d (step %d): resumed %v, uninterrupted %v", i, i/3+1, got[i], whole[i])
		}
	}
	if !second.Done() {
		t.Fatalf("not done after %d steps", second.StepsDone())
	}

	// A checkpoint for other data, or a corrupt one, is refused.
	other := tc
	other.Steps = 9
	dc2 := dc
	dc2.ValFraction = 0.3
	if err := newRMJob(t, mc, dc2, other, 3, 1).Restore(dir); !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), `train.steps was "8", now "9"`) || !strings.Contains(err.Error(), "data was") {
		t.Fatalf("other data: got %v", err)
	}
	os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("garbage"), 0o644)
	if err := newRMJob(t, mc, dc, tc, 3, 1).Restore(dir); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("corrupt model file: got %v", err)
	}
}

// TestRMMalformedLines: every bad line is reported with file:line; within
// max_bad_fraction the job starts without them, above it refuses to.
func TestRMMalformedLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pairs.jsonl")
	var lines []string
	for i := range 20 {
		lines = append(lines, fmt.Sprintf(`{"prompt": "%d+1=", "chosen": "%d", "rejected": "%d", "kind": "offset"}`, i, i+1, i+2))
	}
	bad := map[int]string{ // line number (1-based) -> what the error must say
		3:  "bad JSON",
		7:  `missing field "rejected"`,
		9:  `field "chosen": want a string, got a number`,
		12: "the same text",
		15: `"kind"`,
	}
	lines[2] = `{"prompt": "1+1=", "chosen": "2"`
	lines[6] = `{"prompt": "1+1=", "chosen": "2"}`
	lines[8] = `{"prompt": "1+1=", "chosen": 2, "rejected": "3"}`
	lines[11] = `{"prompt": "1+1=", "chosen": "2", "rejected": "2"}`
	lines[14] = `{"prompt": "1+1=", "chosen": "2", "rejected": "3", "kind": "has space"}`
	lines = append(lines[:17], append([]string{""}, lines[17:]...)...) // a blank line is skipped, not bad
	os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)

	dc := DefaultDataConfig()
	dc.Train, dc.ValFraction = []string{path}, 0.2
	tc := DefaultTrainConfig()
	tc.Steps, tc.BatchSize, tc.SeqLen = 1, 2, 12
	mc := smallRM(byteTokenizerDir(t), 1, 2, 16, 12)
	_, err := NewRM(mc, dc, tc, 1, kernels.NewCPU(1))
	if !errors.Is(err, ErrData) || !strings.Contains(err.Error(), "5 of 20 lines") || !strings.Contains(err.Error(), path+":3:") {
		t.Fatalf("got %v, want a refusal naming 5 of 20 lines and %s:3", err, path)
	}
	dc.MaxBadFraction = 0.25
	j := newRMJob(t, mc, dc, tc, 1, 1)
	rep := j.DataReport()
	if rep.Bad != 5 || rep.Lines != 20 || len(rep.BadLines) != 5 || rep.TrainItems+rep.ValItems != 15 {
		t.Fatalf("report %+v", rep)
	}
	i := 0
	for _, n := range []int{3, 7, 9, 12, 15} {
		e := rep.BadLines[i].Error()
		if !strings.Contains(e, path+":"+strconv.Itoa(n)+":") || !strings.Contains(e, bad[n]) {
			t.Errorf("bad line %d reported as %q, want %q", n, e, bad[n])
		}
		i++
	}
	dc.Train = []string{filepath.Join(dir, "nothing-*.jsonl")}
	if _, err := NewRM(mc, dc, tc, 1, kernels.NewCPU(1)); !errors.Is(err, ErrData) || !strings.Contains(err.Error(), "matches no file") {
		t.Fatalf("empty glob: got %v", err)
	}
}

// TestRMEncode: the scored sequence is the templated prompt's tokens then the
// response's, with no end-of-text even when the text spells it; a long one
// keeps its end.
func TestRMEncode(t *testing.T) {
	tok, err := tokenizer.Load(byteTokenizerDir(t))
	if err != nil {
		t.Fatal(err)
	}
	e := prefEncoder{tok: tok, template: "Q: {prompt} A:", seqLen: 64}
	got := e.Encode("1+1=", " 2<|endoftext|>")
	if s := tok.Decode(got); s != "Q: 1+1= A: 2<|endoftext|>" {
		t.Fatalf("decoded %q", s)
	}
	for _, id := range got {
		if id == tok.EOT() {
			t.Fatalf("end-of-text id in %v", got)
		}
	}
	e.seqLen = 4
	if s := tok.Decode(e.Encode("1+1=", "22")); s != "A:22" {
		t.Fatalf("truncated to %q, want the last 4 tokens", s)
	}
}

// TestRMInitFromLM: model.init naming a language-model checkpoint starts the
// reward model from its trunk; naming a reward checkpoint continues it.
func TestRMInitFromLM(t *testing.T) {
	train, val := additionPairs(t, datagen.AdditionConfig{Digits: 1, Train: 20, Val: 5, Seed: 2})
	dc := DefaultDataConfig()
	dc.Train, dc.Val = []string{train}, []string{val}
	tc := DefaultTrainConfig()
	tc.Steps, tc.BatchSize, tc.SeqLen = 2, 2, 8
	mc := smallRM(byteTokenizerDir(t), 1, 2, 16, 8)
	j := newRMJob(t, mc, dc, tc, 1, 1)
	// An LM checkpoint of the same trunk.
	lmDir := filepath.Join(t.TempDir(), "lm")
	if err := j.model.Trunk.Save(lmDir); err != nil {
		t.Fatal(err)
	}
	if err := j.tok.Save(lmDir); err != nil {
		t.Fatal(err)
	}
	from := mc
	from.Init = lmDir
	k := newRMJob(t, from, dc, tc, 7, 1)
	w0, w1 := j.Weights(), k.Weights()
	total := j.model.Trunk.Layout.Total
	for i := 0; i < total; i++ {
		if w0[i] != w1[i] {
			t.Fatalf("trunk weight %d: %v, want %v", i, w1[i], w0[i])
		}
	}
	if w0[total] == w1[total] {
		t.Fatalf("head not redrawn from the seed")
	}
	rmDir := filepath.Join(t.TempDir(), "rm")
	if err := k.SaveCheckpoint(rmDir); err != nil {
		t.Fatal(err)
	}
	from.Init = rmDir
	r := newRMJob(t, from, dc, tc, 9, 1)
	for i, v := range r.Weights() {
		if v != w1[i] {
			t.Fatalf("reward checkpoint not continued: weight %d %v, want %v", i, v, w1[i])
		}
	}
}

// TestRMExperiment is a tuning harness, run by hand:
// TROUPE_RM_EXP="digits=3 layers=4 heads=4 embd=128 steps=2000 batch=32 lr=1e-3" go test -run RMExperiment -v ./learner
func TestRMExperiment(t *testing.T) {
	spec := os.Getenv("TROUPE_RM_EXP")
	if spec == "" {
		t.Skip("set TROUPE_RM_EXP to run")
	}
	p := map[string]float64{"digits": 3, "layers": 4, "heads": 4, "embd": 128, "steps": 2000, "batch": 32, "lr": 1e-3, "warmup": 100, "train": 20000, "val": 1000, "wd": 0.1, "threads": 2, "every": 250, "seed": 1, "sftlr": 3e-3}
	for _, kv := range strings.Fields(spec) {
		k, v, _ := strings.Cut(kv, "=")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatal(err)
		}
		p[k] = f
	}
	train, val := additionPairs(t, datagen.AdditionConfig{Digits: int(p["digits"]), Train: int(p["train"]), Val: int(p["val"]), Pairs: max(1, int(p["pairs"])), Seed: 1})
	dc := DefaultDataConfig()
	dc.Train, dc.Val = []string{train}, []string{val}
	tc := DefaultTrainConfig()
	tc.Steps, tc.BatchSize, tc.SeqLen, tc.LR, tc.MinLR, tc.WarmupSteps, tc.EvalBatches = int(p["steps"]), int(p["batch"]), 32, p["lr"], p["lr"]/10, int(p["warmup"]), 1000/int(p["batch"])
	tc.WeightDecay = p["wd"]
	mc := smallRM(byteTokenizerDir(t), int(p["layers"]), int(p["heads"]), int(p["embd"]), 32)
	if n := int(p["sft"]); n > 0 {
		cache := os.Getenv("TROUPE_RM_SFT_DIR") // reuse an SFT model across runs
		if _, err := os.Stat(filepath.Join(cache, "config.json")); cache != "" && err == nil {
			mc.Init = cache
		} else {
			mc.Init = sftAddition(t, mc, int(p["digits"]), n, p["sftlr"], int(p["threads"]))
			if cache != "" {
				os.CopyFS(cache, os.DirFS(mc.Init))
			}
		}
	}
	j := newRMJob(t, mc, dc, tc, uint64(p["seed"]), int(p["threads"]))
	ev, _ := j.NewEvaluator(EvalOptions{})
	start := time.Now()
	every := int(p["every"])
	var loss, acc float64
	for !j.Done() {
		m, err := j.Step()
		if err != nil {
			t.Fatal(err)
		}
		loss += m.Loss
		acc += m.Extra["accuracy"]
		if m.Step%every == 0 || j.Done() {
			r, _ := ev.Evaluate(j.Weights())
			t.Logf("step %d %.0fs train loss %.4f acc %.3f | val acc %.3f digit %.3f offset %.3f loss %.4f", m.Step, time.Since(start).Seconds(),
				loss/float64(every), acc/float64(every), r.Metrics["val_accuracy"], r.Metrics["val_accuracy_digit"], r.Metrics["val_accuracy_offset"], r.Metrics["val_loss"])
			loss, acc = 0, 0
		}
	}
}

// sftAddition trains a language model on addition (loss on the answer and its
// end-of-text) for the experiment harness and returns its checkpoint directory.
func sftAddition(t *testing.T, mc ModelConfig, digits, steps int, lr float64, threads int) string {
	tok, err := tokenizer.Load(mc.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := policy.NamedConfig("tiny")
	cfg.VocabSize, cfg.NumLayers, cfg.NumHeads, cfg.Channels, cfg.MaxSeqLen = tok.VocabSize(), mc.NLayer, mc.NHead, mc.NEmbd, mc.NPositions
	m, err := policy.New(cfg, kernels.NewCPU(threads))
	if err != nil {
		t.Fatal(err)
	}
	m.Init(11)
	d, err := datagen.Addition(datagen.AdditionConfig{Digits: digits, Train: min(20000, sftProblems(digits)), Val: 200, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	opt := policy.NewAdamW(m, policy.AdamWConfig{LR: float32(lr), WeightDecay: 0.1, GradClip: 1})
	const B = 64
	start := time.Now()
	tc := TrainConfig{Steps: steps, LR: lr, MinLR: lr / 10, WarmupSteps: 100}
	for step := 1; step <= steps; step++ {
		var seqs [][]int32
		var masks [][]float32
		T := 0
		for b := range B {
			e := d.SFTTrain[((step-1)*B+b)%len(d.SFTTrain)]
			p, r := tok.EncodeOrdinary(e.Prompt), append(tok.EncodeOrdinary(e.Response), tok.EOT())
			s := append(p, r...)
			mk := make([]float32, len(s)-1)
			for i := len(p) - 1; i < len(mk); i++ {
				mk[i] = 1
			}
			seqs, masks = append(seqs, s), append(masks, mk)
			T = max(T, len(s)-1)
		}
		tokens, targets, mask := make([]int32, B*T), make([]int32, B*T), make([]float32, B*T)
		for b, s := range seqs {
			copy(tokens[b*T:], s[:len(s)-1])
			copy(targets[b*T:], s[1:])
			copy(mask[b*T:], masks[b])
		}
		m.ZeroGrad()
		loss := m.LossAndBackward(tokens, targets, mask, B, T)
		opt.Update(m, float32(LRAt(tc, step)))
		if step%500 == 0 || step == steps {
			var prompts [][]int32
			for _, e := range d.SFTVal[:200] {
				prompts = append(prompts, tok.EncodeOrdinary(e.Prompt))
			}
			out, err := m.Generate(prompts, policy.SampleOptions{MaxNewTokens: digits + 2, StopTokens: []int32{tok.EOT()}})
			if err != nil {
				t.Fatal(err)
			}
			exact := 0
			for i, o := range out {
				toks := o.Tokens
				if len(toks) > 0 && toks[len(toks)-1] == tok.EOT() {
					toks = toks[:len(toks)-1]
				}
				if tok.Decode(toks) == d.SFTVal[i].Response {
					exact++
				}
			}
			t.Logf("sft step %d %.0fs loss %.4f exact match %.3f", step, time.Since(start).Seconds(), loss, float64(exact)/200)
		}
	}
	dir := filepath.Join(t.TempDir(), "sft")
	if err := policy.SaveWithTokenizer(m, tok, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sftProblems is how many training problems sftAddition can ask for: at most
// half of the distinct ones, less the held-out ones.
func sftProblems(digits int) int {
	n := 1
	for range digits {
		n *= 10
	}
	return n*(n+1)/4 - 200
}
