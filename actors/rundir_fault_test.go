package actors

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// An unusable run directory is refused at the start, by CheckRunDir and by
// OpenRunDir, with ErrRunDir and the directory's name; CheckRunDir leaves
// nothing behind.
func TestRunDirUnwritable(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{"under a file": filepath.Join(file, "run")}
	if os.Geteuid() != 0 { // root writes through mode bits
		ro := filepath.Join(base, "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(ro, 0o755) })
		cases["read-only"] = ro
		cases["under a read-only one"] = filepath.Join(ro, "run")
	}
	for name, dir := range cases {
		t.Run(name, func(t *testing.T) {
			if err := CheckRunDir(dir); !errors.Is(err, ErrRunDir) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("CheckRunDir: got %v, want ErrRunDir naming %s", err, dir)
			}
			if _, err := OpenRunDir(dir, RunDirOptions{Stage: "sft", Logger: zerolog.Nop()}); !errors.Is(err, ErrRunDir) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("OpenRunDir: got %v, want ErrRunDir naming %s", err, dir)
			}
		})
	}
	fresh := filepath.Join(base, "new", "run")
	if err := CheckRunDir(fresh); err != nil {
		t.Fatalf("CheckRunDir of a directory to create: %v", err)
	}
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("CheckRunDir left %s in %s", e.Name(), base)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "new")); !os.IsNotExist(err) {
		t.Fatalf("CheckRunDir created %s", filepath.Join(base, "new"))
	}
}

// A checkpoint appears whole or not at all: until OnCheckpoint it is a
// hidden staging directory that rotation and LatestCheckpoint ignore;
// OnCheckpoint renames it into place, then moves latest. A staging
// directory left by a killed process is removed when the directory is
// opened again, and latest still names the previous checkpoint.
func TestRunDirCheckpointAtomic(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenRunDir(dir, RunDirOptions{Stage: "sft", Keep: 3, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	fakeCheckpoint(t, r, 10)
	staging := r.CheckpointDir(20)
	if !strings.HasPrefix(filepath.Base(staging), ".step-20.tmp-") || filepath.Dir(staging) != filepath.Join(dir, CheckpointsDir) {
		t.Fatalf("CheckpointDir(20) = %s, want checkpoints/.step-20.tmp-*", staging)
	}
	if r.CheckpointDir(20) == staging {
		t.Fatalf("CheckpointDir returned the same staging directory twice")
	}
	// Killed mid-write: half a checkpoint in staging, plus a pointer's temp file.
	os.MkdirAll(staging, 0o755)
	os.WriteFile(filepath.Join(staging, "model.safetensors"), []byte("half"), 0o644)
	os.WriteFile(filepath.Join(dir, CheckpointsDir, ".latest.tmp-123"), []byte("step-2"), 0o644)
	if _, s, err := LatestCheckpoint(dir); err != nil || s != 10 {
		t.Fatalf("latest during the write: step %d, %v; want 10", s, err)
	}
	if _, err := os.Stat(r.StepDir(20)); !os.IsNotExist(err) {
		t.Fatalf("step-20 exists before its commit: %v", err)
	}
	r.Close()

	r, err = OpenRunDir(dir, RunDirOptions{Stage: "sft", Keep: 3, Resume: true, ResumeStep: 10, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := checkpointNames(t, dir); len(got) != 1 || got[0] != "step-10" {
		t.Fatalf("checkpoints after reopening: %v, want [step-10]", got)
	}
	if _, err := os.Stat(filepath.Join(dir, CheckpointsDir, ".latest.tmp-123")); !os.IsNotExist(err) {
		t.Fatalf("stale pointer temp file not removed: %v", err)
	}
	// A step not newer than latest is refused, and its staging removed.
	old := r.CheckpointDir(10)
	os.MkdirAll(old, 0o755)
	if _, err := r.OnCheckpoint(10, old); !errors.Is(err, ErrRunDir) {
		t.Fatalf("re-committing step 10: got %v, want ErrRunDir", err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("refused staging directory not removed: %v", err)
	}
	fakeCheckpoint(t, r, 20)
	if d, s, err := LatestCheckpoint(dir); err != nil || s != 20 || d != r.StepDir(20) {
		t.Fatalf("latest after the commit: %q %d %v", d, s, err)
	}
}
