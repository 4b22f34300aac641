// Package actors is troupe's runtime: protoactor-go actors wrapping the learner
// (Learner, Evaluator; Generator, Reference and Reward for PPO), the topology
// built from a run config, weight broadcast over NATS (an embedded server by
// default) and supervision.
package actors

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
)

// Options is one single-learner topology: a learner actor driving Job, N
// evaluator actors that follow its weights over NATS, and a Sink that records
// what happens (the run directory).
type Options struct {
	Job   learner.Job
	Model string // weights name on NATS, e.g. "policy" or "reward"

	NATSURL     string        // "" = start an embedded nats-server with JetStream
	NATSDir     string        // JetStream storage for the embedded server, e.g. RUN_DIR/nats
	NATSOptions []nats.Option // credentials and TLS for NATSURL (NATSConfig.Options)
	Weights     WeightsConfig // how weights travel: nats.weights_dtype, weights_shm, weights_direct (NATSConfig.Weights)

	PublishEvery    int // publish weights every N optimizer steps (and after the last), e.g. 50
	CheckpointEvery int // checkpoint every N optimizer steps (and after the last / on stop), e.g. 200

	Evaluators  int                 // evaluator replicas, e.g. 1 (0 = none)
	EvalEvery   int                 // evaluate every k-th published version, e.g. 1
	EvalOptions learner.EvalOptions // what evaluators sample

	Sink   Sink
	Logger zerolog.Logger

	// StopTimeout bounds the final checkpoint and shutdown after a stop, e.g. 1m.
	StopTimeout time.Duration

	// MaxNonFinite is how many steps in a row may be refused for a NaN or Inf
	// loss or gradient norm (learner.ErrNonFinite: each is logged and
	// skipped, its data spent) before the run stops with an error naming the
	// last good checkpoint, e.g. 5; 0 = 5.
	MaxNonFinite int
}

// Sink receives the run's events, from the actors' goroutines: implementations
// must be safe for concurrent use. The run directory implements it.
type Sink interface {
	// OnStep is called after every optimizer step; version is the latest
	// published weights version (0 before the first).
	OnStep(m learner.StepMetrics, version int64)
	// OnPublish is called when weights version v (taken after step) is published.
	// checksum names its kind: "crc32c:1a2b3c4d" (or "sha256:..." for older stores).
	OnPublish(version int64, step int, size int, checksum string)
	// OnEval is called for every evaluation an evaluator finishes.
	OnEval(evaluator string, version int64, step int, r learner.EvalResult)
	// CheckpointDir returns a directory, not yet existing, to write the
	// checkpoint after step into; the run directory's is a hidden staging
	// directory beside the checkpoints (RUN_DIR/checkpoints/.step-200.tmp-…).
	// The learner writes it whole, then calls OnCheckpoint with it; if
	// writing fails, the learner removes it and does not call OnCheckpoint.
	CheckpointDir(step int) string
	// OnCheckpoint commits the checkpoint written into dir and returns where
	// it now is: the run directory syncs it, renames it to
	// RUN_DIR/checkpoints/step-N, then points checkpoints/latest at it and
	// rotates old ones. On an error nothing was committed: the previous
	// checkpoint stays the latest, and the learner stops the run.
	OnCheckpoint(step int, dir string) (committed string, err error)
}
