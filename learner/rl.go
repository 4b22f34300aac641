package learner

import (
	"fmt"

	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/reward"
)

// RL (PPO / A2C) splits one iteration across roles that the actors package
// runs as separate actors, each a plain Go value here so that a test can drive
// a whole iteration without an actor or a NATS server:
//
//	prompts := job.Prompts(it)                       // learner
//	rs, _ := gen.Rollout(prompts, job.RolloutSeed(it)) // Generator × N (policy copy, KV cache)
//	_ = ref.Fill(rs)                                  // Reference × N (frozen initial policy)
//	_ = sc.Fill(rs)                                   // Reward × N (RM and/or rules)
//	m, _ := job.Train(it, rs)                         // learner: critic, GAE, PPO epochs
//	gen.SetWeights(job.Weights(), version+1)          // over NATS in a real run

// RLPrompt is one prompt of an iteration.
type RLPrompt struct {
	ID     int64   // unique in the run: iteration*prompts_per_iter*samples + index
	Text   string  // the prompt after the data template, e.g. "28+52="
	Tokens []int32 // Text encoded (ordinary tokens, no special ones)
	Answer string  // the task's true answer when the data has one ("" = none)
}

// Rollout is one sampled completion and everything the roles add to it. The
// generator fills Prompt..Version, the reference RefLogProbs, the reward Score.
type Rollout struct {
	PromptID   int64
	PromptText string    // RLPrompt.Text
	Answer     string    // RLPrompt.Answer
	Prompt     []int32   // prompt tokens
	Response   []int32   // sampled tokens, the stop (end-of-text) token included when Stopped
	LogProbs   []float32 // (len Response) behaviour log-probs, as sampled
	Stopped    bool      // ended by end-of-text; false = truncated at max_new_tokens
	Version    int64     // weights version that sampled it
	Generator  string    // who sampled it, e.g. "generator-1"

	RefLogProbs []float32          // (len Response) log-probs under the reference policy
	Score       float64            // sequence reward from the reward role (before the KL penalty)
	ScoreParts  map[string]float64 // e.g. {"rm": 1.3, "exact_match": 1, "missing_eos": 0}
}

// Generator samples rollouts from its own copy of the policy.
type Generator struct {
	Model   *policy.Model
	Opts    policy.SampleOptions // MaxNewTokens, Temperature, TopK, TopP, StopTokens; Seed per call
	Samples int                  // completions per prompt, e.g. 1
	Name    string               // written into each Rollout
	version int64
}

// Version is the weights version the generator holds (0 = the initial weights).
func (g *Generator) Version() int64 { return g.version }

// SetWeights loads a flat policy buffer (Job.Weights layout) as version v.
func (g *Generator) SetWeights(w []float32, v int64) error {
	if len(w) != g.Model.Params.N {
		return fmt.Errorf("%w: %d weights for a policy of %d", ErrConfig, len(w), g.Model.Params.N)
	}
	g.Model.Dev.Upload(g.Model.Params, w)
	g.version = v
	return nil
}

// Rollout samples g.Samples completions per prompt. Sample k of prompt i draws
// from stream (seed, i*Samples+k) of policy.Generate, so the result does not
// depend on which generator runs which prompts, given the seed and weights.
func (g *Generator) Rollout(prompts []RLPrompt, seed uint64) ([]Rollout, error) {
	n := max(1, g.Samples)
	in := make([][]int32, 0, len(prompts)*n)
	for _, p := range prompts {
		for range n {
			in = append(in, p.Tokens)
		}
	}
	opt := g.Opts
	opt.Seed = seed
	ss, err := g.Model.Generate(in, opt)
	if err != nil {
		return nil, err
	}
	out := make([]Rollout, len(ss))
	for i, s := range ss {
		p := prompts[i/n]
		out[i] = Rollout{PromptID: p.ID, PromptText: p.Text, Answer: p.Answer, Prompt: p.Tokens, Response: s.Tokens, LogProbs: s.LogProbs,
			Stopped: s.Stopped, Version: g.version, Generator: g.Name}
	}
	return out, nil
}

// Reference computes log-probs under the frozen initial policy.
type Reference struct {
	Model       *policy.Model
	Temperature float32 // the rollouts' sampling temperature (log-probs of softmax(logits/T)); 0 or 1 = plain
}

// Fill sets RefLogProbs of every rollout.
func (r *Reference) Fill(rs []Rollout) error {
	seqs := make([][]int32, len(rs))
	for i := range rs {
		seqs[i] = append(append(make([]int32, 0, len(rs[i].Prompt)+len(rs[i].Response)), rs[i].Prompt...), rs[i].Response...)
	}
	lp, err := r.Model.LogProbsT(seqs, r.Temperature)
	if err != nil {
		return err
	}
	for i := range rs {
		p := len(rs[i].Prompt)
		rs[i].RefLogProbs = lp[i][p-1:]
	}
	return nil
}

// Scoring fills Score and ScoreParts with a reward.Scorer.
type Scoring struct {
	Scorer reward.Scorer
	Decode func([]int32) string // the tokenizer's decoder
	EOS    int32                // end-of-text id
}

// Fill scores every rollout.
func (s *Scoring) Fill(rs []Rollout) error {
	items := make([]reward.Item, len(rs))
	for i := range rs {
		resp := rs[i].Response
		if rs[i].Stopped && len(resp) > 0 && resp[len(resp)-1] == s.EOS {
			resp = resp[:len(resp)-1]
		}
		items[i] = reward.Item{PromptText: rs[i].PromptText, Prompt: rs[i].Prompt, Response: resp,
			ResponseText: s.Decode(resp), Answer: rs[i].Answer, Stopped: rs[i].Stopped}
	}
	scores, err := s.Scorer.Score(items)
	if err != nil {
		return err
	}
	for i := range rs {
		rs[i].Score, rs[i].ScoreParts = scores[i].Total, scores[i].Parts
	}
	return nil
}

// RLJob is the learner's side of an RL run (stage "ppo", algorithm ppo or
// a2c): it owns the policy being trained, the critic and their optimizers,
// the prompt data and the KL controller. The actors package asks it for each
// iteration's prompts, gathers the rollouts from the other roles, and hands
// them back to Train. Not safe for concurrent use; the learner actor owns it.
type RLJob interface {
	Stage() string        // "ppo"
	Algorithm() string    // "ppo" or "a2c"
	Done() bool           // all configured iterations trained
	IterationsDone() int  // iterations trained so far
	TotalIterations() int // iterations configured, e.g. 60

	// Prompts returns iteration it's prompts (ppo.prompts_per_iter of them,
	// deterministic in the seed and it), IDs unique in the run.
	Prompts(it int) []RLPrompt
	// RolloutSeed is the sampling seed of iteration it.
	RolloutSeed(it int) uint64
	// SamplesPerPrompt is the completions a generator draws per prompt.
	SamplesPerPrompt() int

	// Train runs one update (E epochs over M minibatches for ppo, one pass for
	// a2c) on iteration it's rollouts, each with reference log-probs and a
	// score, and the learner's current weights version; it returns the
	// iteration's metrics (reward, KL, clip fraction, ...).
	//
	// A minibatch with a NaN or ±Inf loss or gradient norm is skipped (no
	// policy or critic update; Extra["skipped_minibatches"] counts them). When
	// every minibatch of the iteration is skipped, Train returns an error
	// wrapping ErrNonFinite; the weights and both optimizers are as they were,
	// but the iteration counts (IterationsDone advances), so the next Train is
	// for iteration it+1 on new prompts.
	Train(it int, rs []Rollout, version int64) (StepMetrics, error)

	// Weights is a host copy of the policy's parameters (the blob broadcast to
	// generators and evaluators).
	Weights() []float32

	// NewGenerator, NewReference and NewScoring build the other roles, each
	// with its own model copy (one CPU thread unless threads > 0) for its actor.
	NewGenerator(name string, threads int) (*Generator, error)
	NewReference(threads int) (*Reference, error)
	NewScoring(threads int) (*Scoring, error)

	SaveCheckpoint(dir string) error // policy (HF layout) + critic/ + optimizer + trainer_state.json, atomically
	Restore(dir string) error
	NewEvaluator(opts EvalOptions) (Evaluator, error)
	DataReport() DataReport
}
