package actors

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// publishTimeout bounds one weights publish (put + announce).
const publishTimeout = 5 * time.Minute

// defaultMaxNonFinite is Options.MaxNonFinite's default: one bad batch is
// noise worth skipping, five in a row mean the model has diverged.
const defaultMaxNonFinite = 5

// learnerPhase is where a learner run stands. It lives in learnerRun, not in
// the actor, so that an incarnation started after a crash resumes the phase
// the crashed one was in (a crash while writing the stop checkpoint retries
// the checkpoint, not training).
type learnerPhase int

const (
	phaseStarting learnerPhase = iota // initial weights not yet published
	phaseTraining                     // stepping
	phaseStopping                     // stop requested: final checkpoint pending
	phaseFinished                     // LearnerDone sent
)

// learnerRun is the learner's state that outlives one actor incarnation. Only
// the learner actor's goroutine touches it.
type learnerRun struct {
	job             learner.Job
	pub             *WeightPublisher
	sink            Sink
	log             zerolog.Logger
	publishEvery    int // <= 0: only the initial and the final weights
	checkpointEvery int // <= 0: only the final / stop checkpoint
	maxNonFinite    int // non-finite steps in a row that end the run, e.g. 5

	phase          learnerPhase
	stopReason     string
	version        int64  // last published weights version (0 = none)
	finalVersion   int64  // version published with final=true (0 = none)
	lastPublish    int    // step of the last publish (-1 = none)
	lastCheckpoint int    // step of the last checkpoint (the resumed step counts)
	lastCkptDir    string // where the last checkpoint this run wrote lives ("" = none yet)
	nonFinite      int    // steps refused in a row for a non-finite loss or gradient
}

// Learner drives a learner.Job one optimizer step per message to itself, so
// that a Stop is handled between two steps. It publishes weights every
// publishEvery steps (and the initial and the final ones), checkpoints every
// checkpointEvery steps (and at the end and on stop), reports every step to the
// Sink, and tells its parent LearnerDone when the job is done or stopped. A
// step that panics is retried by the restarted actor.
//
// Behaviours: starting (publish the initial weights) → training → stopping
// (final checkpoint; everything but lifecycle messages ignored).
type Learner struct {
	run      *learnerRun
	behavior actor.Behavior
}

var _ actor.Actor = (*Learner)(nil)

// nextStep is the learner's message to itself: take one step. It never leaves
// the process.
type nextStep struct{}

func newLearnerProducer(run *learnerRun) actor.Producer {
	return func() actor.Actor {
		l := &Learner{run: run, behavior: actor.NewBehavior()}
		l.behavior.Become(l.starting)
		return l
	}
}

// Receive dispatches to the current behaviour.
func (l *Learner) Receive(ctx actor.Context) { l.behavior.Receive(ctx) }

func (l *Learner) starting(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		r := l.run
		switch r.phase {
		case phaseStarting:
			// The initial weights (version 1 on a fresh store): evaluators
			// report the starting model's figures, e.g. the pretrained
			// model's held-out loss before SFT.
			l.publish(ctx, r.job.StepsDone(), r.job.Done())
			r.phase = phaseTraining
			fallthrough
		case phaseTraining:
			l.behavior.Become(l.training)
			ctx.Send(ctx.Self(), &nextStep{})
		case phaseStopping:
			l.behavior.Become(l.stopping)
			l.stop(ctx, r.stopReason)
		case phaseFinished:
			l.behavior.Become(l.stopping)
		}
	default:
		l.run.log.Debug().Str("message", fmt.Sprintf("%T", msg)).Msg("learner: message before start ignored")
	}
}

func (l *Learner) training(ctx actor.Context) {
	r := l.run
	switch msg := ctx.Message().(type) {
	case *nextStep:
		if r.job.Done() {
			l.finish(ctx)
			return
		}
		m, err := r.job.Step()
		if errors.Is(err, learner.ErrNonFinite) {
			l.skipNonFinite(ctx, err)
			return
		}
		if err != nil {
			l.fail(ctx, fmt.Errorf("step %d: %w", r.job.StepsDone()+1, err))
			return
		}
		r.nonFinite = 0
		step, done := r.job.StepsDone(), r.job.Done()
		r.sink.OnStep(m, r.version)
		if done || (r.publishEvery > 0 && step%r.publishEvery == 0) {
			l.publish(ctx, step, done)
		}
		if done || (r.checkpointEvery > 0 && step%r.checkpointEvery == 0) {
			if err := l.checkpoint(step); err != nil {
				l.fail(ctx, err)
				return
			}
		}
		if done {
			l.finish(ctx)
			return
		}
		ctx.Send(ctx.Self(), &nextStep{})
	case *messages.Stop:
		r.phase, r.stopReason = phaseStopping, msg.GetReason()
		l.behavior.Become(l.stopping)
		l.stop(ctx, msg.GetReason())
	case *actor.Restarting:
		r.log.Warn().Int("step", r.job.StepsDone()).Msg("learner restarting; the failed step is retried")
	}
}

// skipNonFinite handles a step the job refused for a NaN or Inf loss or
// gradient norm: no update was applied (the parameters are the last good
// ones; only the data position moved on), so it is logged and the step is
// tried again on the next batch, up to maxNonFinite times in a row. Then
// the run ends with no checkpoint of this state, naming the last good one.
func (l *Learner) skipNonFinite(ctx actor.Context, err error) {
	r := l.run
	r.nonFinite++
	step := r.job.StepsDone() + 1
	if r.nonFinite < r.maxNonFinite {
		r.log.Warn().Err(err).Int("step", step).Int("in_a_row", r.nonFinite).Int("max", r.maxNonFinite).
			Msg("non-finite step skipped; its batch is spent and the step is retried on the next one")
		ctx.Send(ctx.Self(), &nextStep{})
		return
	}
	l.fail(ctx, fmt.Errorf("%d consecutive non-finite steps at step %d; last good checkpoint: %s: %w", r.nonFinite, step, l.lastGood(), err))
}

// lastGood names the last checkpoint written (or resumed from), for errors.
func (l *Learner) lastGood() string {
	r := l.run
	switch {
	case r.lastCkptDir != "":
		return r.lastCkptDir
	case r.lastCheckpoint > 0:
		return fmt.Sprintf("the one this run resumed from (step %d)", r.lastCheckpoint)
	}
	return "none (no checkpoint written yet)"
}

// stopping ignores everything: a queued nextStep, a second Stop.
func (l *Learner) stopping(actor.Context) {}

// publish publishes the current weights. A failed publish is logged and
// training goes on: evaluators get the next version.
func (l *Learner) publish(ctx actor.Context, step int, final bool) {
	r := l.run
	if r.lastPublish == step && !final {
		return
	}
	pctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	start := time.Now()
	a, err := r.pub.Publish(pctx, step, final, r.job.Weights())
	if err != nil {
		r.log.Error().Err(err).Int("step", step).Msg("weights publish failed; training continues")
		if a == nil {
			return
		}
	}
	r.version, r.lastPublish = a.Version, step
	if final {
		r.finalVersion = a.Version
	}
	r.log.Debug().Int64("version", a.Version).Int("step", step).Int64("bytes", a.Size).Dur("took", time.Since(start)).Msg("weights published")
	r.sink.OnPublish(a.Version, step, int(a.Size), announceChecksum(a))
}

// checkpoint writes the job's checkpoint for step (once per step).
func (l *Learner) checkpoint(step int) error {
	r := l.run
	if r.lastCheckpoint == step {
		return nil
	}
	dir := r.sink.CheckpointDir(step)
	start := time.Now()
	if err := r.job.SaveCheckpoint(dir); err != nil {
		// Never committed, so nothing points at it: give its space back (the
		// error may be a full disk). The previous checkpoint stays the latest.
		if rerr := os.RemoveAll(dir); rerr != nil {
			r.log.Warn().Err(rerr).Str("dir", dir).Msg("partial checkpoint not removed")
		}
		return fmt.Errorf("checkpoint step %d not written (the last good one stays: %s): %w", step, l.lastGood(), err)
	}
	committed, err := r.sink.OnCheckpoint(step, dir)
	if err != nil {
		return fmt.Errorf("checkpoint step %d not committed (the last good one stays: %s): %w", step, l.lastGood(), err)
	}
	r.lastCheckpoint, r.lastCkptDir = step, committed
	r.log.Debug().Int("step", step).Str("dir", committed).Dur("took", time.Since(start)).Msg("checkpoint written")
	return nil
}

// stop writes the stop checkpoint and tells the parent.
func (l *Learner) stop(ctx actor.Context, reason string) {
	r := l.run
	r.log.Info().Int("step", r.job.StepsDone()).Str("reason", reason).Msg("learner stopping")
	done := &messages.LearnerDone{Step: int64(r.job.StepsDone()), Version: r.version, Stopped: true, FinalVersion: r.finalVersion}
	if step := r.job.StepsDone(); step > 0 {
		if err := l.checkpoint(step); err != nil {
			done.Error = err.Error()
		}
	}
	r.phase = phaseFinished
	ctx.Send(ctx.Parent(), done)
}

// finish is the end of a job that ran all its steps.
func (l *Learner) finish(ctx actor.Context) {
	r := l.run
	l.behavior.Become(l.stopping)
	done := &messages.LearnerDone{Step: int64(r.job.StepsDone()), Version: r.version}
	if r.finalVersion == 0 {
		l.publish(ctx, r.job.StepsDone(), true)
	}
	if err := l.checkpoint(r.job.StepsDone()); err != nil {
		done.Error = err.Error()
	}
	done.Version, done.FinalVersion = r.version, r.finalVersion
	r.phase = phaseFinished
	ctx.Send(ctx.Parent(), done)
}

// fail ends the run with a job error (not a panic: errors are not retried).
func (l *Learner) fail(ctx actor.Context, err error) {
	r := l.run
	l.behavior.Become(l.stopping)
	r.phase = phaseFinished
	ctx.Send(ctx.Parent(), &messages.LearnerDone{Step: int64(r.job.StepsDone()), Version: r.version, Error: err.Error(), FinalVersion: r.finalVersion})
}
