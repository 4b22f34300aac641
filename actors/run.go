// Package actors is troupe's runtime: protoactor-go actors wrapping the learner
// (Learner, Evaluator; Generator, Reference and Reward for PPO), the topology
// built from a run config, weight broadcast over NATS (an embedded server by
// default) and supervision.
package actors

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
)

// Options is one single-learner topology: a learner actor driving Job, N
// evaluator actors that follow its weights over NATS, and a Sink that records
// what happens (the run directory).
type Options struct {
	Job   learner.Job
	Model string // weights name on NATS, e.g. "policy" or "reward"

	NATSURL string // "" = start an embedded nats-server with JetStream
	NATSDir string // JetStream storage for the embedded server, e.g. RUN_DIR/nats

	PublishEvery    int // publish weights every N optimizer steps (and after the last), e.g. 50
	CheckpointEvery int // checkpoint every N optimizer steps (and after the last / on stop), e.g. 200

	Evaluators  int                 // evaluator replicas, e.g. 1 (0 = none)
	EvalEvery   int                 // evaluate every k-th published version, e.g. 1
	EvalOptions learner.EvalOptions // what evaluators sample

	Sink   Sink
	Logger zerolog.Logger

	// StopTimeout bounds the final checkpoint and shutdown after a stop, e.g. 1m.
	StopTimeout time.Duration
}

// Sink receives the run's events, from the actors' goroutines: implementations
// must be safe for concurrent use. The run directory implements it.
type Sink interface {
	// OnStep is called after every optimizer step; version is the latest
	// published weights version (0 before the first).
	OnStep(m learner.StepMetrics, version int64)
	// OnPublish is called when weights version v (taken after step) is published.
	OnPublish(version int64, step int, size int, sha256 string)
	// OnEval is called for every evaluation an evaluator finishes.
	OnEval(evaluator string, version int64, step int, r learner.EvalResult)
	// CheckpointDir returns the directory for the checkpoint after step
	// (e.g. RUN_DIR/checkpoints/step-200); the learner writes it, then calls
	// OnCheckpoint, after which the sink may rotate old ones.
	CheckpointDir(step int) string
	OnCheckpoint(step int, dir string)
}
