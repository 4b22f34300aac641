package actors

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

// trainedTinyJob is a tinyJob that took n clean steps: the weights a
// checkpoint after step n must hold.
func trainedTinyJob(t *testing.T, total, n int) *tinyJob {
	t.Helper()
	j := newTinyJob(t, total)
	for range n {
		if _, err := j.Step(); err != nil {
			t.Fatal(err)
		}
	}
	return j
}

// faultRun runs job to its end (or failure) with a real run directory as the
// sink, checkpointing every 5 steps, and returns Run's error, the run
// directory and the logs. before, if set, is applied to the run directory
// once it is open.
func faultRun(t *testing.T, job *tinyJob, before func(*RunDir)) (runDir, logs string, err error) {
	t.Helper()
	runDir = filepath.Join(t.TempDir(), "run")
	rd, err := OpenRunDir(runDir, RunDirOptions{Stage: "pretrain", Keep: 2, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(rd)
	}
	log, buf := testLogger()
	opt := baseOptions(t, job, nil, log)
	opt.Sink, opt.Evaluators, opt.CheckpointEvery = rd, 1, 5
	err = Run(context.Background(), opt)
	if cerr := rd.Close(); cerr != nil {
		t.Logf("run directory Close: %v", cerr)
	}
	return runDir, buf.String(), err
}

// checkLastGood fails unless checkpoints/latest names step-want, that
// directory restores into a fresh job holding the weights of want clean
// steps, and checkpoints/ holds nothing newer and no staging directory.
func checkLastGood(t *testing.T, runDir string, total, want int) {
	t.Helper()
	d, step, err := LatestCheckpoint(runDir)
	if err != nil || step != want {
		t.Fatalf("latest checkpoint: %q step %d, %v; want step-%d", d, step, err, want)
	}
	fresh := newTinyJob(t, total)
	if err := fresh.Restore(d); err != nil {
		t.Fatalf("restoring the last good checkpoint: %v", err)
	}
	if fresh.StepsDone() != want || !slices.Equal(fresh.Weights(), trainedTinyJob(t, total, want).Weights()) {
		t.Fatalf("last good checkpoint: step %d, weights of %d clean steps %v", fresh.StepsDone(), want,
			slices.Equal(fresh.Weights(), trainedTinyJob(t, total, want).Weights()))
	}
	ents, err := os.ReadDir(filepath.Join(runDir, CheckpointsDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		var s int
		if _, err := fmt.Sscanf(e.Name(), "step-%d", &s); err == nil && s > want {
			t.Fatalf("checkpoints/%s exists past the last good step-%d", e.Name(), want)
		}
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("checkpoints/%s left behind", e.Name())
		}
	}
}

// One non-finite step is logged and skipped; the run completes with every
// step and the weights of a clean run (the tiny job retries the same batch).
func TestRunNonFiniteStepSkipped(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 20)
	job.nanSteps[7] = 1
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := baseOptions(t, job, sink, log)
	if err := Run(context.Background(), opt); err != nil {
		t.Fatalf("Run: %v\nlogs:\n%s", err, logs.String())
	}
	rec := sink.snapshot()
	if len(rec.steps) != 20 || rec.steps[6].Step != 7 {
		t.Fatalf("%d steps reported, want 20 once each", len(rec.steps))
	}
	if !strings.Contains(logs.String(), "non-finite step skipped") || !strings.Contains(logs.String(), `"step":7`) {
		t.Fatalf("no warning for the skipped step 7:\n%s", logs.String())
	}
	if !slices.Equal(job.Weights(), trainedTinyJob(t, 20, 20).Weights()) {
		t.Fatalf("weights differ from a clean run's")
	}
}

// Five non-finite steps in a row end the run with an error naming the step
// and the last good checkpoint, which stays the latest, whole and loadable;
// no checkpoint of the state after it is written.
func TestRunNonFiniteStops(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 30)
	job.nanSteps[8] = 5
	dir, logs, err := faultRun(t, job, nil)
	want := fmt.Sprintf("5 consecutive non-finite steps at step 8; last good checkpoint: %s", filepath.Join(dir, CheckpointsDir, "step-5"))
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "grad norm NaN") {
		t.Fatalf("Run: got %v, want an error containing %q", err, want)
	}
	t.Logf("Run: %v", err)
	if n := strings.Count(logs, "non-finite step skipped"); n != 4 {
		t.Fatalf("%d skipped-step warnings, want 4 before the fifth stops the run:\n%s", n, logs)
	}
	if job.StepsDone() != 7 {
		t.Fatalf("job at step %d, want 7", job.StepsDone())
	}
	checkLastGood(t, dir, 30, 5)
}

// A checkpoint that fails mid-write (a full disk) stops the run with the
// error; the partial directory is gone and the previous checkpoint stays the
// latest, whole and loadable.
func TestRunCheckpointWriteFails(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 30)
	job.saveErr[10] = &os.PathError{Op: "write", Path: "optimizer.safetensors", Err: syscall.ENOSPC}
	dir, _, err := faultRun(t, job, nil)
	if err == nil || !strings.Contains(err.Error(), "checkpoint step 10 not written") || !strings.Contains(err.Error(), "no space left on device") ||
		!strings.Contains(err.Error(), filepath.Join(dir, CheckpointsDir, "step-5")) {
		t.Fatalf("Run: got %v, want the checkpoint error naming the full disk and step-5", err)
	}
	t.Logf("Run: %v", err)
	checkLastGood(t, dir, 30, 5)
}

// A checkpoint written whole whose commit fails (the rename into place
// refused) stops the run too, with the same guarantees.
func TestRunCheckpointCommitFails(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 30)
	dir, _, err := faultRun(t, job, func(rd *RunDir) {
		rd.rename = func(oldpath, newpath string) error {
			if filepath.Base(newpath) == "step-10" {
				return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.ENOSPC}
			}
			return os.Rename(oldpath, newpath)
		}
	})
	if err == nil || !strings.Contains(err.Error(), "checkpoint step 10 not committed") || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Run: got %v, want the commit error", err)
	}
	t.Logf("Run: %v", err)
	checkLastGood(t, dir, 30, 5)
}
