//go:build !cuda

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunDeviceWithoutCUDA: `device: cuda` in a binary built without the CUDA
// backend is refused at the start, naming the field and the fix, before the
// run directory is made.
func TestRunDeviceWithoutCUDA(t *testing.T) {
	f := newRunFixture(t)
	path := f.config(t, "gpu", "pretrain", "", "corpus.txt", 2)
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(src, "device: cuda\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runCapture(t, path, runOptions{})
	if err == nil || !strings.Contains(err.Error(), "device: cuda: built without -tags cuda") {
		t.Fatalf("got %v, want the device: cuda refusal", err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "runs", "gpu")); !os.IsNotExist(err) {
		t.Fatalf("run directory: %v, want none", err)
	}
}
