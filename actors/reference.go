package actors

import (
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// refRun is one reference replica's state that outlives an actor incarnation.
type refRun struct {
	name     string             // e.g. "reference-0"
	ref      *learner.Reference // frozen initial policy, built by RunRL
	runID    string             // requests of another run are refused ("" = the local run's)
	log      zerolog.Logger
	inflight *sync.WaitGroup
	faults   *faults

	q    memberQueue // the request in hand is retried after a crash
	busy bool        // a Fill goroutine is running on ref
}

// Reference computes the log-probs of rollouts' responses under the frozen
// initial policy (for the KL penalty), one RefRequest at a time, off its own
// goroutine. Its weights never change, so it subscribes to nothing. A panic
// crashes the actor; the restarted incarnation retries the request.
//
// Behaviours: idle ⇄ computing.
type Reference struct {
	run      *refRun
	behavior actor.Behavior
}

var _ actor.Actor = (*Reference)(nil)

// refOutcome is a Fill goroutine's outcome (inside a workDone).
type refOutcome struct {
	logprobs [][]float32
	err      error
	seconds  float64
}

func newReferenceProducer(run *refRun) actor.Producer {
	return func() actor.Actor {
		a := &Reference{run: run, behavior: actor.NewBehavior()}
		a.behavior.Become(a.idle)
		return a
	}
}

// Receive handles Started, then dispatches to the behaviour.
func (a *Reference) Receive(ctx actor.Context) {
	if msg, ok := ctx.Message().(*messages.RefRequest); ok && msg.GetRunId() != a.run.runID {
		a.run.log.Error().Str("run_id", msg.GetRunId()).Str("want", a.run.runID).Str("from", ctx.Sender().GetAddress()).Msg("request of another run refused")
		ctx.Respond(&messages.RefResult{Iteration: msg.GetIteration(), RequestId: msg.GetRequestId(), Member: a.run.name,
			Refused: fmt.Sprintf("%s serves run %q, not %q", a.run.name, a.run.runID, msg.GetRunId())})
		return
	}
	if _, ok := ctx.Message().(*actor.Started); ok {
		if a.run.busy {
			a.behavior.Become(a.computing)
		}
		a.tryStart(ctx)
		return
	}
	a.behavior.Receive(ctx)
}

func (a *Reference) idle(ctx actor.Context) {
	if _, ok := ctx.Message().(*messages.RefRequest); ok {
		a.run.q.push(ctx)
		a.tryStart(ctx)
	}
}

func (a *Reference) computing(ctx actor.Context) {
	r := a.run
	switch msg := ctx.Message().(type) {
	case *messages.RefRequest:
		r.q.push(ctx)
	case *workDone:
		r.busy = false
		res := msg.res.(refOutcome)
		req := r.q.current.msg.(*messages.RefRequest)
		out := &messages.RefResult{Iteration: req.GetIteration(), RequestId: req.GetRequestId(), Member: r.name,
			Seconds: res.seconds, Retries: r.q.current.retries}
		if res.err != nil {
			out.Error = res.err.Error()
			r.log.Error().Err(res.err).Int64("request", req.GetRequestId()).Msg("reference log-probs failed")
		}
		for _, lp := range res.logprobs {
			out.Logprobs = append(out.Logprobs, &messages.LogProbs{Values: lp})
		}
		r.q.reply(ctx, r.log, out)
		a.behavior.Become(a.idle)
		a.tryStart(ctx)
	case *workPanicked:
		r.busy = false
		if j := r.q.current; j != nil {
			j.retries++
		}
		panic(fmt.Errorf("%s: reference log-probs panicked: %v\n%s", r.name, msg.reason, msg.stack))
	}
}

func (a *Reference) tryStart(ctx actor.Context) {
	r := a.run
	if r.busy {
		return
	}
	j := r.q.next()
	if j == nil {
		return
	}
	if j.retries > 0 {
		r.log.Warn().Int64("request", requestID(j)).Int64("retries", j.retries).Msg("reference restarted; retrying its request")
	}
	r.busy = true
	a.behavior.Become(a.computing)
	rs := rolloutsFromProto(j.msg.(*messages.RefRequest).GetRollouts())
	ref, fs := r.ref, r.faults
	goWork(ctx, r.inflight, func() any {
		if hit(&fs.refs, fs.opt.PanicReferenceAfter) {
			panic("injected crash in a reference request")
		}
		start := time.Now()
		if err := ref.Fill(rs); err != nil {
			return refOutcome{err: err}
		}
		lp := make([][]float32, len(rs))
		for i := range rs {
			lp[i] = rs[i].RefLogProbs
		}
		return refOutcome{logprobs: lp, seconds: time.Since(start).Seconds()}
	})
}
