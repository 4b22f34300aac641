package learner

import (
	"fmt"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// RLRoles builds an RL run's generator, reference and reward roles without
// its learner: what a worker process (`troupe worker`) hosts. It reads the
// same sections as NewPPO, but neither the prompts nor the critic: the
// policy's starting weights (model.init, or a fresh model from the seed, as
// the learner's), the tokenizer, the sampling settings and the reward.
// Generators start at the starting weights as version 0 and follow the
// learner's published versions; the reference keeps them for good.
type RLRoles struct {
	cfg    RLConfig
	config policy.Config // the policy's shape
	tok    *tokenizer.Tokenizer
	eos    int32
	init   []float32 // (parameters) the starting policy: the reference's weights
}

// NewRLRoles loads what the roles need from cfg (cfg.Data and cfg.Critic are
// not read; cfg.Reward only by NewScoring).
func NewRLRoles(cfg RLConfig) (*RLRoles, error) {
	if err := cfg.PPO.Validate("ppo"); err != nil {
		return nil, err
	}
	m, tok, err := BuildModel(cfg.Model, kernels.NewCPU(1), cfg.Seed)
	if err != nil {
		return nil, err
	}
	if tok.EOT() < 0 {
		return nil, fmt.Errorf("%w: model: the tokenizer has no %s token to end a completion", ErrConfig, tokenizer.EndOfText)
	}
	r := &RLRoles{cfg: cfg, config: m.Config, tok: tok, eos: tok.EOT(), init: make([]float32, m.Layout.Total)}
	m.Dev.Download(r.init, m.Params)
	return r, nil
}

// Params is the policy's parameter count (the length of every weights version).
func (r *RLRoles) Params() int { return len(r.init) }

// replica is a copy of the starting policy on its own CPU device.
func (r *RLRoles) replica(threads int) (*policy.Model, error) {
	m, err := policy.New(r.config, kernels.NewCPU(max(1, threads)))
	if err != nil {
		return nil, err
	}
	m.Dev.Upload(m.Params, r.init)
	return m, nil
}

// NewGenerator returns a generator holding the starting weights as version 0,
// sampling as the job's generators do (ppo.max_new_tokens, temperature,
// top_k, top_p, samples_per_prompt; end-of-text stops).
func (r *RLRoles) NewGenerator(name string, threads int) (*Generator, error) {
	m, err := r.replica(threads)
	if err != nil {
		return nil, err
	}
	pc := r.cfg.PPO
	opts := policy.SampleOptions{MaxNewTokens: pc.MaxNewTokens, Temperature: float32(pc.Temperature), TopK: pc.TopK,
		TopP: float32(pc.TopP), StopTokens: []int32{r.eos}}
	return &Generator{Model: m, Opts: opts, Samples: pc.SamplesPerPrompt, Name: name}, nil
}

// NewReference returns the frozen starting policy.
func (r *RLRoles) NewReference(threads int) (*Reference, error) {
	m, err := r.replica(threads)
	if err != nil {
		return nil, err
	}
	return &Reference{Model: m, Temperature: float32(r.cfg.PPO.Temperature)}, nil
}

// NewScoring returns the configured reward on its own CPU device.
func (r *RLRoles) NewScoring(threads int) (*Scoring, error) {
	sc, err := BuildScorer(r.cfg.Reward, kernels.NewCPU(max(1, threads)))
	if err != nil {
		return nil, err
	}
	return &Scoring{Scorer: sc, Decode: r.tok.Decode, EOS: r.eos}, nil
}
