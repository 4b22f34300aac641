package actors

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
)

func TestProgressTerminal(t *testing.T) {
	var term bytes.Buffer
	p := NewProgress(ProgressOptions{Terminal: &term, Stage: "pretrain", Total: 200, Start: 100, LineEvery: time.Hour})
	logw := p.LogWriter(&term)
	for s := 101; s <= 200; s++ {
		p.Step(learner.StepMetrics{Step: s, Loss: 2.5, Tokens: 4096})
		if s == 150 {
			p.Eval(150, map[string]float64{"val_loss": 2.75})
			logw.Write([]byte("a log line\n"))
		}
	}
	p.Finish()
	out := term.String()
	// With a one-hour redraw interval only the last step draws, then Finish.
	if n := strings.Count(out, "\r\x1b[K"); n != 2 {
		t.Fatalf("got %d redraws, want 2:\n%q", n, out)
	}
	if !strings.Contains(out, "a log line\n") {
		t.Fatalf("log line missing: %q", out)
	}
	if !strings.Contains(out, "step 200/200 (100%)  loss 2.5000  val_loss 2.7500@150") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("final line: %q", out)
	}
}

func TestProgressLogLines(t *testing.T) {
	var logs bytes.Buffer
	p := NewProgress(ProgressOptions{Logger: zerolog.New(&logs), Stage: "rm", Total: 10, LogEvery: time.Hour})
	for s := 1; s <= 10; s++ {
		time.Sleep(time.Millisecond)
		p.Step(learner.StepMetrics{Step: s, Loss: 0.6, Tokens: 100})
		if s == 5 {
			p.Eval(5, map[string]float64{"val_accuracy": 0.9})
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 { // the evaluation and the final step
		t.Fatalf("got %d log lines, want 2:\n%s", len(lines), logs.String())
	}
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &last); err != nil {
		t.Fatal(err)
	}
	if last["step"] != 10.0 || last["val_accuracy"] != 0.9 || last["message"] != "progress" || !(last["tokens_per_s"].(float64) > 0) {
		t.Fatalf("progress line %v", last)
	}
	if p.LogWriter(&logs) != &logs {
		t.Fatalf("LogWriter without a terminal should return its writer")
	}
}

func TestProgressETA(t *testing.T) {
	p := NewProgress(ProgressOptions{Total: 1000})
	p.secPerStp, p.lastStep = 0.5, 400
	if got := p.eta(); got != 300*time.Second {
		t.Fatalf("eta %v, want 5m0s", got)
	}
	if got := p.Line(); !strings.Contains(got, "ETA 5m0s") {
		t.Fatalf("line %q", got)
	}
}
