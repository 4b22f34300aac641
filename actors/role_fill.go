package actors

import (
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// rolloutFiller is a model that fills in what sampled rollouts lack: a
// learner.Reference their RefLogProbs, a learner.Scoring their Score.
type rolloutFiller interface {
	Fill(rs []learner.Rollout) error
}

// fillRequest is a request carrying sampled rollouts (RefRequest,
// ScoreRequest).
type fillRequest interface {
	memberRequest
	GetIteration() int64
	GetRollouts() []*messages.Rollout
}

// fillRole is the member role of the reference and the reward: fill the
// request's rollouts with model and answer with what take picks of them.
// Out is what the answer carries per request (the rows of log-probs, the
// scores).
type fillRole[Req fillRequest, Out any] struct {
	plainRole
	role       rlRole
	name       string
	model      rolloutFiller
	requests   *atomic.Int64 // requests started, for the injected fault
	crashAfter int           // the request that panics (FaultInjection; 0 = none)
	take       func(rs []learner.Rollout) Out
	reply      func(req Req, a fillAnswer[Out]) proto.Message
}

// fillOutcome is what a Fill goroutine computed.
type fillOutcome[Out any] struct {
	out     Out
	seconds float64
}

// fillAnswer is what a fill member's answer says, whatever its message type.
type fillAnswer[Out any] struct {
	member  string
	refused string // the member serves another run
	err     string
	seconds float64
	retries int64 // times an incarnation crashed on this request
	out     Out
}

func (f fillRole[Req, Out]) refused(req Req, why string) proto.Message {
	return f.reply(req, fillAnswer[Out]{member: f.name, refused: why})
}

func (f fillRole[Req, Out]) begin(_ *memberJob, req Req) func() (fillOutcome[Out], error) {
	rs := rolloutsFromProto(req.GetRollouts())
	return func() (fillOutcome[Out], error) {
		if hit(f.requests, f.crashAfter) {
			panic("injected crash in a " + f.role.String() + " request")
		}
		start := time.Now()
		if err := f.model.Fill(rs); err != nil {
			return fillOutcome[Out]{}, err
		}
		return fillOutcome[Out]{out: f.take(rs), seconds: time.Since(start).Seconds()}, nil
	}
}

func (f fillRole[Req, Out]) answer(j *memberJob, req Req, res fillOutcome[Out], err error) []proto.Message {
	a := fillAnswer[Out]{member: f.name, seconds: res.seconds, retries: j.retries, out: res.out}
	if err != nil {
		a.err = err.Error()
	}
	return []proto.Message{f.reply(req, a)}
}
