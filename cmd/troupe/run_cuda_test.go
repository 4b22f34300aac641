//go:build cuda

package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCUDARunPretrain: `troupe run` with `device: cuda` trains on the GPU as on
// the CPU: the loss falls, checkpoints are written, and a second run from the
// same config on the CPU starts from the same loss (same seed, same data).
func TestCUDARunPretrain(t *testing.T) {
	f := newRunFixture(t)
	runs := map[string][]float64{}
	for _, device := range []string{"cuda", "cpu"} {
		path := f.config(t, "pretrain-"+device, "pretrain", "", "corpus.txt", 30)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(src, "device: "+device+"\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := runCapture(t, path, runOptions{}); err != nil {
			t.Fatalf("%s: %v", device, err)
		}
		for _, s := range readSteps(t, filepath.Join(f.dir, "runs", "pretrain-"+device)) {
			runs[device] = append(runs[device], s.Loss)
		}
		if _, err := os.Stat(filepath.Join(f.dir, "runs", "pretrain-"+device, "checkpoints", "latest")); err != nil {
			t.Fatalf("%s: no latest checkpoint: %v", device, err)
		}
	}
	gpu, cpu := runs["cuda"], runs["cpu"]
	if len(gpu) != 30 || len(cpu) != 30 {
		t.Fatalf("steps: gpu %d, cpu %d, want 30", len(gpu), len(cpu))
	}
	if d := gpu[0] - cpu[0]; d > 1e-3*cpu[0] || d < -1e-3*cpu[0] {
		t.Errorf("first loss: gpu %v, cpu %v", gpu[0], cpu[0])
	}
	if gpu[len(gpu)-1] >= gpu[0]-0.5 {
		t.Errorf("GPU loss did not fall: %v -> %v", gpu[0], gpu[len(gpu)-1])
	}
	t.Logf("loss gpu %.4f -> %.4f, cpu %.4f -> %.4f", gpu[0], gpu[len(gpu)-1], cpu[0], cpu[len(cpu)-1])
}
