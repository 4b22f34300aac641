package actors

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// evalRun is one evaluator replica's state that outlives an actor
// incarnation. Only the evaluator actor's goroutine touches it.
type evalRun struct {
	name      string            // e.g. "evaluator-0"
	ev        learner.Evaluator // built by Run before the learner starts (the job is not safe for concurrent use)
	nc        *nats.Conn
	model     string
	evalEvery int // evaluate every k-th version (and the first and the final one)
	log       zerolog.Logger
	inflight  *sync.WaitGroup // Run waits for evaluations still running at shutdown

	busy          bool  // an Evaluate goroutine is running (possibly started by a crashed incarnation)
	lastEvaluated int64 // newest version evaluated (0 = none)
}

// Evaluator follows the learner's weights over NATS and evaluates them off its
// own goroutine, so that receiving newer versions never waits for a slow
// evaluation; when one finishes it evaluates the newest version received,
// skipping stale ones. Each result goes to the parent as an EvalDone. A panic
// inside Evaluate crashes the actor; its supervisor restarts it and the new
// incarnation reloads the current weights version.
//
// Behaviours: waiting (no weights yet) → idle ⇄ evaluating.
type Evaluator struct {
	run      *evalRun
	behavior actor.Behavior
	sub      *WeightSubscriber
	pending  *Weights // newest version received and not yet evaluated
}

var _ actor.Actor = (*Evaluator)(nil)

// Messages an evaluator sends itself; they carry weights and Go errors and
// never leave the process.
type (
	weightsArrived struct{ w Weights }
	evalFinished   struct {
		w       Weights
		res     learner.EvalResult
		err     error
		seconds float64
	}
	evalPanicked struct {
		version int64
		reason  any
		stack   []byte
	}
)

func newEvaluatorProducer(run *evalRun) actor.Producer {
	return func() actor.Actor {
		e := &Evaluator{run: run, behavior: actor.NewBehavior()}
		e.behavior.Become(e.waiting)
		return e
	}
}

// Receive handles lifecycle messages, then dispatches to the behaviour.
func (e *Evaluator) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		e.start(ctx)
		return
	case *actor.Stopping, *actor.Restarting:
		if e.sub != nil {
			e.sub.Stop()
			e.sub = nil
		}
		return
	}
	e.behavior.Receive(ctx)
}

func (e *Evaluator) start(ctx actor.Context) {
	r := e.run
	if r.busy {
		// A crashed incarnation left an evaluation running on r.ev; its
		// result arrives here.
		e.behavior.Become(e.evaluating)
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	sub, err := SubscribeWeights(r.nc, r.model, r.log, func(w Weights) {
		root.Send(self, &weightsArrived{w: w})
	})
	if err != nil {
		// The supervisor restarts us (and gives up after its retry budget).
		panic(fmt.Errorf("%s: subscribe to %s weights: %w", r.name, r.model, err))
	}
	e.sub = sub
}

func (e *Evaluator) waiting(ctx actor.Context) {
	if w, ok := ctx.Message().(*weightsArrived); ok {
		e.offer(w.w)
		e.behavior.Become(e.idle)
		e.maybeStart(ctx)
	}
}

func (e *Evaluator) idle(ctx actor.Context) {
	if w, ok := ctx.Message().(*weightsArrived); ok {
		e.offer(w.w)
		e.maybeStart(ctx)
	}
}

func (e *Evaluator) evaluating(ctx actor.Context) {
	r := e.run
	switch msg := ctx.Message().(type) {
	case *weightsArrived:
		e.offer(msg.w) // evaluated when the current one finishes
	case *evalFinished:
		r.busy = false
		r.lastEvaluated = max(r.lastEvaluated, msg.w.Version)
		done := &messages.EvalDone{
			Evaluator: r.name,
			Version:   msg.w.Version,
			Step:      int64(msg.w.Step),
			Final:     msg.w.Final,
			Seconds:   msg.seconds,
			Metrics:   msg.res.Metrics,
		}
		for _, s := range msg.res.Samples {
			done.Samples = append(done.Samples, &messages.Sample{Prompt: s.Prompt, Completion: s.Completion})
		}
		if msg.err != nil {
			done.Error = msg.err.Error()
			r.log.Error().Err(msg.err).Int64("version", msg.w.Version).Msg("evaluation failed")
		}
		ctx.Send(ctx.Parent(), done)
		e.behavior.Become(e.idle)
		e.maybeStart(ctx)
	case *evalPanicked:
		r.busy = false
		panic(fmt.Errorf("%s: Evaluate panicked on weights version %d: %v\n%s", r.name, msg.version, msg.reason, msg.stack))
	}
}

// offer keeps w if it is newer than what is pending and what was evaluated.
func (e *Evaluator) offer(w Weights) {
	if w.Version <= e.run.lastEvaluated || (e.pending != nil && w.Version <= e.pending.Version) {
		return
	}
	e.pending = &w
}

// due says whether version w is evaluated: the first one, the final one, and
// every evalEvery-th after the last evaluated.
func (e *Evaluator) due(w *Weights) bool {
	r := e.run
	return w.Version > r.lastEvaluated &&
		(r.lastEvaluated == 0 || w.Final || w.Version >= r.lastEvaluated+int64(r.evalEvery))
}

// maybeStart evaluates the pending version off the actor's goroutine.
func (e *Evaluator) maybeStart(ctx actor.Context) {
	r := e.run
	if r.busy || e.pending == nil || !e.due(e.pending) {
		return
	}
	w := *e.pending
	e.pending = nil
	r.busy = true
	e.behavior.Become(e.evaluating)
	self, root, ev := ctx.Self(), ctx.ActorSystem().Root, r.ev
	r.inflight.Add(1)
	go func() {
		defer r.inflight.Done()
		defer func() {
			if p := recover(); p != nil {
				root.Send(self, &evalPanicked{version: w.Version, reason: p, stack: debug.Stack()})
			}
		}()
		start := time.Now()
		res, err := ev.Evaluate(w.Data)
		w.Release() // done with the values (not after a panic: the retry may evaluate them again)
		root.Send(self, &evalFinished{w: w, res: res, err: err, seconds: time.Since(start).Seconds()})
	}()
}
