package actors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/policy"
)

// tinyJob is a real learner.Job for the runtime's tests: a one-layer GPT
// trained with AdamW on fixed random sequences that count up modulo the
// vocabulary (so the loss falls fast), with hooks to inject crashes and delays.
type tinyJob struct {
	cfg        policy.Config
	model      *policy.Model
	opt        *policy.AdamW
	B, T       int
	train, val [][]int32 // rows of T+1 tokens
	total      int
	lr         float32

	stepDelay  time.Duration // sleep inside every step (a slower learner)
	panicSteps map[int]int   // step number -> panics left to inject before it runs
	nanSteps   map[int]int   // step number -> tries left whose gradients are made NaN
	saveErr    map[int]error // step number -> error SaveCheckpoint fails with, after writing the model

	hooks *evalHooks // shared with every evaluator the job builds
}

// evalHooks injects delays and panics into evaluations, across evaluators.
type evalHooks struct {
	delay   time.Duration
	calls   atomic.Int64
	panicOn int64 // panic on this Evaluate call (1-based, counted over all evaluators); 0 = never
}

func newTinyJob(t testing.TB, total int) *tinyJob {
	cfg := policy.Config{VocabSize: 32, MaxSeqLen: 16, NumLayers: 1, NumHeads: 2, Channels: 16, LayerNormEps: 1e-5}
	return newJob(t, total, cfg, 4, 8)
}

// newJob is tinyJob with a given model shape and batch (B rows of T tokens).
func newJob(t testing.TB, total int, cfg policy.Config, B, T int) *tinyJob {
	t.Helper()
	m, err := policy.New(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatalf("policy.New: %v", err)
	}
	m.Init(1)
	j := &tinyJob{cfg: cfg, model: m, B: B, T: T, total: total, lr: 1e-2, panicSteps: map[int]int{}, nanSteps: map[int]int{}, saveErr: map[int]error{}, hooks: &evalHooks{}}
	j.opt = policy.NewAdamW(m, policy.AdamWConfig{LR: j.lr, GradClip: 1})
	rng := rand.New(rand.NewPCG(7, 7))
	rows := func(n int) [][]int32 {
		out := make([][]int32, n)
		for i := range out {
			r := make([]int32, j.T+1)
			start := rng.IntN(cfg.VocabSize)
			for k := range r {
				r[k] = int32((start + k) % cfg.VocabSize)
			}
			out[i] = r
		}
		return out
	}
	j.train, j.val = rows(64), rows(8)
	return j
}

// batch flattens rows [i, i+B) (wrapping) into tokens and next-token targets.
func (j *tinyJob) batch(rows [][]int32, i int) (tokens, targets []int32) {
	for b := 0; b < j.B; b++ {
		r := rows[(i+b)%len(rows)]
		tokens = append(tokens, r[:j.T]...)
		targets = append(targets, r[1:]...)
	}
	return tokens, targets
}

func (j *tinyJob) Stage() string      { return "pretrain" }
func (j *tinyJob) Done() bool         { return j.opt.Step >= j.total }
func (j *tinyJob) StepsDone() int     { return j.opt.Step }
func (j *tinyJob) TotalSteps() int    { return j.total }
func (j *tinyJob) Weights() []float32 { return append([]float32(nil), j.model.Params.F...) }

func (j *tinyJob) Step() (learner.StepMetrics, error) {
	next := j.opt.Step + 1
	if j.panicSteps[next] > 0 {
		j.panicSteps[next]--
		panic(fmt.Sprintf("injected crash before step %d", next))
	}
	if j.stepDelay > 0 {
		time.Sleep(j.stepDelay)
	}
	tokens, targets := j.batch(j.train, j.opt.Step*j.B)
	j.model.ZeroGrad()
	loss := j.model.LossAndBackward(tokens, targets, nil, j.B, j.T)
	// A non-finite step is refused before the update, as the learner's jobs
	// do (learner.Job.Step); this job's data position is the step, so the
	// retry sees the same batch.
	if j.nanSteps[next] > 0 {
		j.nanSteps[next]--
		j.model.Dev.Scale(j.model.Grads, float32(math.NaN()))
	}
	if n := math.Sqrt(j.model.Dev.SumSquares(j.model.Grads)); math.IsNaN(n) || math.IsInf(n, 0) {
		return learner.StepMetrics{}, fmt.Errorf("%w: step %d: grad norm %g; update skipped", learner.ErrNonFinite, next, n)
	}
	gn := j.opt.Update(j.model, j.lr)
	return learner.StepMetrics{Step: j.opt.Step, Loss: float64(loss), LR: float64(j.lr), GradNorm: float64(gn), Tokens: j.B * j.T}, nil
}

type tinyState struct {
	Step int `json:"step"`
}

func (j *tinyJob) SaveCheckpoint(dir string) error {
	if err := j.model.Save(dir); err != nil {
		return err
	}
	if err := j.saveErr[j.opt.Step]; err != nil {
		return err
	}
	err := policy.WriteSafetensors(filepath.Join(dir, "optimizer.safetensors"), []policy.SafeTensor{
		{Name: "m", Shape: []int{j.opt.M.N}, Data: j.opt.M.F},
		{Name: "v", Shape: []int{j.opt.V.N}, Data: j.opt.V.F},
	}, nil)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(tinyState{Step: j.opt.Step})
	return os.WriteFile(filepath.Join(dir, "trainer_state.json"), b, 0o644)
}

func (j *tinyJob) Restore(dir string) error {
	m, err := policy.Load(dir, j.model.Dev)
	if err != nil {
		return err
	}
	copy(j.model.Params.F, m.Params.F)
	ts, err := policy.ReadSafetensors(filepath.Join(dir, "optimizer.safetensors"))
	if err != nil {
		return err
	}
	copy(j.opt.M.F, ts["m"].Data)
	copy(j.opt.V.F, ts["v"].Data)
	b, err := os.ReadFile(filepath.Join(dir, "trainer_state.json"))
	if err != nil {
		return err
	}
	var st tinyState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%w: %v", learner.ErrCheckpoint, err)
	}
	j.opt.Step = st.Step
	return nil
}

func (j *tinyJob) NewEvaluator(opts learner.EvalOptions) (learner.Evaluator, error) {
	m, err := policy.New(j.cfg, kernels.NewCPU(1))
	if err != nil {
		return nil, err
	}
	return &tinyEvaluator{job: j, model: m, opts: opts}, nil
}

func (j *tinyJob) DataReport() learner.DataReport {
	return learner.DataReport{Lines: len(j.train) + len(j.val), TrainItems: len(j.train) * j.T, ValItems: len(j.val) * j.T}
}

// tinyEvaluator: held-out loss on the job's val rows and one greedy sample.
type tinyEvaluator struct {
	job   *tinyJob
	model *policy.Model
	opts  learner.EvalOptions
}

func (e *tinyEvaluator) Evaluate(w []float32) (learner.EvalResult, error) {
	h := e.job.hooks
	n := h.calls.Add(1)
	if h.panicOn != 0 && n == h.panicOn {
		panic(fmt.Sprintf("injected crash in Evaluate call %d", n))
	}
	if h.delay > 0 {
		time.Sleep(h.delay)
	}
	if len(w) != e.model.Params.N {
		return learner.EvalResult{}, fmt.Errorf("%w: %d weights, model has %d", learner.ErrCheckpoint, len(w), e.model.Params.N)
	}
	e.model.Dev.Upload(e.model.Params, w)
	var loss float64
	for i := 0; i < len(e.job.val); i += e.job.B {
		tokens, targets := e.job.batch(e.job.val, i)
		loss += float64(e.model.Loss(tokens, targets, nil, e.job.B, e.job.T))
	}
	res := learner.EvalResult{Metrics: map[string]float64{"val_loss": loss / float64((len(e.job.val)+e.job.B-1)/e.job.B)}}
	if e.opts.MaxNewTokens > 0 {
		out, err := e.model.Generate([][]int32{{1, 2, 3}}, policy.SampleOptions{MaxNewTokens: e.opts.MaxNewTokens})
		if err != nil {
			return res, err
		}
		res.Samples = []learner.Sample{{Prompt: "1 2 3", Completion: fmt.Sprint(out[0].Tokens)}}
	}
	return res, nil
}

// recordSink is a Sink that remembers everything, for assertions.
type recordSink struct {
	dir string

	mu          sync.Mutex
	steps       []learner.StepMetrics
	stepTimes   []time.Time
	publishes   []int64 // versions
	pubSteps    []int
	checkpoints []int
	evals       map[string][]int64 // evaluator -> versions, in order
	evalMetrics []learner.EvalResult
}

func newRecordSink(t testing.TB) *recordSink {
	return &recordSink{dir: t.TempDir(), evals: map[string][]int64{}}
}

func (s *recordSink) OnStep(m learner.StepMetrics, version int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps = append(s.steps, m)
	s.stepTimes = append(s.stepTimes, time.Now())
}

func (s *recordSink) OnPublish(version int64, step int, size int, sha string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publishes = append(s.publishes, version)
	s.pubSteps = append(s.pubSteps, step)
}

func (s *recordSink) OnEval(ev string, version int64, step int, r learner.EvalResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evals[ev] = append(s.evals[ev], version)
	s.evalMetrics = append(s.evalMetrics, r)
}

func (s *recordSink) CheckpointDir(step int) string {
	return filepath.Join(s.dir, "checkpoints", fmt.Sprintf("step-%d", step))
}

func (s *recordSink) OnCheckpoint(step int, dir string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkpoints = append(s.checkpoints, step)
	return dir, nil
}

func (s *recordSink) snapshot() *recordSink {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &recordSink{
		steps:       append([]learner.StepMetrics(nil), s.steps...),
		stepTimes:   append([]time.Time(nil), s.stepTimes...),
		publishes:   append([]int64(nil), s.publishes...),
		pubSteps:    append([]int(nil), s.pubSteps...),
		checkpoints: append([]int(nil), s.checkpoints...),
		evals:       map[string][]int64{},
		evalMetrics: append([]learner.EvalResult(nil), s.evalMetrics...),
	}
	for k, v := range s.evals {
		c.evals[k] = append([]int64(nil), v...)
	}
	return c
}

// syncBuffer is a goroutine-safe log buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testLogger logs JSON into a buffer the test can search (and echoes it with -v
// when TROUPE_TEST_LOG is set).
func testLogger() (zerolog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	var w = zerologWriter(buf)
	return zerolog.New(w).Level(zerolog.DebugLevel).With().Timestamp().Logger(), buf
}

func zerologWriter(buf *syncBuffer) zerolog.LevelWriter {
	if os.Getenv("TROUPE_TEST_LOG") != "" {
		return zerolog.MultiLevelWriter(buf, zerolog.ConsoleWriter{Out: os.Stderr})
	}
	return zerolog.MultiLevelWriter(buf)
}

// leakCheck returns a function that fails t if goroutines started after it
// are still running (after letting timers and shutdown settle).
func leakCheck(t *testing.T) func() {
	t.Helper()
	before := goroutineSet()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		var extra []string
		for {
			extra = extra[:0]
			for id, stack := range goroutineSet() {
				// nats.go v1.55 bug: ObjectStore.Put's temporary JetStream
				// context clears its status channel in cleanupReplySub, and
				// the resetPendingAcksOnReconnect goroutine it started may
				// then read the nil channel and block forever (seen under
				// -race). Not ours to fix; see the report.
				if strings.Contains(stack, "resetPendingAcksOnReconnect") {
					continue
				}
				// nats.go v1.55 bug: ObjectStore.Get returns an error when its
				// chunk subscription fails to start, dropping the result whose
				// pipe its chunk callback may already be writing to; that
				// callback then blocks forever (about 1 run in 120 here). The
				// caller never gets a result to Close. Not ours to fix.
				if strings.Contains(stack, "jetstream.(*obs).Get.func") && strings.Contains(stack, "(*pipe).write") {
					continue
				}
				if _, ok := before[id]; !ok {
					extra = append(extra, stack)
				}
			}
			if len(extra) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			t.Fatalf("%d goroutines leaked:\n%s", len(extra), strings.Join(extra, "\n\n"))
		}
	}
}

// goroutineSet maps goroutine ids to their stacks.
func goroutineSet() map[string]string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	out := map[string]string{}
	for _, g := range strings.Split(b.String(), "\n\n") {
		g = strings.TrimSpace(g)
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		id := strings.Fields(g)[1]
		out[id] = g
	}
	return out
}
