package actors

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/policy"
)

// A run directory holds everything one run writes:
//
//	config.yaml        the resolved config (SaveRunConfig)
//	metrics.jsonl      one StepRecord per optimizer step, and one EvalRecord per
//	                   evaluation as its own line (an object with an "eval" key):
//	                   evaluations finish asynchronously, after later steps, so
//	                   they are not merged into a step's line
//	samples.jsonl      one SampleRecord per sampled prompt per evaluation
//	events.jsonl       publishes, checkpoints and rotations, one EventRecord each
//	checkpoints/step-N the learner's checkpoints; the last K and the best by
//	                   held-out figure are kept. Each is written into a hidden
//	                   checkpoints/.step-N.tmp-XXXXXXXX and renamed to step-N
//	                   once whole, so a crash or a full disk mid-checkpoint
//	                   leaves no step-N (OpenRunDir removes the staging ones)
//	checkpoints/latest the name of the newest complete checkpoint ("step-N"),
//	                   replaced atomically after it is renamed into place:
//	                   what --resume reads
//	checkpoints/best   the name of the kept checkpoint with the best figure
//	plots/             PNG and SVG curves (WritePlots), refreshed during the run
//	nats/              JetStream storage of the embedded NATS server
const (
	ConfigFile     = "config.yaml"
	MetricsFile    = "metrics.jsonl"
	SamplesFile    = "samples.jsonl"
	EventsFile     = "events.jsonl"
	CheckpointsDir = "checkpoints"
	PlotsDir       = "plots"
	NATSDir        = "nats"
)

// StepRecord is one line of metrics.jsonl per optimizer step.
type StepRecord struct {
	Step       int                `json:"step"`
	Loss       float64            `json:"loss"`
	LR         float64            `json:"lr"`
	GradNorm   float64            `json:"grad_norm"`
	Tokens     int                `json:"tokens"`       // tokens in this step
	TokensPerS float64            `json:"tokens_per_s"` // Tokens over the wall time since the previous step
	Version    int64              `json:"version"`      // latest published weights version when the step ended
	Elapsed    float64            `json:"elapsed_s"`    // seconds of training so far, across resumes
	Extra      map[string]float64 `json:"extra,omitempty"`
}

// EvalRecord is one line of metrics.jsonl per evaluation: the held-out figures
// of weights version Version, taken after optimizer step Step.
type EvalRecord struct {
	Eval      map[string]float64 `json:"eval"` // e.g. {"val_loss": 2.1}
	Step      int                `json:"step"`
	Version   int64              `json:"version"`
	Evaluator string             `json:"evaluator"`
	Elapsed   float64            `json:"elapsed_s"`
}

// SampleRecord is one line of samples.jsonl.
type SampleRecord struct {
	Version    int64  `json:"version"`
	Step       int    `json:"step"`
	Evaluator  string `json:"evaluator"`
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
}

// EventRecord is one line of events.jsonl.
type EventRecord struct {
	Time     time.Time `json:"time"`
	Event    string    `json:"event"` // "start", "resume", "publish", "checkpoint", "rotate", "close"
	Step     int       `json:"step"`
	Version  int64     `json:"version,omitempty"`
	Size     int       `json:"size,omitempty"`
	Checksum string    `json:"checksum,omitempty"` // of a published blob: "crc32c:<8 hex>"
	Dir      string    `json:"dir,omitempty"`
	Removed  []string  `json:"removed,omitempty"`
}

// RunDirOptions configures OpenRunDir.
type RunDirOptions struct {
	Stage string // pretrain | sft | rm | ppo: rm checkpoints are ranked by val_accuracy, ppo by val_score, others by val_loss
	Keep  int    // checkpoints kept besides the best, e.g. 3 (checkpoint.keep)
	// Resume continues a run from the checkpoint after step ResumeStep: the
	// records of later steps (written before a crash) are dropped, and so are
	// later checkpoint directories. False starts a fresh run in an empty (or
	// new) directory.
	Resume     bool
	ResumeStep int
	// PlotEvery is how often the plots are redrawn while metrics arrive, e.g.
	// 30s; 0 = only on Close.
	PlotEvery time.Duration
	Logger    zerolog.Logger
}

// RunDir is a run directory being written; it implements Sink and is safe for
// concurrent use. Open it with OpenRunDir and Close it at the end.
type RunDir struct {
	Dir string
	opt RunDirOptions

	mu        sync.Mutex
	metrics   *os.File
	samples   *os.File
	events    *os.File
	start     time.Time // when this process opened the directory
	offset    float64   // elapsed seconds of earlier runs (resume)
	lastStep  time.Time // when the previous OnStep arrived (tokens/s)
	figures   map[int]float64
	latest    int // step of checkpoints/latest, -1 = none
	best      int // step of checkpoints/best, -1 = none
	dirty     bool
	writeErr  error // first write error, reported by Close
	plotStop  chan struct{}
	plotDone  chan struct{}
	closeOnce sync.Once

	// rename is os.Rename; tests make it fail as a full disk would.
	rename func(oldpath, newpath string) error
}

var _ Sink = (*RunDir)(nil)

// ErrRunDir marks a run directory that cannot be used as asked.
var ErrRunDir = errors.New("actors: run directory")

// IsEmptyDir reports whether dir does not exist or holds nothing.
func IsEmptyDir(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	return len(ents) == 0, err
}

// CheckRunDir reports whether dir can hold a run, before anything is built
// or written: it must be a directory or be creatable as one (its nearest
// existing ancestor a directory), and a file must be creatable there. It
// leaves nothing behind. Errors wrap ErrRunDir and name dir.
func CheckRunDir(dir string) error {
	at := dir
	for {
		st, err := os.Stat(at)
		if err == nil {
			if !st.IsDir() {
				return fmt.Errorf("%w %s cannot be created: %s is a file, not a directory", ErrRunDir, dir, at)
			}
			break
		}
		// ENOTDIR: a file on the way up, found by the next round.
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%w %s: %v", ErrRunDir, dir, err)
		}
		up := filepath.Dir(at)
		if up == at {
			return fmt.Errorf("%w %s: %v", ErrRunDir, dir, err)
		}
		at = up
	}
	if err := probeWritable(at); err != nil {
		return fmt.Errorf("%w %s is not writable: %v", ErrRunDir, dir, err)
	}
	return nil
}

// probeWritable creates and removes a hidden file in dir.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".troupe-probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// OpenRunDir opens dir for writing a run (see RunDirOptions.Resume). It
// fails, naming dir, when dir or its checkpoints directory is not writable,
// and removes staging directories a killed process left in checkpoints/.
func OpenRunDir(dir string, opt RunDirOptions) (*RunDir, error) {
	if opt.Keep < 1 {
		opt.Keep = 1
	}
	r := &RunDir{Dir: dir, opt: opt, figures: map[int]float64{}, latest: -1, best: -1, start: time.Now(), rename: os.Rename}
	ckpts := filepath.Join(dir, CheckpointsDir)
	if err := os.MkdirAll(ckpts, 0o755); err != nil {
		return nil, fmt.Errorf("%w %s is not writable: %v", ErrRunDir, dir, err)
	}
	for _, d := range []string{dir, ckpts} {
		if err := probeWritable(d); err != nil {
			return nil, fmt.Errorf("%w %s is not writable: %v", ErrRunDir, dir, err)
		}
	}
	if err := r.removeStaging(); err != nil {
		return nil, err
	}
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if opt.Resume {
		if err := r.truncateAfter(opt.ResumeStep); err != nil {
			return nil, err
		}
	} else {
		flags |= os.O_TRUNC
	}
	var err error
	open := func(name string) *os.File {
		if err != nil {
			return nil
		}
		var f *os.File
		f, err = os.OpenFile(filepath.Join(dir, name), flags, 0o644)
		return f
	}
	r.metrics, r.samples, r.events = open(MetricsFile), open(SamplesFile), open(EventsFile)
	if err != nil {
		r.closeFiles()
		return nil, fmt.Errorf("%w %s: %v", ErrRunDir, dir, err)
	}
	r.lastStep = r.start
	ev := EventRecord{Event: "start"}
	if opt.Resume {
		ev = EventRecord{Event: "resume", Step: opt.ResumeStep}
	}
	r.event(ev)
	if opt.PlotEvery > 0 {
		r.plotStop, r.plotDone = make(chan struct{}), make(chan struct{})
		go r.plotLoop()
	}
	return r, nil
}

// truncateAfter drops what a previous process wrote after step (its records
// and its checkpoints) and recovers the elapsed time and held-out figures.
func (r *RunDir) truncateAfter(step int) error {
	// Records keep their order; a line that does not parse (a torn last line
	// of a killed process) is dropped with the later steps.
	if err := filterJSONL(filepath.Join(r.Dir, MetricsFile), func(line []byte) bool {
		var m Metrics
		if parseMetricsLine(&m, line) != nil {
			return false
		}
		for _, s := range m.Steps {
			if s.Step > step {
				return false
			}
			r.offset = s.Elapsed
		}
		for _, e := range m.Evals {
			if e.Step > step {
				return false
			}
			r.noteFigure(e.Step, e.Eval)
		}
		return true
	}); err != nil {
		return err
	}
	if err := filterJSONL(filepath.Join(r.Dir, SamplesFile), func(line []byte) bool {
		var s SampleRecord
		return json.Unmarshal(line, &s) == nil && s.Step <= step
	}); err != nil {
		return err
	}
	steps, err := r.checkpointSteps()
	if err != nil {
		return err
	}
	for _, s := range steps {
		if s > step {
			if err := os.RemoveAll(r.StepDir(s)); err != nil {
				return fmt.Errorf("%w: %v", ErrRunDir, err)
			}
		}
	}
	r.latest = step // the resumed checkpoint is the newest by definition
	if b, err := readPointer(filepath.Join(r.Dir, CheckpointsDir, "best")); err == nil && b <= step {
		r.best = b
	}
	return nil
}

// filterJSONL rewrites path keeping the lines keep accepts (none missing is fine).
func filterJSONL(path string, keep func([]byte) bool) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("%w: %v", ErrRunDir, err)
	}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 && bytes.HasSuffix(line, []byte("\n")) && keep(line) {
			out.Write(line)
		}
	}
	if err := policy.WriteFileAtomic(path, func(w io.Writer) error { _, err := w.Write(out.Bytes()); return err }); err != nil {
		return fmt.Errorf("%w: %v", ErrRunDir, err)
	}
	return nil
}

// OnStep appends the step's line to metrics.jsonl.
func (r *RunDir) OnStep(m learner.StepMetrics, version int64) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := StepRecord{Step: m.Step, Loss: m.Loss, LR: m.LR, GradNorm: m.GradNorm, Tokens: m.Tokens,
		Version: version, Elapsed: r.offset + now.Sub(r.start).Seconds(), Extra: m.Extra}
	if dt := now.Sub(r.lastStep).Seconds(); dt > 0 {
		rec.TokensPerS = float64(m.Tokens) / dt
	}
	r.lastStep = now
	r.writeJSON(r.metrics, rec)
	r.dirty = true
}

// OnPublish records the publish in events.jsonl.
func (r *RunDir) OnPublish(version int64, step int, size int, checksum string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.event(EventRecord{Event: "publish", Step: step, Version: version, Size: size, Checksum: checksum})
}

// OnEval appends the evaluation to metrics.jsonl and its samples to
// samples.jsonl; a new best figure may free an older best checkpoint.
func (r *RunDir) OnEval(evaluator string, version int64, step int, res learner.EvalResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeJSON(r.metrics, EvalRecord{Eval: res.Metrics, Step: step, Version: version, Evaluator: evaluator,
		Elapsed: r.offset + time.Since(r.start).Seconds()})
	for _, s := range res.Samples {
		r.writeJSON(r.samples, SampleRecord{Version: version, Step: step, Evaluator: evaluator, Prompt: s.Prompt, Completion: s.Completion})
	}
	r.dirty = true
	if r.noteFigure(step, res.Metrics) {
		r.rotate()
	}
}

// StepDir is RUN_DIR/checkpoints/step-N: where the checkpoint after step
// lives once committed.
func (r *RunDir) StepDir(step int) string {
	return filepath.Join(r.Dir, CheckpointsDir, "step-"+strconv.Itoa(step))
}

// stagingPrefix starts the name of every staging directory (and of
// WriteFileAtomic's temporary files) in checkpoints/; no checkpoint name does.
const stagingPrefix = "."

// CheckpointDir returns a new staging directory for the checkpoint after
// step, RUN_DIR/checkpoints/.step-N.tmp-XXXXXXXX (not yet created: the job's
// SaveCheckpoint creates it). It is hidden from rotation, LatestCheckpoint
// and globbing readers until OnCheckpoint renames it to step-N. Safe to call
// from any goroutine.
func (r *RunDir) CheckpointDir(step int) string {
	return filepath.Join(r.Dir, CheckpointsDir, fmt.Sprintf("%sstep-%d.tmp-%08x", stagingPrefix, step, rand.Uint32()))
}

// OnCheckpoint commits the checkpoint written into dir (a CheckpointDir
// staging directory; dir already at StepDir(step) is taken as it is): it
// syncs dir, renames it to StepDir(step) and syncs checkpoints/, then points
// checkpoints/latest at it and rotates. On an error nothing points at the
// new checkpoint: dir is removed and checkpoints/latest and the previous
// checkpoint are as they were.
func (r *RunDir) OnCheckpoint(step int, dir string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	final := r.StepDir(step)
	if filepath.Clean(dir) != final {
		if err := r.commit(step, dir, final); err != nil {
			if rerr := os.RemoveAll(dir); rerr != nil {
				r.opt.Logger.Warn().Err(rerr).Str("dir", dir).Msg("staging checkpoint not removed")
			}
			return "", fmt.Errorf("%w: committing checkpoint step-%d: %v", ErrRunDir, step, err)
		}
	}
	// The checkpoint is whole under its name; until this pointer moves, the
	// previous one is still what --resume reads.
	if err := writePointer(filepath.Join(r.Dir, CheckpointsDir, "latest"), step); err != nil {
		return "", fmt.Errorf("%w: pointing checkpoints/latest at step-%d: %v", ErrRunDir, step, err)
	}
	r.latest = step
	r.event(EventRecord{Event: "checkpoint", Step: step, Dir: final})
	r.rotate()
	return final, nil
}

// commit renames the staging directory dir to final. Its files were synced
// as they were written (WriteFileAtomic); syncing dir makes their names
// durable, the rename publishes them all at once, and syncing checkpoints/
// makes the rename durable. Callers hold r.mu.
func (r *RunDir) commit(step int, dir, final string) error {
	if step <= r.latest {
		return fmt.Errorf("checkpoints/latest is step-%d already: step-%d is not newer", r.latest, step)
	}
	if err := policy.SyncDir(dir); err != nil {
		return err
	}
	// A step-N newer than latest: left by a process killed between the
	// rename and the pointer (a resume removes those too). Nothing reads it.
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := r.rename(dir, final); err != nil {
		return err
	}
	return policy.SyncDir(filepath.Dir(final))
}

// removeStaging removes what an earlier process left half-written in
// checkpoints/: staging directories and temporary pointer files.
func (r *RunDir) removeStaging() error {
	ckpts := filepath.Join(r.Dir, CheckpointsDir)
	ents, err := os.ReadDir(ckpts)
	if err != nil {
		return fmt.Errorf("%w %s: %v", ErrRunDir, r.Dir, err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), stagingPrefix) || !strings.Contains(e.Name(), ".tmp-") {
			continue
		}
		p := filepath.Join(ckpts, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("%w %s: removing a partial checkpoint: %v", ErrRunDir, r.Dir, err)
		}
		r.opt.Logger.Warn().Str("path", p).Msg("removed a partial checkpoint an earlier process left")
	}
	return nil
}

// FigureName is the held-out figure that ranks checkpoints, and whether higher is better.
func FigureName(stage string) (name string, higherIsBetter bool) {
	switch stage {
	case "rm":
		return "val_accuracy", true
	case "ppo":
		return "val_score", true // the reward of greedy completions on held-out prompts
	}
	return "val_loss", false
}

// noteFigure records step's ranking figure (the first evaluation of a step
// counts; replicas agree) and reports whether it was new.
func (r *RunDir) noteFigure(step int, metrics map[string]float64) bool {
	name, _ := FigureName(r.opt.Stage)
	v, ok := metrics[name]
	if _, seen := r.figures[step]; !ok || seen || math.IsNaN(v) {
		return false
	}
	r.figures[step] = v
	return true
}

// rotate removes the checkpoints that are neither among the last Keep nor the
// best by figure, considering only complete ones (up to checkpoints/latest; a
// newer directory may still be being written). A checkpoint whose evaluation
// has not arrived yet cannot be the best; with checkpoint.every a multiple of
// publish.every the evaluation usually arrives long before Keep newer
// checkpoints push it out.
func (r *RunDir) rotate() {
	if r.latest < 0 {
		return
	}
	all, err := r.checkpointSteps()
	if err != nil {
		r.fail(err)
		return
	}
	var steps []int
	for _, s := range all {
		if s <= r.latest {
			steps = append(steps, s)
		}
	}
	_, higher := FigureName(r.opt.Stage)
	best := -1
	for _, s := range steps {
		v, ok := r.figures[s]
		if !ok {
			continue
		}
		if best < 0 || (higher && v > r.figures[best]) || (!higher && v < r.figures[best]) {
			best = s
		}
	}
	if best >= 0 && best != r.best {
		if err := writePointer(filepath.Join(r.Dir, CheckpointsDir, "best"), best); err != nil {
			r.fail(err)
			return
		}
		r.best = best
	}
	var removed []string
	for i, s := range steps {
		if i >= len(steps)-r.opt.Keep || s == r.best || s == r.latest {
			continue
		}
		dir := r.StepDir(s)
		if err := os.RemoveAll(dir); err != nil {
			r.fail(err)
			continue
		}
		removed = append(removed, filepath.Base(dir))
	}
	if len(removed) > 0 {
		r.event(EventRecord{Event: "rotate", Step: r.latest, Removed: removed})
	}
}

// checkpointSteps lists the steps of the checkpoints/step-N directories, ascending.
func (r *RunDir) checkpointSteps() ([]int, error) {
	ents, err := os.ReadDir(filepath.Join(r.Dir, CheckpointsDir))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRunDir, err)
	}
	var steps []int
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), "step-"); ok && e.IsDir() {
			if n, err := strconv.Atoi(s); err == nil {
				steps = append(steps, n)
			}
		}
	}
	sort.Ints(steps)
	return steps, nil
}

func writePointer(path string, step int) error {
	return policy.WriteFileAtomic(path, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "step-%d\n", step)
		return err
	})
}

func readPointer(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "step-")
	n, err := strconv.Atoi(s)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %s holds %q, want step-N", ErrRunDir, path, b)
	}
	return n, nil
}

// LatestCheckpoint returns the checkpoint that RUN_DIR/checkpoints/latest
// names and its step; an error wrapping os.ErrNotExist when there is none.
func LatestCheckpoint(runDir string) (dir string, step int, err error) {
	return pointedCheckpoint(runDir, "latest")
}

// BestCheckpoint is LatestCheckpoint for checkpoints/best.
func BestCheckpoint(runDir string) (dir string, step int, err error) {
	return pointedCheckpoint(runDir, "best")
}

func pointedCheckpoint(runDir, name string) (string, int, error) {
	step, err := readPointer(filepath.Join(runDir, CheckpointsDir, name))
	if err != nil {
		return "", 0, err
	}
	dir := filepath.Join(runDir, CheckpointsDir, "step-"+strconv.Itoa(step))
	if _, err := os.Stat(dir); err != nil {
		return "", 0, fmt.Errorf("%w: checkpoints/%s names step-%d: %w", ErrRunDir, name, step, err)
	}
	return dir, step, nil
}

// Close stops the plot refresher, draws the plots a last time and closes the
// files; it returns the first error met while writing.
func (r *RunDir) Close() error {
	var err error
	r.closeOnce.Do(func() {
		if r.plotStop != nil {
			close(r.plotStop)
			<-r.plotDone
		}
		r.mu.Lock()
		r.event(EventRecord{Event: "close", Step: r.latest})
		r.mu.Unlock()
		if perr := WritePlots(r.Dir); perr != nil {
			r.opt.Logger.Warn().Err(perr).Msg("plots not written")
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		err = r.writeErr
		if cerr := r.closeFiles(); err == nil {
			err = cerr
		}
	})
	return err
}

func (r *RunDir) closeFiles() error {
	var first error
	for _, f := range []*os.File{r.metrics, r.samples, r.events} {
		if f == nil {
			continue
		}
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// plotLoop redraws the plots every PlotEvery while new metrics arrive, off
// the learner's path (it reads metrics.jsonl back).
func (r *RunDir) plotLoop() {
	defer close(r.plotDone)
	t := time.NewTicker(r.opt.PlotEvery)
	defer t.Stop()
	for {
		select {
		case <-r.plotStop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		dirty := r.dirty
		r.dirty = false
		r.mu.Unlock()
		if dirty {
			if err := WritePlots(r.Dir); err != nil {
				r.opt.Logger.Warn().Err(err).Msg("plots not refreshed")
			}
		}
	}
}

// writeJSON appends v as one line with one write, so a concurrent reader sees
// whole lines (or a torn last line it skips). Callers hold r.mu.
func (r *RunDir) writeJSON(f *os.File, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		r.fail(err)
		return
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		r.fail(err)
	}
}

func (r *RunDir) event(e EventRecord) {
	e.Time = time.Now().UTC()
	r.writeJSON(r.events, e)
}

// fail remembers the first write error and logs every one: a full disk must
// not stop training, but Close reports it.
func (r *RunDir) fail(err error) {
	r.opt.Logger.Error().Err(err).Str("run_dir", r.Dir).Msg("run directory write failed")
	if r.writeErr == nil {
		r.writeErr = err
	}
}

// Metrics is metrics.jsonl read back.
type Metrics struct {
	Steps []StepRecord
	Evals []EvalRecord
}

// ReadMetrics reads a metrics.jsonl. Eval lines are the objects with an
// "eval" key, step lines the others; a step line that carries an "eval"
// object too (merged records) yields both. A torn last line (a run still
// writing, or killed) is skipped; any other bad line is an error naming it.
func ReadMetrics(path string) (Metrics, error) {
	var m Metrics
	f, err := os.Open(path)
	if err != nil {
		return m, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			torn := !bytes.HasSuffix(line, []byte("\n"))
			if perr := parseMetricsLine(&m, line); perr != nil && !torn {
				return m, fmt.Errorf("%w: %s:%d: %v", ErrRunDir, path, n, perr)
			}
		}
		if errors.Is(err, io.EOF) {
			return m, nil
		} else if err != nil {
			return m, err
		}
	}
}

func parseMetricsLine(m *Metrics, line []byte) error {
	var probe struct {
		Eval map[string]float64 `json:"eval"`
		Loss *float64           `json:"loss"`
	}
	if err := json.Unmarshal(line, &probe); err != nil {
		return err
	}
	if probe.Eval != nil {
		var e EvalRecord
		if err := json.Unmarshal(line, &e); err != nil {
			return err
		}
		m.Evals = append(m.Evals, e)
	}
	if probe.Loss != nil {
		var s StepRecord
		if err := json.Unmarshal(line, &s); err != nil {
			return err
		}
		m.Steps = append(m.Steps, s)
	}
	if probe.Eval == nil && probe.Loss == nil {
		return errors.New(`neither a step line (no "loss") nor an eval line (no "eval")`)
	}
	return nil
}

// FirstEval and LastEval return the evaluation with the lowest and highest
// step (the first evaluator's, among replicas), false when there is none.
func (m Metrics) FirstEval() (EvalRecord, bool) {
	return m.pickEval(func(a, b int) bool { return a < b })
}

// LastEval: see FirstEval.
func (m Metrics) LastEval() (EvalRecord, bool) {
	return m.pickEval(func(a, b int) bool { return a > b })
}

func (m Metrics) pickEval(better func(a, b int) bool) (EvalRecord, bool) {
	var out EvalRecord
	found := false
	for _, e := range m.Evals {
		if !found || better(e.Step, out.Step) {
			out, found = e, true
		}
	}
	return out, found
}
