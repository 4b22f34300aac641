package actors

import (
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// genRun is one generator replica's state that outlives an actor
// incarnation. Only the generator actor's goroutine touches it (the rollout
// goroutine uses gen while busy, and nothing else does meanwhile).
type genRun struct {
	name     string             // e.g. "generator-1", or "generator@10.0.0.7:7711" on a worker
	runID    string             // requests of another run are refused ("" = the local run's)
	gen      *learner.Generator // built by RunRL (the job is not safe for concurrent use)
	nc       *nats.Conn
	model    string
	log      zerolog.Logger
	inflight *sync.WaitGroup // RunRL waits for rollouts still running at shutdown
	faults   *faults

	q    memberQueue // the request in hand is retried after a crash
	busy bool        // a rollout goroutine is running on gen
}

// Generator samples rollouts for the RL learner from its own copy of the
// policy and follows the policy's weights over NATS. It answers one
// RolloutRequest at a time, off its own goroutine, and swaps in new weights
// only between two rollouts. A request for min_version v waits until the
// generator holds v or newer, so a rollout that claims version v was sampled
// with v. A panic mid-rollout crashes the actor; the incarnation its
// supervisor starts reloads the current weights and retries the request.
//
// Behaviours: loading (no weights since this incarnation started) → ready ⇄
// sampling.
type Generator struct {
	run      *genRun
	behavior actor.Behavior
	sub      *WeightSubscriber
	loaded   bool     // this incarnation has loaded a weights version
	pending  *Weights // newest version received while sampling
}

var _ actor.Actor = (*Generator)(nil)

// rolloutResult is a rollout goroutine's outcome (inside a workDone).
type rolloutResult struct {
	rs      []learner.Rollout
	err     error
	version int64
	seconds float64
	wait    float64 // seconds the request waited for weights
}

func newGeneratorProducer(run *genRun) actor.Producer {
	return func() actor.Actor {
		g := &Generator{run: run, behavior: actor.NewBehavior()}
		g.behavior.Become(g.loading)
		return g
	}
}

// Receive handles lifecycle messages and refuses other runs' requests,
// then dispatches to the behaviour.
func (g *Generator) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		g.start(ctx)
		return
	case *actor.Stopping, *actor.Restarting:
		if g.sub != nil {
			g.sub.Stop()
			g.sub = nil
		}
		return
	case *messages.RolloutRequest:
		if id := msg.GetRunId(); id != g.run.runID {
			g.run.log.Error().Str("run_id", id).Str("want", g.run.runID).Str("from", ctx.Sender().GetAddress()).Msg("rollout request of another run refused")
			ctx.Respond(&messages.RolloutBatch{Iteration: msg.GetIteration(), RequestId: msg.GetRequestId(), Generator: g.run.name,
				Refused: fmt.Sprintf("%s serves run %q, not %q", g.run.name, g.run.runID, id)})
			return
		}
	}
	g.behavior.Receive(ctx)
}

func (g *Generator) start(ctx actor.Context) {
	r := g.run
	if r.busy {
		// A crashed incarnation left a rollout running on r.gen; its result
		// arrives here.
		g.behavior.Become(g.sampling)
	}
	if r.q.current != nil {
		r.log.Warn().Int64("request", requestID(r.q.current)).Int64("retries", r.q.current.retries).
			Msg("generator restarted; retrying its request once the current weights are loaded")
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	sub, err := SubscribeWeights(r.nc, r.model, r.log, func(w Weights) {
		root.Send(self, &weightsArrived{w: w})
	})
	if err != nil {
		panic(fmt.Errorf("%s: subscribe to %s weights: %w", r.name, r.model, err))
	}
	g.sub = sub
}

func (g *Generator) loading(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *messages.RolloutRequest:
		g.run.q.push(ctx)
	case *weightsArrived:
		g.load(msg.w)
		if g.loaded {
			g.behavior.Become(g.ready)
			g.tryStart(ctx)
		}
	}
}

func (g *Generator) ready(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *messages.RolloutRequest:
		g.run.q.push(ctx)
		g.tryStart(ctx)
	case *weightsArrived:
		g.load(msg.w)
		g.tryStart(ctx)
	}
}

func (g *Generator) sampling(ctx actor.Context) {
	r := g.run
	switch msg := ctx.Message().(type) {
	case *messages.RolloutRequest:
		r.q.push(ctx)
	case *weightsArrived:
		if g.pending == nil || msg.w.Version > g.pending.Version {
			g.pending = &msg.w
		}
	case *workDone:
		r.busy = false
		res := msg.res.(rolloutResult)
		j := r.q.current
		req := j.msg.(*messages.RolloutRequest)
		b := &messages.RolloutBatch{
			Iteration: req.GetIteration(), RequestId: req.GetRequestId(), Generator: r.name, Version: res.version,
			Seconds: res.seconds, WaitSeconds: res.wait, Retries: j.retries, Rollouts: rolloutsToProto(res.rs, true),
		}
		if res.err != nil {
			b.Error = res.err.Error()
			r.log.Error().Err(res.err).Int64("request", req.GetRequestId()).Msg("rollout failed")
		}
		parts := splitRolloutBatch(b)
		if len(parts) > 1 {
			r.log.Info().Int64("request", req.GetRequestId()).Int("bytes", proto.Size(b)).Int("parts", len(parts)).
				Msg("rollout answer over 1 MiB: sent in parts")
		}
		r.log.Debug().Int64("request", req.GetRequestId()).Int("rollouts", len(b.Rollouts)).Int64("version", res.version).Msg("rollouts sent")
		answers := make([]proto.Message, len(parts))
		for i, p := range parts {
			warnIfLarge(r.log, p)
			answers[i] = p
		}
		r.q.reply(ctx, r.log, answers...)
		if g.pending != nil {
			w := *g.pending
			g.pending = nil
			g.load(w)
		}
		if g.loaded {
			g.behavior.Become(g.ready)
			g.tryStart(ctx)
		} else {
			g.behavior.Become(g.loading)
		}
	case *workPanicked:
		r.busy = false
		if j := r.q.current; j != nil {
			j.retries++
		}
		panic(fmt.Errorf("%s: rollout panicked: %v\n%s", r.name, msg.reason, msg.stack))
	}
}

// load swaps in w (never while a rollout runs). A blob of the wrong size is
// logged and skipped: the next version may fit, and crashing would not help.
func (g *Generator) load(w Weights) {
	r := g.run
	if err := r.gen.SetWeights(w.Data, w.Version); err != nil {
		r.log.Error().Err(err).Int64("version", w.Version).Msg("weights refused")
		return
	}
	g.loaded = true
	r.log.Debug().Int64("version", w.Version).Msg("weights loaded")
}

// tryStart samples the request in hand, once the weights it needs are here.
func (g *Generator) tryStart(ctx actor.Context) {
	r := g.run
	if r.busy || !g.loaded {
		return
	}
	j := r.q.next()
	if j == nil {
		return
	}
	req := j.msg.(*messages.RolloutRequest)
	if r.gen.Version() < req.GetMinVersion() {
		r.log.Debug().Int64("request", req.GetRequestId()).Int64("have", r.gen.Version()).Int64("want", req.GetMinVersion()).
			Msg("request waits for newer weights")
		return
	}
	r.busy = true
	g.behavior.Become(g.sampling)
	r.log.Debug().Int64("request", req.GetRequestId()).Int("prompts", len(req.GetPrompts())).Int64("version", r.gen.Version()).Msg("sampling")
	prompts := promptsFromProto(req.GetPrompts())
	seed, gen, fs, wait := req.GetSeed(), r.gen, r.faults, time.Since(j.received).Seconds()
	goWork(ctx, r.inflight, func() any {
		start := time.Now()
		n := fs.gens.Add(1)
		if after := fs.opt.PanicGeneratorAfter; after > 0 && n == int64(after) {
			// Half the work is done, none of it returned.
			if _, err := gen.Rollout(prompts[:len(prompts)/2], seed); err != nil {
				return rolloutResult{err: err}
			}
			panic(fmt.Sprintf("injected crash half-way through rollout request %d", n))
		}
		rs, err := gen.Rollout(prompts, seed)
		res := rolloutResult{rs: rs, err: err, version: gen.Version(), seconds: time.Since(start).Seconds(), wait: wait}
		if after := fs.opt.StallGeneratorAfter; after > 0 && n == int64(after) {
			time.Sleep(fs.opt.Stall)
		}
		return res
	})
}

// requestID is the request id of a member's job, for logs.
func requestID(j *memberJob) int64 {
	type withID interface{ GetRequestId() int64 }
	if m, ok := j.msg.(withID); ok {
		return m.GetRequestId()
	}
	return 0
}
