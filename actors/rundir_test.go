package actors

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
)

// fakeCheckpoint does what the learner does: write the directory, then tell the sink.
func fakeCheckpoint(t *testing.T, r *RunDir, step int) {
	t.Helper()
	dir := r.CheckpointDir(step)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("x"), 0o644)
	if got, err := r.OnCheckpoint(step, dir); err != nil || got != r.StepDir(step) {
		t.Fatalf("OnCheckpoint(%d): got %q, %v; want %s", step, got, err, r.StepDir(step))
	}
}

func checkpointNames(t *testing.T, runDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(runDir, CheckpointsDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

func TestRunDirRotationKeepsLastAndBest(t *testing.T) {
	for _, c := range []struct {
		stage string
		fig   func(step int) map[string]float64
		best  string
	}{
		// val_loss is lowest at step 20: the best, kept after falling out of the last 2.
		{"pretrain", func(s int) map[string]float64 { return map[string]float64{"val_loss": math.Abs(float64(s-20)) + 1} }, "step-20"},
		// val_accuracy is highest at step 30.
		{"rm", func(s int) map[string]float64 {
			return map[string]float64{"val_accuracy": 1 - math.Abs(float64(s-30))/100, "val_loss": 1}
		}, "step-30"},
	} {
		t.Run(c.stage, func(t *testing.T) {
			dir := t.TempDir()
			r, err := OpenRunDir(dir, RunDirOptions{Stage: c.stage, Keep: 2, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			for step := 10; step <= 80; step += 10 {
				r.OnEval("evaluator-0", int64(step/10), step, learner.EvalResult{Metrics: c.fig(step)})
				fakeCheckpoint(t, r, step)
			}
			// A checkpoint being written (in its staging directory) is left alone.
			staging := r.CheckpointDir(90)
			os.MkdirAll(staging, 0o755)
			r.OnEval("evaluator-0", 9, 85, learner.EvalResult{Metrics: c.fig(85)})
			want := []string{c.best, "step-70", "step-80", filepath.Base(staging)}
			sort.Strings(want)
			if got := checkpointNames(t, dir); !reflect.DeepEqual(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			if d, s, err := LatestCheckpoint(dir); err != nil || s != 80 || d != r.StepDir(80) {
				t.Fatalf("latest: got %q %d %v, want step 80", d, s, err)
			}
			if _, s, err := BestCheckpoint(dir); err != nil || "step-"+fmt.Sprint(s) != c.best {
				t.Fatalf("best: got %d %v, want %s", s, err, c.best)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunDirMetricsAndResume(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenRunDir(dir, RunDirOptions{Stage: "sft", Keep: 1, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	// Steps, publishes and evaluations arrive from several goroutines.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for step := 1; step <= 40; step++ {
			r.OnStep(learner.StepMetrics{Step: step, Loss: 5 - float64(step)/10, LR: 1e-3, GradNorm: 1, Tokens: 512,
				Extra: map[string]float64{"accuracy": 0.5}}, int64(step/10))
			if step%10 == 0 {
				r.OnPublish(int64(step/10+1), step, 1<<20, "abc")
				fakeCheckpoint(t, r, step)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for v := 0; v <= 4; v++ {
			r.OnEval(fmt.Sprintf("evaluator-%d", v%2), int64(v+1), v*10, learner.EvalResult{
				Metrics: map[string]float64{"val_loss": 4 - float64(v)/10},
				Samples: []learner.Sample{{Prompt: "2+2=", Completion: "4"}, {Prompt: "Define cat:", Completion: "a\nfeline \"pet\""}}})
		}
	}()
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// Every line of every file parses on its own.
	for _, f := range []string{MetricsFile, SamplesFile, EventsFile} {
		fh, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		n := 0
		for sc.Scan() {
			var v map[string]any
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				t.Fatalf("%s line %d: %v: %s", f, n+1, err, sc.Bytes())
			}
			n++
		}
		fh.Close()
		if n == 0 {
			t.Fatalf("%s is empty", f)
		}
	}
	m, err := ReadMetrics(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Steps) != 40 || len(m.Evals) != 5 {
		t.Fatalf("got %d steps and %d evals, want 40 and 5", len(m.Steps), len(m.Evals))
	}
	if s := m.Steps[39]; s.Step != 40 || s.Tokens != 512 || !(s.TokensPerS > 0) || s.Elapsed <= 0 || s.Extra["accuracy"] != 0.5 {
		t.Fatalf("last step record %+v", s)
	}
	if first, _ := m.FirstEval(); first.Step != 0 || first.Eval["val_loss"] != 4 {
		t.Fatalf("first eval %+v", first)
	}
	if last, _ := m.LastEval(); last.Step != 40 || math.Abs(last.Eval["val_loss"]-3.6) > 1e-12 {
		t.Fatalf("last eval %+v", last)
	}
	if got := checkpointNames(t, dir); !reflect.DeepEqual(got, []string{"step-40"}) {
		t.Fatalf("checkpoints %v, want [step-40] (keep 1; the best, step 40, is the last)", got)
	}

	// A crashed process had written step 41..45, an eval at 45 and a torn
	// line; resuming from the checkpoint at 40 drops all of it.
	f, _ := os.OpenFile(filepath.Join(dir, MetricsFile), os.O_APPEND|os.O_WRONLY, 0)
	for s := 41; s <= 45; s++ {
		fmt.Fprintf(f, `{"step":%d,"loss":1,"lr":0.001,"grad_norm":1,"tokens":512,"tokens_per_s":1,"version":5,"elapsed_s":99}`+"\n", s)
	}
	fmt.Fprintf(f, `{"eval":{"val_loss":1},"step":45,"version":6,"evaluator":"e","elapsed_s":99}`+"\n")
	fmt.Fprintf(f, `{"step":46,"lo`)
	f.Close()
	os.MkdirAll(filepath.Join(dir, CheckpointsDir, "step-45"), 0o755)
	if _, err := ReadMetrics(filepath.Join(dir, MetricsFile)); err != nil {
		t.Fatalf("a torn last line should be skipped: %v", err)
	}
	elapsed := m.Steps[39].Elapsed

	r, err = OpenRunDir(dir, RunDirOptions{Stage: "sft", Keep: 1, Resume: true, ResumeStep: 40, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	r.OnStep(learner.StepMetrics{Step: 41, Loss: 0.9, Tokens: 512}, 5)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	m, err = ReadMetrics(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Steps) != 41 || len(m.Evals) != 5 || m.Steps[40].Loss != 0.9 || m.Steps[40].Elapsed < elapsed {
		t.Fatalf("after resume: %d steps, %d evals, last %+v (elapsed before %g)", len(m.Steps), len(m.Evals), m.Steps[40], elapsed)
	}
	if got := checkpointNames(t, dir); !reflect.DeepEqual(got, []string{"step-40"}) {
		t.Fatalf("checkpoints after resume %v, want [step-40]", got)
	}
	b, _ := os.ReadFile(filepath.Join(dir, EventsFile))
	if !strings.Contains(string(b), `"event":"resume","step":40`) {
		t.Fatalf("events.jsonl has no resume event:\n%s", b)
	}
}

func TestWritePlots(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	enc := json.NewEncoder(f)
	for s := 1; s <= 300; s++ {
		lr := 1e-3 * math.Min(1, float64(s)/30) * (0.55 + 0.45*math.Cos(math.Pi*float64(s)/300))
		loss := 1.6 + 3.9*math.Exp(-float64(s)/60) + 0.15*math.Sin(float64(s)*1.7)
		enc.Encode(StepRecord{Step: s, Loss: loss, LR: lr, GradNorm: 1, Tokens: 2048, TokensPerS: 9000 + 800*math.Sin(float64(s)), Elapsed: float64(s) / 4,
			Extra: map[string]float64{"accuracy": 0.5 + 0.4*(1-math.Exp(-float64(s)/80)),
				"reward_mean": 1 - math.Exp(-float64(s)/50), "score_mean": 1.1 - math.Exp(-float64(s)/50),
				"kl": 2 * (1 - math.Exp(-float64(s)/100)), "entropy": 1 + math.Exp(-float64(s)/100)}})
		if s%25 == 0 || s == 1 {
			for _, ev := range []string{"evaluator-0", "evaluator-1"} {
				enc.Encode(EvalRecord{Step: s, Version: int64(s / 25), Evaluator: ev, Elapsed: float64(s) / 4,
					Eval: map[string]float64{"val_loss": 1.7 + 3.8*math.Exp(-float64(s)/60), "val_accuracy": 0.5 + 0.42*(1-math.Exp(-float64(s)/70)),
						"val_accuracy_shuffled": 0.5 + 0.3*(1-math.Exp(-float64(s)/90)),
						"val_score":             1 - math.Exp(-float64(s)/60), "val_exact_match": 0.7 + 0.1*(1-math.Exp(-float64(s)/60)),
						"val_kl": 2 * (1 - math.Exp(-float64(s)/100)), "val_entropy": 1 + math.Exp(-float64(s)/100)}})
			}
		}
	}
	f.Close()
	files, err := WritePlotsFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range plotNames {
		want = append(want, filepath.Join(dir, PlotsDir, n+".png"), filepath.Join(dir, PlotsDir, n+".svg"))
	}
	sort.Strings(files)
	sort.Strings(want)
	if !reflect.DeepEqual(files, want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil || len(b) < 1000 {
			t.Fatalf("%s: %d bytes, %v", p, len(b), err)
		}
		if strings.HasSuffix(p, ".png") && string(b[1:4]) != "PNG" {
			t.Fatalf("%s is not a PNG", p)
		}
		if strings.HasSuffix(p, ".svg") && !strings.Contains(string(b[:200]), "<svg") {
			t.Fatalf("%s is not an SVG", p)
		}
	}
	if out := os.Getenv("TROUPE_PLOT_OUT"); out != "" { // to look at them
		for _, p := range files {
			b, _ := os.ReadFile(p)
			os.WriteFile(filepath.Join(out, filepath.Base(p)), b, 0o644)
		}
	}

	// No accuracy anywhere: no accuracy plot, and the overview has three tiles.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, MetricsFile), []byte(`{"step":1,"loss":3,"lr":0.001,"grad_norm":1,"tokens":10,"tokens_per_s":100,"version":0,"elapsed_s":1}
{"eval":{"val_loss":3.1},"step":1,"version":1,"evaluator":"e","elapsed_s":1}
`), 0o644)
	files, err = WritePlotsFiles(dir2)
	if err != nil || len(files) != 8 {
		t.Fatalf("got %v, %v; want 8 files", files, err)
	}
	if _, err := os.Stat(filepath.Join(dir2, PlotsDir, "accuracy.png")); err == nil {
		t.Fatalf("accuracy plot written without accuracy data")
	}
}
