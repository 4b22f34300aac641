package actors

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/policy"
)

func rlOptions(t *testing.T, job *rlTestJob, sink *recordSink, log zerolog.Logger) RLOptions {
	return RLOptions{
		Job:             job,
		Model:           "policy",
		NATSDir:         filepath.Join(t.TempDir(), "nats"),
		Generators:      2,
		References:      1,
		Rewards:         1,
		CheckpointEvery: 2,
		Evaluators:      1,
		EvalOptions:     learner.EvalOptions{MaxNewTokens: 3},
		Sink:            sink,
		Logger:          log,
		StopTimeout:     20 * time.Second,
	}
}

func runRL(t *testing.T, opt RLOptions, logs *syncBuffer) {
	t.Helper()
	if err := RunRL(context.Background(), opt); err != nil {
		t.Fatalf("RunRL: %v\nlogs:\n%s", err, logs.String())
	}
}

// checkBatches fails unless Train got every iteration once, in order, each
// with every prompt's SamplesPerPrompt rollouts (ids in prompt order, each
// exactly samples times), every rollout carrying reference log-probs and a
// score; it returns the generators that sampled them.
func checkBatches(t *testing.T, job *rlTestJob, trained []rlTrained) map[string]int {
	t.Helper()
	if len(trained) != job.total {
		t.Fatalf("Train called %d times, want %d", len(trained), job.total)
	}
	gens := map[string]int{}
	for i, tr := range trained {
		if tr.it != i {
			t.Fatalf("Train call %d was for iteration %d", i, tr.it)
		}
		prompts := job.Prompts(tr.it)
		if len(tr.rs) != len(prompts)*job.samples {
			t.Fatalf("iteration %d: %d rollouts, want %d", tr.it, len(tr.rs), len(prompts)*job.samples)
		}
		seen := map[int64]int{}
		for k, r := range tr.rs {
			p := prompts[k/job.samples]
			if r.PromptID != p.ID || r.PromptText != p.Text || r.Answer != p.Answer || !slices.Equal(r.Prompt, p.Tokens) {
				t.Fatalf("iteration %d rollout %d: prompt %d %q, want %d %q", tr.it, k, r.PromptID, r.PromptText, p.ID, p.Text)
			}
			seen[r.PromptID]++
			if len(r.Response) == 0 || len(r.LogProbs) != len(r.Response) || len(r.RefLogProbs) != len(r.Response) {
				t.Fatalf("iteration %d rollout %d: %d tokens, %d log-probs, %d reference log-probs", tr.it, k, len(r.Response), len(r.LogProbs), len(r.RefLogProbs))
			}
			if _, ok := r.ScoreParts["exact_match"]; !ok {
				t.Fatalf("iteration %d rollout %d: not scored (%v)", tr.it, k, r.ScoreParts)
			}
			gens[r.Generator]++
		}
		for _, p := range prompts {
			if seen[p.ID] != job.samples {
				t.Fatalf("iteration %d: prompt %d has %d rollouts, want %d", tr.it, p.ID, seen[p.ID], job.samples)
			}
		}
	}
	return gens
}

// sumExtra adds up one StepMetrics.Extra figure over the steps.
func sumExtra(steps []learner.StepMetrics, key string) float64 {
	s := 0.0
	for _, m := range steps {
		s += m.Extra[key]
	}
	return s
}

// Synchronous run across 2 generators in uneven chunks: every iteration
// trains once with every prompt's rollouts exactly once, each with reference
// log-probs and a score; both generators sample; weights, checkpoints, steps
// and evaluations reach the Sink; nothing is left running.
func TestRLIterationComplete(t *testing.T) {
	defer leakCheck(t)()
	job := newRLTestJob(t, 3, 8, 2)
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	opt.ChunkSize = 3 // chunks of 3, 3, 2 prompts on 2 generators
	runRL(t, opt, logs)

	trained, _ := job.snapshot()
	gens := checkBatches(t, job, trained)
	if len(gens) != 2 {
		t.Fatalf("rollouts by generator %v, want both generators", gens)
	}
	// Iteration 0 is sampled with the initial weights, which the reference
	// holds too: behaviour and reference log-probs agree.
	for _, r := range trained[0].rs {
		for i := range r.LogProbs {
			if d := r.LogProbs[i] - r.RefLogProbs[i]; d > 2e-3 || d < -2e-3 {
				t.Fatalf("iteration 0, prompt %d: behaviour %v vs reference %v", r.PromptID, r.LogProbs, r.RefLogProbs)
			}
		}
	}
	rec := sink.snapshot()
	if want := []int64{1, 2, 3, 4}; !slices.Equal(rec.publishes, want) {
		t.Fatalf("published %v, want %v", rec.publishes, want)
	}
	if want := []int{2, 3}; !slices.Equal(rec.checkpoints, want) {
		t.Fatalf("checkpoints %v, want %v", rec.checkpoints, want)
	}
	if len(rec.steps) != 3 {
		t.Fatalf("%d steps reported, want 3", len(rec.steps))
	}
	for i, m := range rec.steps {
		if m.Step != i+1 || m.Extra["rollouts"] != 16 || m.Extra["weights_version"] != float64(i+1) || m.Extra["rollout_tokens_per_s"] <= 0 {
			t.Fatalf("step %d: %+v", i, m)
		}
	}
	checkEvals(t, rec, 1, 4)
	t.Logf("rollouts by generator %v; step extras %v", gens, rec.steps[2].Extra)
}

// Version propagation: every rollout that claims version v was sampled with
// v (its behaviour log-probs are those of v's weights, and not of another
// version's); synchronously, v is the learner's version; evaluators see the
// versions up to the final one.
func TestRLVersionPropagation(t *testing.T) {
	defer leakCheck(t)()
	job := newRLTestJob(t, 4, 6, 1)
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	opt.Evaluators = 2
	runRL(t, opt, logs)

	trained, weights := job.snapshot()
	checkBatches(t, job, trained)
	check, err := job.modelAt(job.init, 1)
	if err != nil {
		t.Fatal(err)
	}
	worstOwn, bestOther := 0.0, 0.0
	for _, tr := range trained {
		if tr.version != int64(tr.it)+1 {
			t.Fatalf("iteration %d trained at version %d, want %d", tr.it, tr.version, tr.it+1)
		}
		for k := range tr.rs {
			r := &tr.rs[k]
			if r.Version != tr.version {
				t.Fatalf("iteration %d: synchronous rollout sampled with version %d, learner at %d", tr.it, r.Version, tr.version)
			}
			own := job.behaviourGap(t, check, weights[r.Version-1], r)
			worstOwn = max(worstOwn, own)
			if own > 2e-3 {
				t.Fatalf("iteration %d, prompt %d claims version %d but its log-probs differ from that version's by %.4f", tr.it, r.PromptID, r.Version, own)
			}
			if r.Version > 1 {
				bestOther = max(bestOther, job.behaviourGap(t, check, weights[r.Version-2], r))
			}
		}
	}
	if bestOther < 0.05 {
		t.Fatalf("the previous version's log-probs differ by at most %.4f: the check cannot tell versions apart", bestOther)
	}
	t.Logf("behaviour log-probs vs the claimed version: max gap %.2g; vs the version before: up to %.2f", worstOwn, bestOther)
	rec := sink.snapshot()
	checkEvals(t, rec, 2, 5)
	t.Logf("evaluations per evaluator: %v", rec.evals)
}

// A generator that panics mid-rollout is restarted with the current weights
// and retries its request; a reference and a reward actor that panic are
// restarted and retry theirs: every iteration still trains on every sample,
// and the retries are counted.
func TestRLMemberPanicsRetried(t *testing.T) {
	defer leakCheck(t)()
	job := newRLTestJob(t, 3, 8, 2)
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	opt.Fault = FaultInjection{PanicGeneratorAfter: 3, PanicReferenceAfter: 2, PanicRewardAfter: 4}
	runRL(t, opt, logs)

	trained, weights := job.snapshot()
	checkBatches(t, job, trained)
	check, err := job.modelAt(job.init, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range trained {
		for k := range tr.rs {
			if gap := job.behaviourGap(t, check, weights[tr.rs[k].Version-1], &tr.rs[k]); gap > 2e-3 {
				t.Fatalf("iteration %d: a rollout claims version %d but differs from it by %.4f", tr.it, tr.rs[k].Version, gap)
			}
		}
	}
	rec := sink.snapshot()
	if n := sumExtra(rec.steps, "retries"); n < 3 {
		t.Fatalf("%v retries counted, want at least 3 (generator, reference, reward)", n)
	}
	for _, want := range []string{"injected crash half-way through rollout request 3", "injected crash in a reference request",
		"injected crash in a reward request", "actor failed", "retrying its request"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("%q not logged:\n%s", want, logs.String())
		}
	}
	t.Logf("retries per iteration: %v", extras(rec.steps, "retries"))
}

func extras(steps []learner.StepMetrics, key string) []float64 {
	var out []float64
	for _, m := range steps {
		out = append(out, m.Extra[key])
	}
	return out
}

// A request with no answer within RolloutTimeout is re-sent to another
// generator; the stalled generator's late answer is discarded by request id.
func TestRLStalledRequestResent(t *testing.T) {
	defer leakCheck(t)()
	job := newRLTestJob(t, 6, 6, 1)
	job.trainDelay = 250 * time.Millisecond // the run outlives the stall
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	opt.RolloutTimeout = 300 * time.Millisecond
	opt.Fault = FaultInjection{StallGeneratorAfter: 2, Stall: time.Second}
	runRL(t, opt, logs)

	trained, _ := job.snapshot()
	checkBatches(t, job, trained)
	rec := sink.snapshot()
	last := rec.steps[len(rec.steps)-1].Extra
	if sumExtra(rec.steps, "retries") < 1 || last["discarded_answers"] < 1 {
		t.Fatalf("retries %v, discarded answers %v: want the stalled request re-sent and its late answer discarded",
			extras(rec.steps, "retries"), last["discarded_answers"])
	}
	if !strings.Contains(logs.String(), "request re-sent to another member") || !strings.Contains(logs.String(), "late answer discarded") {
		t.Fatalf("re-send or discard not logged:\n%s", logs.String())
	}
}

// Asynchronous with max_staleness 2: rollouts for later iterations are
// sampled while earlier ones train, so some are trained on 1 or 2 versions
// late, never more; each still carries its true version.
func TestRLAsyncStaleness(t *testing.T) {
	defer leakCheck(t)()
	const k = 2
	job := newRLTestJob(t, 8, 6, 1)
	job.trainDelay = 60 * time.Millisecond
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	opt.MaxStaleness = k
	runRL(t, opt, logs)

	trained, weights := job.snapshot()
	checkBatches(t, job, trained)
	check, err := job.modelAt(job.init, 1)
	if err != nil {
		t.Fatal(err)
	}
	var lags []int64
	maxLag := int64(0)
	for _, tr := range trained {
		if tr.version != int64(tr.it)+1 {
			t.Fatalf("iteration %d trained at version %d, want %d", tr.it, tr.version, tr.it+1)
		}
		worst := int64(0)
		for i := range tr.rs {
			r := &tr.rs[i]
			lag := tr.version - r.Version
			if lag < 0 || lag > k {
				t.Fatalf("iteration %d: rollout of version %d trained at %d: lag %d outside 0..%d", tr.it, r.Version, tr.version, lag, k)
			}
			if gap := job.behaviourGap(t, check, weights[r.Version-1], r); gap > 2e-3 {
				t.Fatalf("iteration %d: a rollout claims version %d but differs from it by %.4f", tr.it, r.Version, gap)
			}
			worst = max(worst, lag)
		}
		lags = append(lags, worst)
		maxLag = max(maxLag, worst)
	}
	rec := sink.snapshot()
	for i, m := range rec.steps {
		if m.Extra["max_version_lag"] != float64(lags[i]) {
			t.Fatalf("step %d reports max lag %v, the batch had %d", i, m.Extra["max_version_lag"], lags[i])
		}
	}
	t.Logf("max version lag per iteration: %v", lags)
	if maxLag == 0 {
		t.Fatalf("no rollout was stale: rollouts were not sampled ahead while training")
	}
	checkEvals(t, rec, 1, rec.publishes[len(rec.publishes)-1])
}

// Cancelling the context stops the run after the update in progress, with a
// checkpoint of the last iteration, and RunRL returns context.Canceled.
func TestRLStopsOnCancel(t *testing.T) {
	defer leakCheck(t)()
	job := newRLTestJob(t, 1000, 4, 1)
	job.trainDelay = 20 * time.Millisecond
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	opt.CheckpointEvery, opt.MaxStaleness = 1000, 1
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- RunRL(ctx, opt) }()
	for deadline := time.Now().Add(20 * time.Second); len(sink.snapshot().steps) < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress; logs:\n%s", logs.String())
		}
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RunRL: got %v, want context.Canceled", err)
		}
	case <-time.After(opt.StopTimeout + 5*time.Second):
		t.Fatalf("RunRL did not return after cancel")
	}
	rec := sink.snapshot()
	done := job.IterationsDone()
	if len(rec.checkpoints) != 1 || rec.checkpoints[0] != done || len(rec.steps) != done {
		t.Fatalf("checkpoints %v, %d steps reported, want one checkpoint at the last iteration %d", rec.checkpoints, len(rec.steps), done)
	}
	fresh := newRLTestJob(t, 1000, 4, 1)
	if err := fresh.Restore(sink.CheckpointDir(done)); err != nil || fresh.IterationsDone() != done || !slices.Equal(fresh.Weights(), job.Weights()) {
		t.Fatalf("stop checkpoint: restore %v at %d iterations, weights equal %v", err, fresh.IterationsDone(), slices.Equal(fresh.Weights(), job.Weights()))
	}
}

// A Train that panics is retried on the same rollouts by the restarted
// learner.
func TestRLTrainPanicRetried(t *testing.T) {
	defer leakCheck(t)()
	job := newRLTestJob(t, 3, 4, 1)
	job.panicTrain[1] = 1
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	opt.MaxStaleness = 1
	runRL(t, opt, logs)
	trained, _ := job.snapshot()
	checkBatches(t, job, trained)
	if !strings.Contains(logs.String(), "injected crash in Train(1)") {
		t.Fatalf("crash not logged:\n%s", logs.String())
	}
}

func TestRLRefusesBadOptions(t *testing.T) {
	job := newRLTestJob(t, 1, 2, 1)
	sink := newRecordSink(t)
	for _, tc := range []struct {
		name string
		edit func(*RLOptions)
		want string
	}{
		{"no job", func(o *RLOptions) { o.Job = nil }, "Job"},
		{"no sink", func(o *RLOptions) { o.Sink = nil }, "Sink"},
		{"negative generators", func(o *RLOptions) { o.Generators = -1 }, "replicas"},
		{"negative staleness", func(o *RLOptions) { o.MaxStaleness = -1 }, "max_staleness"},
		{"bad model", func(o *RLOptions) { o.Model = "a b" }, "model name"},
	} {
		opt := rlOptions(t, job, sink, zerolog.Nop())
		tc.edit(&opt)
		if err := RunRL(context.Background(), opt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}

// Rollout throughput with 1 and 2 generators (one thread each) on a model
// the size of policy's "tiny" preset: logged, not asserted (the machine's
// cores are shared).
func TestRLGeneratorThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("timing measurement")
	}
	cfg, err := policy.NamedConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.VocabSize = 257
	rate := func(gens int) (float64, float64) {
		job := newRLTestJobWith(t, cfg, 4, 48, 1, 32)
		sink := newRecordSink(t)
		opt := rlOptions(t, job, sink, zerolog.Nop())
		opt.Generators, opt.Evaluators, opt.CheckpointEvery = gens, 0, 0
		if err := RunRL(context.Background(), opt); err != nil {
			t.Fatalf("RunRL: %v", err)
		}
		steps := sink.snapshot().steps[1:] // the first includes warm-up
		for _, m := range steps {
			t.Logf("%d generators: generate %.3fs (busy %.3fs, waiting for weights %.3fs), %v tokens", gens, m.Extra["generate_seconds"], m.Extra["generate_busy_seconds"], m.Extra["weights_wait_seconds"], m.Extra["rollout_tokens"])
		}
		return sumExtra(steps, "rollout_tokens_per_s") / float64(len(steps)), sumExtra(steps, "generate_seconds") / float64(len(steps))
	}
	r1, s1 := rate(1)
	r2, s2 := rate(2)
	t.Logf("rollout tokens/s: %.0f with 1 generator (%.3fs per iteration), %.0f with 2 (%.3fs): %.2fx; 48 prompts × 32 tokens, %d-parameter model",
		r1, s1, r2, s2, r2/r1, cfg.NewLayout().Total)
}

// Generators subscribe to the weights while the learner publishes the
// initial ones; a subscriber that started at that moment used to miss the
// announcement (SubscribeWeights now follows the stream with an ordered
// consumer), and a run then waited for ever, about once in 30 starts here.
// Many short runs: each completes.
func TestRLStartRace(t *testing.T) {
	if testing.Short() {
		t.Skip("60 runs")
	}
	defer leakCheck(t)()
	for i := range 60 {
		job := newRLTestJob(t, 2, 4, 1)
		sink := newRecordSink(t)
		log, logs := testLogger()
		opt := rlOptions(t, job, sink, log)
		opt.MaxStaleness = 1
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := RunRL(ctx, opt)
		cancel()
		if err != nil {
			t.Fatalf("run %d: %v\n%s", i, err, logs.String())
		}
	}
}

// TestRLNonFiniteIterations: one iteration refused for a NaN is skipped and
// logged and the run completes; MaxNonFinite in a row end it with a clear
// error naming the last good checkpoint, which stays the latest.
func TestRLNonFiniteIterations(t *testing.T) {
	defer leakCheck(t)()
	job := newRLTestJob(t, 4, 4, 1)
	job.nanTrain = map[int]bool{1: true}
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := rlOptions(t, job, sink, log)
	runRL(t, opt, logs)
	if !strings.Contains(logs.String(), "iteration skipped: non-finite") {
		t.Fatalf("skip not logged:\n%s", logs.String())
	}

	job = newRLTestJob(t, 6, 4, 1)
	job.nanTrain = map[int]bool{2: true, 3: true, 4: true}
	sink = newRecordSink(t)
	log, logs = testLogger()
	opt = rlOptions(t, job, sink, log)
	opt.MaxNonFinite = 3
	err := RunRL(context.Background(), opt)
	if err == nil || !strings.Contains(err.Error(), "3 consecutive non-finite iterations") || !strings.Contains(err.Error(), "last good checkpoint") {
		t.Fatalf("got %v, want the run stopped after 3 non-finite iterations", err)
	}
}
