package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/troupe-rl/troupe/actors"
)

func TestPlotCommand(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, actors.MetricsFile), []byte(`{"step":1,"loss":3,"lr":0.001,"grad_norm":1,"tokens":10,"tokens_per_s":100,"version":1,"elapsed_s":1}
{"step":2,"loss":2.5,"lr":0.001,"grad_norm":1,"tokens":10,"tokens_per_s":110,"version":1,"elapsed_s":2}
{"eval":{"val_loss":2.8,"val_accuracy":0.6},"step":2,"version":2,"evaluator":"evaluator-0","elapsed_s":2}
`), 0o644)
	if err := runPlot([]string{dir}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"loss.png", "loss.svg", "lr.png", "throughput.svg", "accuracy.png", "overview.png", "overview.svg"} {
		if st, err := os.Stat(filepath.Join(dir, actors.PlotsDir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if err := runPlot(nil); !errors.Is(err, errUsage) {
		t.Fatalf("got %v, want a usage error", err)
	}
	if err := runPlot([]string{t.TempDir()}); err == nil {
		t.Fatalf("a directory without metrics.jsonl plotted")
	}
}
