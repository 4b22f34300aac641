package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// Supervision: a crashed learner or evaluator is restarted, at most
// maxRestarts times within restartWindow (then it is stopped and, for the
// learner, the run fails).
const (
	maxRestarts   = 10
	restartWindow = time.Minute
)

// ErrRun is wrapped by Run's own failures (bad options, a learner that keeps
// crashing, a stop that times out).
var ErrRun = errors.New("actors: run")

// withDefaults validates opt and fills its zero values: Model "policy",
// EvalEvery 1, StopTimeout 1m, MaxNonFinite 5. PublishEvery or
// CheckpointEvery <= 0 mean "only at the start/end".
func (opt Options) withDefaults() (Options, error) {
	switch {
	case opt.Job == nil:
		return opt, fmt.Errorf("%w: Options.Job is nil", ErrRun)
	case opt.Sink == nil:
		return opt, fmt.Errorf("%w: Options.Sink is nil", ErrRun)
	case opt.Evaluators < 0:
		return opt, fmt.Errorf("%w: evaluator replicas must be >= 0, got %d", ErrRun, opt.Evaluators)
	case opt.MaxNonFinite < 0:
		return opt, fmt.Errorf("%w: Options.MaxNonFinite must be >= 0 (0 = %d), got %d", ErrRun, defaultMaxNonFinite, opt.MaxNonFinite)
	}
	if opt.Model == "" {
		opt.Model = "policy"
	}
	if err := checkModel(opt.Model); err != nil {
		return opt, err
	}
	if opt.EvalEvery <= 0 {
		opt.EvalEvery = 1
	}
	if opt.StopTimeout <= 0 {
		opt.StopTimeout = time.Minute
	}
	if opt.MaxNonFinite == 0 {
		opt.MaxNonFinite = defaultMaxNonFinite
	}
	return opt, nil
}

// Run runs a single-learner topology until the job is done or ctx is
// cancelled: it starts an embedded nats-server (or connects to opt.NATSURL),
// an actor system whose logs go to opt.Logger, and under one supervisor
// (one-for-one, 10 restarts a minute) the learner actor driving opt.Job and
// opt.Evaluators evaluator actors following its weights over NATS.
//
// When the job is done, Run waits (up to opt.StopTimeout) for every evaluator
// to evaluate the final weights, then returns nil. When ctx is cancelled, the
// learner finishes its current step, writes a checkpoint, and Run returns
// ctx.Err() (within opt.StopTimeout, or an ErrRun error saying it timed out).
// Everything Run started is stopped before it returns.
func Run(ctx context.Context, opt Options) error {
	opt, err := opt.withDefaults()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	log := opt.Logger

	w, err := openWeights(ctx, opt.NATSURL, opt.NATSDir, opt.NATSOptions, opt.Model, opt.Weights, log)
	if err != nil {
		return err
	}
	defer w.close() // after the actors stop (the actor system's shutdown is deferred later)
	nc, pub, url := w.nc, w.pub, w.url

	var inflight sync.WaitGroup
	evals, err := newEvalRuns(opt.Evaluators, func() (learner.Evaluator, error) { return opt.Job.NewEvaluator(opt.EvalOptions) },
		nc, opt.Model, opt.EvalEvery, log, &inflight)
	if err != nil {
		return err
	}
	lrun := &learnerRun{
		job: opt.Job, pub: pub, sink: opt.Sink, log: log.With().Str("actor", "learner").Logger(),
		publishEvery: opt.PublishEvery, checkpointEvery: opt.CheckpointEvery, maxNonFinite: opt.MaxNonFinite,
		lastPublish: -1, lastCheckpoint: opt.Job.StepsDone(),
	}

	sys := actor.NewActorSystem(actor.WithLoggerFactory(actorLoggerFactory(log)))
	defer sys.Shutdown()
	defer logSupervision(sys, log)()

	// The job belongs to the learner actor from here on.
	log.Info().Str("stage", opt.Job.Stage()).Int("step", opt.Job.StepsDone()).Int("total", opt.Job.TotalSteps()).
		Int("evaluators", opt.Evaluators).Str("nats", RedactURL(url)).Msg("run started")
	result := make(chan topologyResult, 1)
	pid, err := spawnSupervisor(sys, "troupe", func() actor.Actor {
		return &topology{opt: opt, learner: lrun, evals: evals, runEnd: runEnd{
			result: result, stopTimeout: opt.StopTimeout, log: opt.Logger, sink: opt.Sink, learnerName: "learner"}}
	})
	if err != nil {
		return fmt.Errorf("%w: spawn topology: %v", ErrRun, err)
	}

	return awaitEnd(ctx, sys, pid, result, &inflight, opt.StopTimeout, log, "step")
}

// awaitEnd waits for a topology's result (or, once ctx is cancelled, asks it
// to stop and waits at most stopTimeout), tears it down (actors, then work
// still running on members' goroutines), and turns the learner's LearnerDone
// into the run's error. unit names what LearnerDone's step counts ("step",
// "iteration").
func awaitEnd(ctx context.Context, sys *actor.ActorSystem, pid *actor.PID, result <-chan topologyResult,
	inflight *sync.WaitGroup, stopTimeout time.Duration, log zerolog.Logger, unit string) error {
	var res topologyResult
	select {
	case res = <-result:
	case <-ctx.Done():
		log.Info().Msg("stopping: final checkpoint")
		sys.Root.Send(pid, &messages.Stop{Reason: "interrupted"})
		timer := time.NewTimer(stopTimeout)
		select {
		case res = <-result:
		case <-timer.C:
			res.err = fmt.Errorf("%w: the learner did not stop within %v", ErrRun, stopTimeout)
		}
		timer.Stop()
	}

	// Tear down: actors (subscribers close on Stopping, request timers on the
	// learner's Stopping), work still running, then (deferred by the caller)
	// the actor system, the connection, the server.
	if _, err := sys.Root.StopFuture(pid).Result(); err != nil {
		log.Warn().Err(err).Msg("topology did not stop in time")
	}
	if !waitTimeout(inflight, stopTimeout) {
		log.Warn().Dur("timeout", stopTimeout).Msg("rollouts or evaluations still running at shutdown")
	}
	switch {
	case res.err != nil:
		return res.err
	case res.done.GetError() != "":
		return fmt.Errorf("%w: learner: %s", ErrRun, res.done.GetError())
	case res.done.GetStopped():
		log.Info().Int64(unit, res.done.GetStep()).Msg("run stopped")
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%w: learner stopped at %s %d", ErrRun, unit, res.done.GetStep())
	}
	log.Info().Int64(unit, res.done.GetStep()).Int64("version", res.done.GetVersion()).Msg("run finished")
	return nil
}

// waitTimeout waits for wg, at most d; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// topologyResult is how the topology actor ends Run.
type topologyResult struct {
	done *messages.LearnerDone // the learner's last word (nil if it never came)
	err  error
}

// topology is the run's root actor and the supervisor of the learner and the
// evaluators (Run gives its props the one-for-one strategy). It forwards a
// Stop to the learner, relays evaluations to the Sink, and ends the run when
// the learner is done and every evaluator has evaluated the final weights
// (or opt.StopTimeout has passed), or when the learner is stopped or gives up.
type topology struct {
	runEnd
	opt     Options
	learner *learnerRun
	evals   []*evalRun
}

var _ actor.Actor = (*topology)(nil)

func (t *topology) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		t.evalPIDs, t.seen = map[string]*actor.PID{}, map[string]int64{}
		for _, r := range t.evals {
			pid, err := ctx.SpawnNamed(actor.PropsFromProducer(newEvaluatorProducer(r)), r.name)
			if err != nil {
				t.end(topologyResult{err: fmt.Errorf("%w: spawn %s: %v", ErrRun, r.name, err)})
				return
			}
			t.evalPIDs[r.name] = pid
		}
		pid, err := ctx.SpawnNamed(actor.PropsFromProducer(newLearnerProducer(t.learner)), "learner")
		if err != nil {
			t.end(topologyResult{err: fmt.Errorf("%w: spawn learner: %v", ErrRun, err)})
			return
		}
		t.learnerPID = pid
	case *messages.Stop:
		t.onStop(ctx, msg)
	case *messages.LearnerDone:
		t.onLearnerDone(ctx, msg)
	case *messages.EvalDone:
		t.onEvalDone(msg)
	case *drainTimeout:
		t.onDrainTimeout()
	case *actor.Terminated:
		// A child the supervisor gave up on (too many restarts), or one
		// stopped while the run shuts down.
		if !t.learnerTerminated(msg.GetWho()) {
			t.evalTerminated(msg.GetWho())
		}
	case *actor.Stopping:
		t.onStopping()
	}
}

// recordEval notes the version an evaluator reported in seen and hands a
// successful evaluation to sink (both topologies' evaluators answer alike).
func recordEval(seen map[string]int64, sink Sink, msg *messages.EvalDone) {
	seen[msg.GetEvaluator()] = max(seen[msg.GetEvaluator()], msg.GetVersion())
	if msg.GetError() != "" {
		return
	}
	r := learner.EvalResult{Metrics: msg.GetMetrics()}
	for _, s := range msg.GetSamples() {
		r.Samples = append(r.Samples, learner.Sample{Prompt: s.GetPrompt(), Completion: s.GetCompletion()})
	}
	sink.OnEval(msg.GetEvaluator(), msg.GetVersion(), int(msg.GetStep()), r)
}
