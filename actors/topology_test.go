package actors

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/policy"
)

func baseOptions(t *testing.T, job *tinyJob, sink *recordSink, log zerolog.Logger) Options {
	return Options{
		Job:             job,
		Model:           "policy",
		NATSDir:         filepath.Join(t.TempDir(), "nats"),
		PublishEvery:    5,
		CheckpointEvery: 10,
		Evaluators:      2,
		EvalEvery:       1,
		EvalOptions:     learner.EvalOptions{MaxNewTokens: 3},
		Sink:            sink,
		Logger:          log,
		StopTimeout:     20 * time.Second,
	}
}

// checkEvals fails unless every evaluator's versions strictly increase
// and end at final.
func checkEvals(t *testing.T, rec *recordSink, evaluators int, final int64) {
	t.Helper()
	if len(rec.evals) != evaluators {
		t.Fatalf("got evaluations from %d evaluators (%v), want %d", len(rec.evals), rec.evals, evaluators)
	}
	for name, vs := range rec.evals {
		if len(vs) == 0 || !slices.IsSorted(vs) || len(slices.Compact(slices.Clone(vs))) != len(vs) {
			t.Fatalf("%s: versions %v not strictly increasing", name, vs)
		}
		if vs[len(vs)-1] != final {
			t.Fatalf("%s: last version %d, want the final %d (saw %v)", name, vs[len(vs)-1], final, vs)
		}
	}
}

// A tiny real job runs to the end: every step, publish, checkpoint and
// evaluation reaches the Sink; both evaluators see every version or a newer
// one, ending with the final one; the model learned; nothing is left running.
func TestRunCompletes(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 30)
	// The untrained model's figures: evaluators skip to the newest version, so
	// on a fast machine their first evaluation may already be the final one.
	ev, err := job.NewEvaluator(learner.EvalOptions{MaxNewTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	before, err := ev.Evaluate(job.Weights())
	if err != nil {
		t.Fatal(err)
	}
	sink := newRecordSink(t)
	log, logs := testLogger()
	if err := Run(context.Background(), baseOptions(t, job, sink, log)); err != nil {
		t.Fatalf("Run: %v\nlogs:\n%s", err, logs.String())
	}
	rec := sink.snapshot()
	if len(rec.steps) != 30 {
		t.Fatalf("got %d steps, want 30", len(rec.steps))
	}
	for i, m := range rec.steps {
		if m.Step != i+1 {
			t.Fatalf("step %d reported as %d", i+1, m.Step)
		}
	}
	if want := []int64{1, 2, 3, 4, 5, 6, 7}; !slices.Equal(rec.publishes, want) {
		t.Fatalf("published versions %v, want %v", rec.publishes, want)
	}
	if want := []int{0, 5, 10, 15, 20, 25, 30}; !slices.Equal(rec.pubSteps, want) {
		t.Fatalf("publish steps %v, want %v", rec.pubSteps, want)
	}
	if want := []int{10, 20, 30}; !slices.Equal(rec.checkpoints, want) {
		t.Fatalf("checkpoints %v, want %v", rec.checkpoints, want)
	}
	checkEvals(t, rec, 2, 7)
	first, last := before, rec.evalMetrics[len(rec.evalMetrics)-1]
	t.Logf("val_loss %.3f (untrained) -> %.3f; evaluations per evaluator: %v", first.Metrics["val_loss"], last.Metrics["val_loss"], rec.evals)
	if !(last.Metrics["val_loss"] < first.Metrics["val_loss"]-0.5) {
		t.Fatalf("val_loss did not fall: %v -> %v", first.Metrics, last.Metrics)
	}
	if len(last.Samples) != 1 || last.Samples[0].Completion == "" {
		t.Fatalf("got samples %+v, want one", last.Samples)
	}
	// The last checkpoint restores into a fresh job at the same step.
	fresh := newTinyJob(t, 30)
	if err := fresh.Restore(sink.CheckpointDir(30)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if fresh.StepsDone() != 30 || !slices.Equal(fresh.Weights(), job.Weights()) {
		t.Fatalf("restored step %d (want 30), weights equal %v", fresh.StepsDone(), slices.Equal(fresh.Weights(), job.Weights()))
	}
}

// Cancelling the context (Ctrl-C) stops the run between two steps with a
// checkpoint of the last step, and Run returns context.Canceled.
func TestRunStopsOnCancel(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 1_000_000)
	job.stepDelay = 2 * time.Millisecond
	job.hooks.delay = 50 * time.Millisecond // an evaluation still running at the stop
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := baseOptions(t, job, sink, log)
	opt.CheckpointEvery = 1000
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, opt) }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if rec := sink.snapshot(); len(rec.steps) >= 25 && len(rec.evalMetrics) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress; logs:\n%s", logs.String())
		}
	}
	cancel()
	start := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: got %v, want context.Canceled", err)
		}
	case <-time.After(opt.StopTimeout + 5*time.Second):
		t.Fatalf("Run did not return after cancel")
	}
	t.Logf("stopped %v after cancel, at step %d", time.Since(start), job.StepsDone())
	rec := sink.snapshot()
	if len(rec.checkpoints) != 1 || rec.checkpoints[0] != job.StepsDone() {
		t.Fatalf("checkpoints %v, want one at the last step %d", rec.checkpoints, job.StepsDone())
	}
	if len(rec.steps) != job.StepsDone() {
		t.Fatalf("sink saw %d steps, job did %d", len(rec.steps), job.StepsDone())
	}
	fresh := newTinyJob(t, 1_000_000)
	if err := fresh.Restore(sink.CheckpointDir(job.StepsDone())); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if !slices.Equal(fresh.Weights(), job.Weights()) {
		t.Fatalf("stop checkpoint does not hold the last weights")
	}
	if !strings.Contains(logs.String(), "learner stopping") {
		t.Fatalf("no stop logged:\n%s", logs.String())
	}
}

// A learner step that panics is retried by the restarted learner actor; the
// run completes with every step once.
func TestLearnerPanicRetried(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 12)
	job.panicSteps[3] = 1
	job.panicSteps[8] = 2
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := baseOptions(t, job, sink, log)
	opt.Evaluators = 1
	if err := Run(context.Background(), opt); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec := sink.snapshot()
	var steps []int
	for _, m := range rec.steps {
		steps = append(steps, m.Step)
	}
	if want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}; !slices.Equal(steps, want) {
		t.Fatalf("steps %v, want %v", steps, want)
	}
	if n := strings.Count(logs.String(), "injected crash before step"); n < 3 {
		t.Fatalf("want the 3 crashes logged, found %d:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `"lib":"protoactor"`) {
		t.Fatalf("protoactor's logs are not routed into zerolog:\n%s", logs.String())
	}
	checkEvals(t, rec, 1, rec.publishes[len(rec.publishes)-1])
}

// A learner that keeps crashing is given up on after the supervisor's budget,
// and Run fails instead of hanging.
func TestLearnerCrashLoopFailsRun(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 12)
	job.panicSteps[2] = 1000
	sink := newRecordSink(t)
	log, _ := testLogger()
	opt := baseOptions(t, job, sink, log)
	opt.Evaluators = 0
	err := Run(context.Background(), opt)
	if !errors.Is(err, ErrRun) || !strings.Contains(err.Error(), "crashed") {
		t.Fatalf("got %v, want an ErrRun about the crashing learner", err)
	}
}

// An evaluator whose evaluation panics is restarted by its supervisor,
// reloads the current weights and continues to the final version.
func TestEvaluatorPanicRestarted(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 40)
	job.stepDelay = 3 * time.Millisecond
	job.hooks.panicOn = 2
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := baseOptions(t, job, sink, log)
	opt.Evaluators = 1
	opt.PublishEvery = 4
	if err := Run(context.Background(), opt); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec := sink.snapshot()
	final := rec.publishes[len(rec.publishes)-1]
	checkEvals(t, rec, 1, final)
	vs := rec.evals["evaluator-0"]
	t.Logf("evaluator-0 evaluated %v of versions 1..%d", vs, final)
	if len(vs) < 2 {
		t.Fatalf("evaluator did not continue after its crash: %v", vs)
	}
	if !strings.Contains(logs.String(), "injected crash in Evaluate call 2") || !strings.Contains(logs.String(), "actor failed") {
		t.Fatalf("crash not logged:\n%s", logs.String())
	}
}

// collector is a test parent for a lone evaluator: it records EvalDone.
type collector struct {
	props *actor.Props
	out   chan *messages.EvalDone
}

func (c *collector) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		ctx.SpawnNamed(c.props, "evaluator-late")
	case *messages.EvalDone:
		c.out <- msg
	}
}

// An evaluator that joins mid-run starts from the current weights version,
// then follows newer ones.
func TestEvaluatorJoinsMidRun(t *testing.T) {
	t.Cleanup(leakCheck(t)) // runs after startNATS's cleanup
	nc := startNATS(t)
	ctx := context.Background()
	job := newTinyJob(t, 10)
	pub, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	for v := 1; v <= 4; v++ {
		if _, err := job.Step(); err != nil {
			t.Fatalf("Step: %v", err)
		}
		if _, err := pub.Publish(ctx, job.StepsDone(), false, job.Weights()); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	ev, err := job.NewEvaluator(learner.EvalOptions{})
	if err != nil {
		t.Fatalf("NewEvaluator: %v", err)
	}
	log, logs := testLogger()
	run := &evalRun{name: "evaluator-late", ev: ev, nc: nc, model: "policy", evalEvery: 1, log: log, inflight: &sync.WaitGroup{}}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(actorLoggerFactory(log)))
	defer sys.Shutdown()
	out := make(chan *messages.EvalDone, 100)
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &collector{props: actor.PropsFromProducer(newEvaluatorProducer(run)), out: out}
	}, actor.WithSupervisor(actor.NewOneForOneStrategy(maxRestarts, restartWindow, actor.DefaultDecider))))
	defer func() { sys.Root.StopFuture(pid).Wait() }()
	next := func() *messages.EvalDone {
		select {
		case d := <-out:
			return d
		case <-time.After(20 * time.Second):
			t.Fatalf("no evaluation; logs:\n%s", logs.String())
			return nil
		}
	}
	if d := next(); d.GetVersion() != 4 || d.GetStep() != 4 || d.GetMetrics()["val_loss"] == 0 {
		t.Fatalf("first evaluation: got %v, want version 4 at step 4", d)
	}
	if _, err := job.Step(); err != nil {
		t.Fatalf("Step: %v", err)
	}
	if _, err := pub.Publish(ctx, job.StepsDone(), true, job.Weights()); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if d := next(); d.GetVersion() != 5 || !d.GetFinal() {
		t.Fatalf("second evaluation: got %v, want the final version 5", d)
	}
}

// Options.NATSURL points at an external server; Run uses it and leaves it
// running.
func TestRunExternalNATS(t *testing.T) {
	srv, url, err := StartEmbeddedNATS("")
	if err != nil {
		t.Fatalf("StartEmbeddedNATS: %v", err)
	}
	defer ShutdownNATS(srv)
	job := newTinyJob(t, 6)
	sink := newRecordSink(t)
	log, _ := testLogger()
	opt := baseOptions(t, job, sink, log)
	opt.NATSURL, opt.NATSDir, opt.Evaluators = url, "", 1
	if err := Run(context.Background(), opt); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !srv.Running() {
		t.Fatalf("Run shut the external server down")
	}
	// A second run on the same server keeps counting versions up.
	sink2 := newRecordSink(t)
	opt.Job, opt.Sink = newTinyJob(t, 6), sink2
	if err := Run(context.Background(), opt); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec, rec2 := sink.snapshot(), sink2.snapshot()
	if rec2.publishes[0] != rec.publishes[len(rec.publishes)-1]+1 {
		t.Fatalf("second run's versions %v do not continue after %v", rec2.publishes, rec.publishes)
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	job := newTinyJob(t, 1)
	sink := newRecordSink(t)
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no job", func(o *Options) { o.Job = nil }, "Job"},
		{"no sink", func(o *Options) { o.Sink = nil }, "Sink"},
		{"negative replicas", func(o *Options) { o.Evaluators = -1 }, "replicas"},
		{"bad model", func(o *Options) { o.Model = "a b" }, "model name"},
	} {
		opt := baseOptions(t, job, sink, zerolog.Nop())
		tc.edit(&opt)
		if err := Run(context.Background(), opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}

// Evaluators must not slow the learner much: steps/s of a GPT the size of
// policy's "tiny" preset (0.8M parameters, B=4, T=64, one thread each) with 0
// and with 2 evaluators that evaluate every published version.
func TestEvaluatorsDoNotSlowLearner(t *testing.T) {
	if testing.Short() {
		t.Skip("timing measurement")
	}
	cfg, err := policy.NamedConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	rate := func(evaluators, steps int) (float64, int) {
		job := newJob(t, steps, cfg, 4, 64)
		sink := newRecordSink(t)
		opt := baseOptions(t, job, sink, zerolog.Nop())
		opt.Evaluators, opt.PublishEvery, opt.CheckpointEvery, opt.EvalOptions = evaluators, 10, 0, learner.EvalOptions{}
		if err := Run(context.Background(), opt); err != nil {
			t.Fatalf("Run: %v", err)
		}
		rec := sink.snapshot()
		ts := rec.stepTimes
		n := 0
		for _, vs := range rec.evals {
			n += len(vs)
		}
		return float64(len(ts)-1) / ts[len(ts)-1].Sub(ts[0]).Seconds(), n
	}
	rate(0, 10) // warm up
	r0, _ := rate(0, 100)
	r2, evals := rate(2, 100)
	t.Logf("learner steps/s: %.1f with 0 evaluators, %.1f with 2 (%.0f%%; %d evaluations of 11 versions); model %d params, publish every 10 steps, %d CPUs",
		r0, r2, 100*r2/r0, evals, cfg.NewLayout().Total, runtime.NumCPU())
	if r2 < 0.6*r0 {
		t.Fatalf("2 evaluators slowed the learner from %.1f to %.1f steps/s", r0, r2)
	}
}

// Evaluations slower than the learner skip to the newest version: each
// evaluator's versions go up, skip some, and end with the final one.
func TestSlowEvaluatorsSkipToNewest(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 60)
	job.stepDelay = time.Millisecond
	job.hooks.delay = 40 * time.Millisecond
	sink := newRecordSink(t)
	log, _ := testLogger()
	opt := baseOptions(t, job, sink, log)
	opt.PublishEvery = 2
	if err := Run(context.Background(), opt); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec := sink.snapshot()
	final := rec.publishes[len(rec.publishes)-1]
	checkEvals(t, rec, 2, final)
	for name, vs := range rec.evals {
		t.Logf("%s evaluated %v of 1..%d", name, vs, final)
		if int64(len(vs)) >= final {
			t.Fatalf("%s evaluated every version %v: nothing was skipped", name, vs)
		}
	}
}

// EvalEvery k evaluates the first version, then versions at least k apart,
// and always the final one.
func TestEvalEvery(t *testing.T) {
	defer leakCheck(t)()
	job := newTinyJob(t, 20)
	job.stepDelay = 5 * time.Millisecond
	sink := newRecordSink(t)
	log, _ := testLogger()
	opt := baseOptions(t, job, sink, log)
	opt.PublishEvery, opt.EvalEvery, opt.Evaluators = 1, 3, 1
	if err := Run(context.Background(), opt); err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec := sink.snapshot()
	final := rec.publishes[len(rec.publishes)-1]
	checkEvals(t, rec, 1, final)
	vs := rec.evals["evaluator-0"]
	t.Logf("evaluated %v of 1..%d", vs, final)
	for i := 1; i < len(vs)-1; i++ {
		if vs[i]-vs[i-1] < 3 {
			t.Fatalf("versions %v: %d and %d are closer than EvalEvery 3", vs, vs[i-1], vs[i])
		}
	}
}
