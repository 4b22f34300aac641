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

// rewardRun is one reward replica's state that outlives an actor incarnation.
type rewardRun struct {
	name     string           // e.g. "reward-0"
	sc       *learner.Scoring // reward model and/or rules, built by RunRL
	runID    string           // requests of another run are refused ("" = the local run's)
	log      zerolog.Logger
	inflight *sync.WaitGroup
	faults   *faults

	q    memberQueue // the request in hand is retried after a crash
	busy bool        // a Fill goroutine is running on sc
}

// Rewarder scores rollouts (sequence rewards before the KL penalty), one
// ScoreRequest at a time, off its own goroutine. A panic crashes the actor;
// the restarted incarnation retries the request.
//
// Behaviours: idle ⇄ scoring.
type Rewarder struct {
	run      *rewardRun
	behavior actor.Behavior
}

var _ actor.Actor = (*Rewarder)(nil)

// scoreOutcome is a Fill goroutine's outcome (inside a workDone).
type scoreOutcome struct {
	scores  []*messages.RolloutScore
	err     error
	seconds float64
}

func newRewarderProducer(run *rewardRun) actor.Producer {
	return func() actor.Actor {
		a := &Rewarder{run: run, behavior: actor.NewBehavior()}
		a.behavior.Become(a.idle)
		return a
	}
}

// Receive handles Started, then dispatches to the behaviour.
func (a *Rewarder) Receive(ctx actor.Context) {
	if msg, ok := ctx.Message().(*messages.ScoreRequest); ok && msg.GetRunId() != a.run.runID {
		a.run.log.Error().Str("run_id", msg.GetRunId()).Str("want", a.run.runID).Str("from", ctx.Sender().GetAddress()).Msg("request of another run refused")
		ctx.Respond(&messages.ScoreResult{Iteration: msg.GetIteration(), RequestId: msg.GetRequestId(), Member: a.run.name,
			Refused: fmt.Sprintf("%s serves run %q, not %q", a.run.name, a.run.runID, msg.GetRunId())})
		return
	}
	if _, ok := ctx.Message().(*actor.Started); ok {
		if a.run.busy {
			a.behavior.Become(a.scoring)
		}
		a.tryStart(ctx)
		return
	}
	a.behavior.Receive(ctx)
}

func (a *Rewarder) idle(ctx actor.Context) {
	if _, ok := ctx.Message().(*messages.ScoreRequest); ok {
		a.run.q.push(ctx)
		a.tryStart(ctx)
	}
}

func (a *Rewarder) scoring(ctx actor.Context) {
	r := a.run
	switch msg := ctx.Message().(type) {
	case *messages.ScoreRequest:
		r.q.push(ctx)
	case *workDone:
		r.busy = false
		res := msg.res.(scoreOutcome)
		req := r.q.current.msg.(*messages.ScoreRequest)
		out := &messages.ScoreResult{Iteration: req.GetIteration(), RequestId: req.GetRequestId(), Member: r.name,
			Seconds: res.seconds, Retries: r.q.current.retries, Scores: res.scores}
		if res.err != nil {
			out.Error = res.err.Error()
			r.log.Error().Err(res.err).Int64("request", req.GetRequestId()).Msg("scoring failed")
		}
		r.q.reply(ctx, r.log, out)
		a.behavior.Become(a.idle)
		a.tryStart(ctx)
	case *workPanicked:
		r.busy = false
		if j := r.q.current; j != nil {
			j.retries++
		}
		panic(fmt.Errorf("%s: scoring panicked: %v\n%s", r.name, msg.reason, msg.stack))
	}
}

func (a *Rewarder) tryStart(ctx actor.Context) {
	r := a.run
	if r.busy {
		return
	}
	j := r.q.next()
	if j == nil {
		return
	}
	if j.retries > 0 {
		r.log.Warn().Int64("request", requestID(j)).Int64("retries", j.retries).Msg("reward restarted; retrying its request")
	}
	r.busy = true
	a.behavior.Become(a.scoring)
	rs := rolloutsFromProto(j.msg.(*messages.ScoreRequest).GetRollouts())
	sc, fs := r.sc, r.faults
	goWork(ctx, r.inflight, func() any {
		if hit(&fs.rewards, fs.opt.PanicRewardAfter) {
			panic("injected crash in a reward request")
		}
		start := time.Now()
		if err := sc.Fill(rs); err != nil {
			return scoreOutcome{err: err}
		}
		scores := make([]*messages.RolloutScore, len(rs))
		for i := range rs {
			scores[i] = &messages.RolloutScore{Total: rs[i].Score, Parts: rs[i].ScoreParts}
		}
		return scoreOutcome{scores: scores, seconds: time.Since(start).Seconds()}
	})
}
