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

	member memberState // the request in hand, and whether a rollout goroutine is running on gen
}

// Generator samples rollouts for the RL learner from its own copy of the
// policy and follows the policy's weights over NATS. It answers one
// RolloutRequest at a time, off its own goroutine, and swaps in new weights
// only between two rollouts. A request for min_version v waits until the
// generator holds v or newer, so a rollout that claims version v was sampled
// with v. A panic mid-rollout crashes the actor; the incarnation its
// supervisor starts reloads the current weights and retries the request.
//
// Behaviours: waiting (no weights since this incarnation started) → idle ⇄
// working (sampling).
type Generator = memberActor[*messages.RolloutRequest, rolloutResult]

var _ actor.Actor = (*Generator)(nil)

// generatorRole is what a generator does in the member shell: one per
// incarnation, since each incarnation subscribes to the weights and loads them
// afresh.
type generatorRole struct {
	run     *genRun
	sub     *WeightSubscriber
	loaded  bool     // this incarnation has loaded a weights version
	pending *Weights // newest version received while sampling
}

// rolloutResult is what a rollout goroutine sampled.
type rolloutResult struct {
	rs      []learner.Rollout
	version int64
	seconds float64
	wait    float64 // seconds the request waited for weights
}

func newGeneratorProducer(run *genRun) actor.Producer {
	return func() actor.Actor {
		return newMemberActor(memberConfig{
			name: run.name, runID: run.runID, log: run.log, inflight: run.inflight, state: &run.member,
			work: "rollout", refusal: "rollout request of another run refused",
		}, &generatorRole{run: run})
	}
}

func (g *generatorRole) refused(req *messages.RolloutRequest, why string) proto.Message {
	return &messages.RolloutBatch{Iteration: req.GetIteration(), RequestId: req.GetRequestId(), Generator: g.run.name, Refused: why}
}

func (g *generatorRole) ready() bool { return g.loaded }

// started subscribes this incarnation to the weights.
func (g *generatorRole) started(ctx actor.Context) {
	r := g.run
	if j := r.member.q.current; j != nil {
		r.log.Warn().Int64("request", j.msg.(*messages.RolloutRequest).GetRequestId()).Int64("retries", j.retries).
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

// handle loads weights that arrive between rollouts, keeps the newest that
// arrive during one, and unsubscribes when the incarnation ends.
func (g *generatorRole) handle(ctx actor.Context, sampling bool) bool {
	switch msg := ctx.Message().(type) {
	case *actor.Stopping, *actor.Restarting:
		if g.sub != nil {
			g.sub.Stop()
			g.sub = nil
		}
	case *weightsArrived:
		if !sampling {
			g.load(msg.w)
			return true
		}
		if g.pending == nil || msg.w.Version > g.pending.Version {
			g.pending = &msg.w
		}
	}
	return false
}

// replied swaps in the newest weights that arrived during the rollout.
func (g *generatorRole) replied() {
	if g.pending != nil {
		w := *g.pending
		g.pending = nil
		g.load(w)
	}
}

// load swaps in w (never while a rollout runs). A blob of the wrong size is
// logged and skipped: the next version may fit, and crashing would not help.
func (g *generatorRole) load(w Weights) {
	r := g.run
	defer w.Release() // SetWeights copied the values: the subscriber may reuse the buffer
	if err := r.gen.SetWeights(w.Data, w.Version); err != nil {
		r.log.Error().Err(err).Int64("version", w.Version).Msg("weights refused")
		return
	}
	g.loaded = true
	r.log.Debug().Int64("version", w.Version).Msg("weights loaded")
}

// begin samples the request in hand, once the weights it needs are here.
func (g *generatorRole) begin(j *memberJob, req *messages.RolloutRequest) func() (rolloutResult, error) {
	r := g.run
	if r.gen.Version() < req.GetMinVersion() {
		r.log.Debug().Int64("request", req.GetRequestId()).Int64("have", r.gen.Version()).Int64("want", req.GetMinVersion()).
			Msg("request waits for newer weights")
		return nil
	}
	r.log.Debug().Int64("request", req.GetRequestId()).Int("prompts", len(req.GetPrompts())).Int64("version", r.gen.Version()).Msg("sampling")
	prompts := promptsFromProto(req.GetPrompts())
	seed, gen, fs, wait := req.GetSeed(), r.gen, r.faults, time.Since(j.received).Seconds()
	return func() (rolloutResult, error) {
		start := time.Now()
		n := fs.gens.Add(1)
		if after := fs.opt.PanicGeneratorAfter; after > 0 && n == int64(after) {
			// Half the work is done, none of it returned.
			if _, err := gen.Rollout(prompts[:len(prompts)/2], seed); err != nil {
				return rolloutResult{}, err
			}
			panic(fmt.Sprintf("injected crash half-way through rollout request %d", n))
		}
		rs, err := gen.Rollout(prompts, seed)
		res := rolloutResult{rs: rs, version: gen.Version(), seconds: time.Since(start).Seconds(), wait: wait}
		if after := fs.opt.StallGeneratorAfter; after > 0 && n == int64(after) {
			time.Sleep(fs.opt.Stall)
		}
		return res, err
	}
}

// answer is the batch of rollouts, in parts where it passes 1 MiB.
func (g *generatorRole) answer(j *memberJob, req *messages.RolloutRequest, res rolloutResult, err error) []proto.Message {
	r := g.run
	b := &messages.RolloutBatch{
		Iteration: req.GetIteration(), RequestId: req.GetRequestId(), Generator: r.name, Version: res.version,
		Seconds: res.seconds, WaitSeconds: res.wait, Retries: j.retries, Rollouts: rolloutsToProto(res.rs, true),
	}
	if err != nil {
		b.Error = err.Error()
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
	return answers
}
