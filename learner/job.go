// Package learner holds the training algorithms as plain Go, callable from a test
// without an actor or a NATS server: next-token training (pretraining, SFT with a
// loss mask), reward-model training, LR schedules, data loading, checkpoint/resume.
// The actors package drives a Job step by step and broadcasts its weights.
package learner

import "errors"

// Sentinel errors, wrapped with context (file, line, field) by every caller.
var (
	ErrConfig     = errors.New("learner: bad config")
	ErrData       = errors.New("learner: bad data")
	ErrCheckpoint = errors.New("learner: bad checkpoint")
	// ErrNonFinite marks a step (or an RL iteration) refused because its loss
	// or gradient norm was NaN or ±Inf: no update was applied.
	ErrNonFinite = errors.New("learner: non-finite loss or gradients")
)

// Job is one single-learner training stage (pretrain, sft, rm). A training loop
// reads top to bottom:
//
//	for !job.Done() { m, err := job.Step(); ...log m...; if due { job.SaveCheckpoint(dir) } }
//
// A Job is not safe for concurrent use; the learner actor owns it.
type Job interface {
	Stage() string   // "pretrain", "sft" or "rm"
	Done() bool      // all configured optimizer steps taken
	StepsDone() int  // optimizer steps taken so far, e.g. 120
	TotalSteps() int // optimizer steps configured, e.g. 2000

	// Step takes one optimizer step: GradAccum micro-batches of forward+backward,
	// grad clipping, LR from the schedule, AdamW.
	//
	// A step whose loss or gradient norm is NaN or ±Inf is refused before
	// AdamW runs: the parameters and both moments are untouched and
	// StepsDone does not advance, but the step's batches stay consumed, so
	// the next call takes the same step number on new data. The error wraps
	// ErrNonFinite and names the step and the figures. What to do about a
	// run of them is the caller's choice (the learner actor stops after a few).
	Step() (StepMetrics, error)

	// Weights returns a host copy of every trainable parameter as one flat
	// buffer (the blob that is broadcast and checksummed); NewEvaluator's
	// Evaluate takes exactly this layout.
	Weights() []float32

	// SaveCheckpoint writes a complete checkpoint into dir (created): the model in
	// Hugging Face layout with its tokenizer, the optimizer moments, and
	// trainer_state.json (step, RNG state, data position, best eval figure), each
	// file atomically, so that Restore(dir) continues exactly where this left off.
	SaveCheckpoint(dir string) error
	// Restore loads a checkpoint written by SaveCheckpoint into this job (same
	// config); the losses after it equal those of an uninterrupted run.
	Restore(dir string) error

	// NewEvaluator builds a held-out evaluator for this job's data and model
	// shape, with its own model copy (and device), for an evaluator actor; it is
	// safe to use concurrently with the job.
	NewEvaluator(opts EvalOptions) (Evaluator, error)

	// DataReport describes the data the job loaded (malformed lines included).
	DataReport() DataReport
}

// StepMetrics is what one optimizer step reports (one line of metrics.jsonl).
type StepMetrics struct {
	Step     int                `json:"step"`      // optimizer steps done, counting this one
	Loss     float64            `json:"loss"`      // mean training loss over the step's micro-batches
	LR       float64            `json:"lr"`        // learning rate used for this step
	GradNorm float64            `json:"grad_norm"` // global L2 norm before clipping
	Tokens   int                `json:"tokens"`    // tokens processed by this step (for tokens/s)
	Extra    map[string]float64 `json:"extra,omitempty"`
}

// Evaluator scores given weights on held-out data. It owns a model copy; the
// evaluator actor calls Evaluate for every weights version it receives.
type Evaluator interface {
	// Evaluate loads weights (Job.Weights layout) and returns held-out figures,
	// e.g. {"val_loss": 2.1} or {"val_accuracy": 0.87, "val_margin": 1.3}, plus
	// sample generations (none for a reward model). weights is valid only
	// during the call: the caller may reuse its memory afterwards.
	Evaluate(weights []float32) (EvalResult, error)
}

// EvalResult is one evaluation of one weights version.
type EvalResult struct {
	Metrics map[string]float64 `json:"metrics"`
	Samples []Sample           `json:"samples,omitempty"`
}

// Sample is one generation shown in samples.jsonl.
type Sample struct {
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
}

// DataReport says what a job read: every malformed line is listed (file:line:
// reason), nothing is dropped silently.
type DataReport struct {
	Files      []string // files read, after glob expansion
	Lines      int      // data lines (JSONL records) or, for text, lines of text
	Bad        int      // malformed lines skipped (refused above max_bad_fraction)
	BadLines   []error  // the first 100 of them, each "file:line: reason"
	TrainItems int      // training examples (sft/rm) or tokens (pretrain)
	ValItems   int      // held-out examples or tokens
	// UnigramEntropy is the entropy (nats per token) of the training tokens'
	// unigram distribution under the job's tokenizer: the loss a model that
	// ignores context would reach (pretrain only; 0 otherwise).
	UnigramEntropy float64
}

// EvalOptions configures what an evaluator samples besides held-out figures.
type EvalOptions struct {
	Prompts      []string // prompts to sample from (none = no samples)
	MaxNewTokens int      // e.g. 48
	Temperature  float64  // 0 = greedy
	Seed         uint64   // sampling seed, the same for every version
}
