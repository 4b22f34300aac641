package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

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

	member memberState // the request in hand, and whether a Fill goroutine is running on ref
}

// Reference computes the log-probs of rollouts' responses under the frozen
// initial policy (for the KL penalty), one RefRequest at a time, off its own
// goroutine. Its weights never change, so it subscribes to nothing. A panic
// crashes the actor; the restarted incarnation retries the request.
//
// Behaviours: idle ⇄ working.
type Reference = memberActor[*messages.RefRequest, fillOutcome[[]*messages.LogProbs]]

var _ actor.Actor = (*Reference)(nil)

func newReferenceProducer(run *refRun) actor.Producer {
	return func() actor.Actor {
		return newMemberActor(memberConfig{
			name: run.name, runID: run.runID, log: run.log, inflight: run.inflight, state: &run.member,
			work: "reference log-probs", refusal: "request of another run refused", retrying: "reference restarted; retrying its request",
		}, fillRole[*messages.RefRequest, []*messages.LogProbs]{
			role: roleReference, name: run.name, model: run.ref, requests: &run.faults.refs, crashAfter: run.faults.opt.PanicReferenceAfter,
			take: refLogProbs, reply: refResult,
		})
	}
}

// refLogProbs is what a reference answers of its filled rollouts.
func refLogProbs(rs []learner.Rollout) []*messages.LogProbs {
	var out []*messages.LogProbs
	for i := range rs {
		out = append(out, &messages.LogProbs{Values: rs[i].RefLogProbs})
	}
	return out
}

func refResult(req *messages.RefRequest, a fillAnswer[[]*messages.LogProbs]) proto.Message {
	return &messages.RefResult{Iteration: req.GetIteration(), RequestId: req.GetRequestId(), Member: a.member,
		Refused: a.refused, Error: a.err, Seconds: a.seconds, Retries: a.retries, Logprobs: a.out}
}
