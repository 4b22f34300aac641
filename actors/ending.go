package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors/messages"
)

// runEnd is the part of a topology actor that ends its run, once: after the
// learner's LearnerDone it waits for every live evaluator to report the final
// version (or for stopTimeout), and it ends at once on a Stop once the
// learner is done, on a failed or stopped learner, and on a learner the
// supervisor gave up on. Both topologies (pretraining and SFT's, RL's)
// embed it and hand it these messages.
type runEnd struct {
	result      chan<- topologyResult
	stopTimeout time.Duration
	log         zerolog.Logger
	sink        Sink
	learnerName string // in the error when the supervisor gives up on it

	learnerPID *actor.PID
	evalPIDs   map[string]*actor.PID // live evaluators by name, e.g. "evaluator-0"
	seen       map[string]int64      // newest version each evaluator reported
	done       *messages.LearnerDone // set when the learner has finished
	drainTimer *time.Timer
	stopping   bool // a Stop came: no waiting for final evaluations
	ended      bool
	// others, when set, reports whether evaluators the topology did not
	// spawn (RL's workers') have reported the final version too.
	others func(final int64) bool
}

// drainTimeout is the topology's message to itself: stop waiting for the
// evaluators' final evaluations.
type drainTimeout struct{}

// onStop: a user's Stop ends a run whose learner is done (no waiting for
// evaluations), else goes to the learner, which stops at its next step.
func (e *runEnd) onStop(ctx actor.Context, msg *messages.Stop) {
	e.stopping = true
	if e.done != nil {
		e.end(topologyResult{done: e.done})
		return
	}
	if e.learnerPID != nil {
		ctx.Send(e.learnerPID, msg)
	}
}

// onLearnerDone ends the run of a learner that failed, was stopped or made
// no version; otherwise it waits for the evaluators, at most stopTimeout.
func (e *runEnd) onLearnerDone(ctx actor.Context, msg *messages.LearnerDone) {
	e.done = msg
	if msg.GetError() != "" || msg.GetStopped() || msg.GetFinalVersion() == 0 || e.stopping {
		e.end(topologyResult{done: msg})
		return
	}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	e.drainTimer = time.AfterFunc(e.stopTimeout, func() { root.Send(self, &drainTimeout{}) })
	e.checkDrained()
}

// onEvalDone records an evaluation from a known evaluator.
func (e *runEnd) onEvalDone(msg *messages.EvalDone) {
	recordEval(e.seen, e.sink, msg)
	e.checkDrained()
}

func (e *runEnd) onDrainTimeout() {
	e.log.Warn().Dur("timeout", e.stopTimeout).Msg("evaluators did not evaluate the final weights in time")
	e.end(topologyResult{done: e.done})
}

// learnerTerminated reports whether who is the learner, ending a run it had
// not finished: the supervisor gave up on it (too many restarts).
func (e *runEnd) learnerTerminated(who *actor.PID) bool {
	if !who.Equal(e.learnerPID) {
		return false
	}
	if e.done == nil {
		e.end(topologyResult{err: fmt.Errorf("%w: the %s crashed %d times within %v and was stopped", ErrRun, e.learnerName, maxRestarts+1, restartWindow)})
	}
	return true
}

// evalTerminated forgets an evaluator the supervisor gave up on (or one
// stopped while the run shuts down), which the run no longer waits for.
func (e *runEnd) evalTerminated(who *actor.PID) {
	for name, pid := range e.evalPIDs {
		if who.Equal(pid) {
			if !e.ended {
				e.log.Error().Str("actor", name).Msg("evaluator stopped after repeated failures; the run goes on without it")
			}
			delete(e.evalPIDs, name)
		}
	}
	e.checkDrained()
}

func (e *runEnd) onStopping() {
	if e.drainTimer != nil {
		e.drainTimer.Stop()
	}
}

// checkDrained ends the run once the learner is done and every live evaluator
// has reported the final version (or a newer one).
func (e *runEnd) checkDrained() {
	if e.done == nil || e.ended {
		return
	}
	final := e.done.GetFinalVersion()
	for name := range e.evalPIDs {
		if e.seen[name] < final {
			return
		}
	}
	if e.others != nil && !e.others(final) {
		return
	}
	e.end(topologyResult{done: e.done})
}

func (e *runEnd) end(r topologyResult) {
	if e.ended {
		return
	}
	e.ended = true
	if e.drainTimer != nil {
		e.drainTimer.Stop()
	}
	e.result <- r // buffered 1, sent once
}
