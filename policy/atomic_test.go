package policy

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dirNames lists dir, failing the test on error.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	if err := os.WriteFile(path, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Fatalf("file: got %q, %v; want %q", b, err, want)
		}
		if names := dirNames(t, dir); len(names) != 1 || names[0] != "model.safetensors" {
			t.Fatalf("directory holds %v, want only model.safetensors (no temporary file left behind)", names)
		}
	}

	// A writer that fails after writing more than the buffer holds: some of the
	// new bytes have reached the temporary file when the error comes.
	diskFull := errors.New("disk full")
	err := WriteFileAtomic(path, func(w io.Writer) error {
		if _, err := w.Write([]byte(strings.Repeat("x", 3<<20))); err != nil {
			return err
		}
		return diskFull
	})
	if !errors.Is(err, diskFull) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want disk full naming %s", err, path)
	}
	check("old contents")

	// A crash inside the writer (a panic) also leaves the old file alone.
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatalf("the panic did not propagate")
			}
		}()
		WriteFileAtomic(path, func(w io.Writer) error {
			w.Write([]byte("half"))
			panic("crash midway")
		})
	}()
	check("old contents")

	// Success replaces the file whole, with a readable mode.
	if err := WriteFileAtomic(path, func(w io.Writer) error {
		_, err := io.WriteString(w, "new contents")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	check("new contents")
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode: got %v, want 0644", fi.Mode().Perm())
	}

	// A directory that does not exist is an error, not a panic.
	if err := WriteFileAtomic(filepath.Join(dir, "no", "such", "file"), func(io.Writer) error { return nil }); err == nil {
		t.Fatalf("writing into a missing directory succeeded")
	}
}

// TestRefusedWriteKeepsCheckpoint: a refused WriteSafetensors leaves the
// previous checkpoint loadable and unchanged.
func TestRefusedWriteKeepsCheckpoint(t *testing.T) {
	m := newTestModel(t, 7)
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	// An invalid tensor makes WriteSafetensors refuse before touching anything.
	ts := modelTensors(m)
	ts[0].Data = ts[0].Data[:1]
	if err := WriteSafetensors(filepath.Join(dir, ModelFile), ts, nil); err == nil {
		t.Fatalf("WriteSafetensors with a short tensor succeeded")
	}
	if _, err := Load(dir, m.Dev); err != nil {
		t.Fatalf("checkpoint no longer loads: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if string(before) != string(after) {
		t.Fatalf("config.json changed")
	}
}
