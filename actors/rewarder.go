package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

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

	member memberState // the request in hand, and whether a Fill goroutine is running on sc
}

// Rewarder scores rollouts (sequence rewards before the KL penalty), one
// ScoreRequest at a time, off its own goroutine. A panic crashes the actor;
// the restarted incarnation retries the request.
//
// Behaviours: idle ⇄ working.
type Rewarder = memberActor[*messages.ScoreRequest, fillOutcome[[]*messages.RolloutScore]]

var _ actor.Actor = (*Rewarder)(nil)

func newRewarderProducer(run *rewardRun) actor.Producer {
	return func() actor.Actor {
		return newMemberActor(memberConfig{
			name: run.name, runID: run.runID, log: run.log, inflight: run.inflight, state: &run.member,
			work: "scoring", refusal: "request of another run refused", retrying: "reward restarted; retrying its request",
		}, fillRole[*messages.ScoreRequest, []*messages.RolloutScore]{
			role: roleReward, name: run.name, model: run.sc, requests: &run.faults.rewards, crashAfter: run.faults.opt.PanicRewardAfter,
			take: rolloutScores, reply: scoreResult,
		})
	}
}

// rolloutScores is what a reward member answers of its filled rollouts.
func rolloutScores(rs []learner.Rollout) []*messages.RolloutScore {
	scores := make([]*messages.RolloutScore, len(rs))
	for i := range rs {
		scores[i] = &messages.RolloutScore{Total: rs[i].Score, Parts: rs[i].ScoreParts}
	}
	return scores
}

func scoreResult(req *messages.ScoreRequest, a fillAnswer[[]*messages.RolloutScore]) proto.Message {
	return &messages.ScoreResult{Iteration: req.GetIteration(), RequestId: req.GetRequestId(), Member: a.member,
		Refused: a.refused, Error: a.err, Seconds: a.seconds, Retries: a.retries, Scores: a.out}
}
