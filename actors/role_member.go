package actors

import (
	"fmt"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"
)

// The shell every pool member (generator, reference, reward) runs in: it
// refuses other runs' requests, queues the rest, works on the one in hand off
// the actor's goroutine, answers it, and leaves it in hand when the work
// panicked, so that the incarnation the supervisor starts retries it. What a
// role does differently is its memberRole.

// memberRequest is a request a pool member answers (RolloutRequest,
// RefRequest, ScoreRequest).
type memberRequest interface {
	proto.Message
	GetRunId() string
	GetRequestId() int64
}

// memberState is what every member keeps across actor incarnations, beside
// its role's model.
type memberState struct {
	q    memberQueue // the request in hand is retried after a crash
	busy bool        // a work goroutine is running on the member's model
}

// memberConfig is what the shell needs to know of a member, read from the
// role's run state at each incarnation.
type memberConfig struct {
	name     string // e.g. "reference-0"
	runID    string // requests of another run are refused ("" = the local run's)
	log      zerolog.Logger
	inflight *sync.WaitGroup // RunRL waits for work still running at shutdown
	state    *memberState
	work     string // what the member computes, for logs: "<work> failed", "<work> panicked"
	refusal  string // the log line for a request of another run
	retrying string // logged when the request in hand is retried after a crash ("" = the role says so itself)
}

// memberRole is what one role does differently from the others: a new value
// for each actor incarnation (it may hold that incarnation's state).
type memberRole[Req memberRequest, Res any] interface {
	// refused is the answer to req, a request of another run.
	refused(req Req, why string) proto.Message
	// ready says whether the member can work at all (a generator: once it
	// holds weights); until then requests only queue.
	ready() bool
	// begin returns the work on the request in hand, to run off the actor's
	// goroutine, or nil while req must wait (a generator: for newer weights).
	begin(j *memberJob, req Req) func() (Res, error)
	// answer is the reply to the request in hand, in one message or in
	// parts, once its work returned res and err (err is logged already).
	answer(j *memberJob, req Req, res Res, err error) []proto.Message
	// started runs on each incarnation's Started, before the shell looks for
	// work.
	started(ctx actor.Context)
	// handle takes the messages the shell does not know (working: a work
	// goroutine is running); true means the member may be able to start a
	// request now.
	handle(ctx actor.Context, working bool) bool
	// replied runs after each answer, before the next request starts.
	replied()
}

// plainRole is the hooks of a role that is always ready and has nothing to
// set up, handle or do between requests.
type plainRole struct{}

func (plainRole) ready() bool                     { return true }
func (plainRole) started(actor.Context)           {}
func (plainRole) handle(actor.Context, bool) bool { return false }
func (plainRole) replied()                        {}

// memberActor answers one request at a time, off its own goroutine. A panic
// in the work crashes the actor; the restarted incarnation retries the
// request.
//
// Behaviours: waiting (the role is not ready) → idle ⇄ working.
type memberActor[Req memberRequest, Res any] struct {
	memberConfig
	role     memberRole[Req, Res]
	behavior actor.Behavior
}

// memberOutcome is a work goroutine's outcome (inside a workDone).
type memberOutcome[Res any] struct {
	res Res
	err error
}

func newMemberActor[Req memberRequest, Res any](c memberConfig, role memberRole[Req, Res]) *memberActor[Req, Res] {
	a := &memberActor[Req, Res]{memberConfig: c, role: role, behavior: actor.NewBehavior()}
	if role.ready() {
		a.behavior.Become(a.idle)
	} else {
		a.behavior.Become(a.waiting)
	}
	return a
}

// Receive handles Started and refuses other runs' requests, then dispatches
// to the behaviour.
func (a *memberActor[Req, Res]) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		if a.state.busy {
			// A crashed incarnation left work running on the model; its
			// result arrives here.
			a.behavior.Become(a.working)
		}
		a.role.started(ctx)
		a.tryStart(ctx)
		return
	case Req:
		if id := msg.GetRunId(); id != a.runID {
			a.log.Error().Str("run_id", id).Str("want", a.runID).Str("from", ctx.Sender().GetAddress()).Msg(a.refusal)
			ctx.Respond(a.role.refused(msg, fmt.Sprintf("%s serves run %q, not %q", a.name, a.runID, id)))
			return
		}
	}
	a.behavior.Receive(ctx)
}

func (a *memberActor[Req, Res]) waiting(ctx actor.Context) {
	if _, ok := ctx.Message().(Req); ok {
		a.state.q.push(ctx)
		return
	}
	if a.role.handle(ctx, false) && a.role.ready() {
		a.behavior.Become(a.idle)
		a.tryStart(ctx)
	}
}

func (a *memberActor[Req, Res]) idle(ctx actor.Context) {
	if _, ok := ctx.Message().(Req); ok {
		a.state.q.push(ctx)
		a.tryStart(ctx)
		return
	}
	if a.role.handle(ctx, false) {
		a.tryStart(ctx)
	}
}

func (a *memberActor[Req, Res]) working(ctx actor.Context) {
	st := a.state
	switch msg := ctx.Message().(type) {
	case Req:
		st.q.push(ctx)
	case *workDone:
		st.busy = false
		out := msg.res.(memberOutcome[Res])
		j := st.q.current
		req := j.msg.(Req)
		if out.err != nil {
			a.log.Error().Err(out.err).Int64("request", req.GetRequestId()).Msg(a.work + " failed")
		}
		st.q.reply(ctx, a.log, a.role.answer(j, req, out.res, out.err)...)
		a.role.replied()
		if !a.role.ready() {
			a.behavior.Become(a.waiting)
			return
		}
		a.behavior.Become(a.idle)
		a.tryStart(ctx)
	case *workPanicked:
		st.busy = false
		if j := st.q.current; j != nil {
			j.retries++
		}
		panic(fmt.Errorf("%s: %s panicked: %v\n%s", a.name, a.work, msg.reason, msg.stack))
	default:
		a.role.handle(ctx, true)
	}
}

// tryStart works on the request in hand, once the role can.
func (a *memberActor[Req, Res]) tryStart(ctx actor.Context) {
	st := a.state
	if st.busy || !a.role.ready() {
		return
	}
	j := st.q.next()
	if j == nil {
		return
	}
	req := j.msg.(Req)
	if j.retries > 0 && a.retrying != "" {
		a.log.Warn().Int64("request", req.GetRequestId()).Int64("retries", j.retries).Msg(a.retrying)
	}
	work := a.role.begin(j, req)
	if work == nil {
		return
	}
	st.busy = true
	a.behavior.Become(a.working)
	goWork(ctx, a.inflight, func() any {
		res, err := work()
		return memberOutcome[Res]{res: res, err: err}
	})
}
