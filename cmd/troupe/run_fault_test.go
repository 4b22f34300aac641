package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/actors"
)

// An unusable run directory fails the run at the start, naming the
// directory, before the job is built (no data cache written).
func TestRunUnwritableRunDir(t *testing.T) {
	f := newRunFixture(t)
	cases := map[string]func(t *testing.T) string{
		"under a file": func(t *testing.T) string {
			if err := os.WriteFile(filepath.Join(f.dir, "runs"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(filepath.Join(f.dir, "runs")) })
			return "blocked"
		},
		"read-only": func(t *testing.T) string {
			if os.Geteuid() == 0 {
				t.Skip("root writes through mode bits")
			}
			ro := filepath.Join(f.dir, "runs", "ro")
			if err := os.MkdirAll(ro, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(ro, 0o555); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(ro, 0o755); os.RemoveAll(filepath.Join(f.dir, "runs")) })
			return "ro"
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			run := setup(t)
			cfg := f.config(t, run, "pretrain", "", "corpus.txt", 2)
			_, err := runCapture(t, cfg, runOptions{})
			dir := filepath.Join(f.dir, "runs", run)
			if !errors.Is(err, actors.ErrRunDir) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("got %v, want ErrRunDir naming %s", err, dir)
			}
			t.Logf("%s: %v", name, err)
			if _, err := os.Stat(filepath.Join(f.dir, "cache")); !os.IsNotExist(err) {
				t.Fatalf("the job was built before the run directory was checked (cache: %v)", err)
			}
		})
	}
}
