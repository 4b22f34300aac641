package learner

import (
	"fmt"
	"math"
	"strings"
)

// PPOConfig is the `ppo` section of an RL run config. Defaults follow the
// well-known trainers (TRL, OpenAI's lm-human-preferences, InstructGPT):
// clip 0.2, value clip 0.2, γ 1, λ 0.95, β 0.05.
type PPOConfig struct {
	// Algorithm: ppo (clipped surrogate, E epochs over M minibatches) or a2c
	// (advantage actor-critic: one pass, no ratio, as DeepMind used for Gopher).
	Algorithm string `yaml:"algorithm"`
	// Iterations: rollout + update rounds, default 50.
	Iterations int `yaml:"iterations"`
	// PromptsPerIter: prompts sampled per iteration, default 64.
	PromptsPerIter int `yaml:"prompts_per_iter"`
	// SamplesPerPrompt: completions per prompt, default 1.
	SamplesPerPrompt int `yaml:"samples_per_prompt"`
	// MaxNewTokens per completion, default 16; Temperature, TopK, TopP of the
	// rollouts (defaults 1, 0 = off, 1 = off). The learner's log-probs use the
	// same temperature.
	MaxNewTokens int     `yaml:"max_new_tokens"`
	Temperature  float64 `yaml:"temperature"`
	TopK         int     `yaml:"top_k"`
	TopP         float64 `yaml:"top_p"`

	// Epochs over each batch, default 4; Minibatches per epoch, default 4.
	Epochs      int `yaml:"epochs"`
	Minibatches int `yaml:"minibatches"`
	// Clip ε of the surrogate, default 0.2; ValueClip of the value loss, default 0.2 (0 = unclipped).
	Clip      float64 `yaml:"clip"`
	ValueClip float64 `yaml:"value_clip"`
	// Gamma γ, default 1.0; Lambda λ of GAE, default 0.95.
	Gamma  float64 `yaml:"gamma"`
	Lambda float64 `yaml:"lambda"`
	// VFCoef scales the value loss, default 0.1 (TRL); EntropyCoef the entropy
	// bonus, default 0 (off).
	VFCoef      float64 `yaml:"vf_coef"`
	EntropyCoef float64 `yaml:"entropy_coef"`

	// KLCoef β, the KL penalty per response token, default 0.05; 0 = no penalty.
	KLCoef float64 `yaml:"kl_coef"`
	// KLEstimator: k1 (log π − log π_ref, default) or k3 ((r−1) − log r, r = π_ref/π).
	KLEstimator string `yaml:"kl_estimator"`
	// TargetKL > 0 turns on the adaptive controller (Ziegler et al. 2019): β is
	// scaled by 1 + clip(KL/target − 1, ±0.2)·n/horizon after each batch of n
	// samples. Default 0 (β fixed); KLHorizon default 10000.
	TargetKL  float64 `yaml:"target_kl"`
	KLHorizon int     `yaml:"kl_horizon"`

	// WhitenAdvantages (masked, over the batch), default true.
	WhitenAdvantages bool `yaml:"whiten_advantages"`
	// NormalizeReward scales scores by a running std, default false; ClipReward
	// clips scores to ±ClipReward, default 0 (off).
	NormalizeReward bool    `yaml:"normalize_reward"`
	ClipReward      float64 `yaml:"clip_reward"`

	// LR of the policy, default 1e-5 (constant after WarmupIters linear warm-up,
	// default 0); GradClip per model, default 1; WeightDecay default 0; Beta1,
	// Beta2 default 0.9, 0.95.
	LR          float64 `yaml:"lr"`
	WarmupIters int     `yaml:"warmup_iters"`
	GradClip    float64 `yaml:"grad_clip"`
	WeightDecay float64 `yaml:"weight_decay"`
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`

	// PtxCoef mixes a next-token loss on PtxData into the policy update
	// (InstructGPT's PPO-ptx), default 0 (off). PtxData: plain-text files, or
	// JSONL {"prompt","response"} (loss on the response) like sft data;
	// PtxBatch sequences of PtxSeqLen tokens per minibatch (defaults 8, 64).
	PtxCoef   float64  `yaml:"ptx_coef"`
	PtxData   []string `yaml:"ptx_data"`
	PtxBatch  int      `yaml:"ptx_batch"`
	PtxSeqLen int      `yaml:"ptx_seq_len"`

	// MaxStaleness k lets generators sample up to k versions behind the
	// learner (asynchronous); 0 (default) = synchronous: every rollout of
	// iteration i comes from the weights after iteration i-1.
	MaxStaleness int `yaml:"max_staleness"`
	// EvalPrompts: held-out prompts evaluated per evaluation (greedy), default 500.
	EvalPrompts int `yaml:"eval_prompts"`
}

// CriticConfig is the `critic` section: the value model.
type CriticConfig struct {
	// Init: "policy" (the policy's starting checkpoint, a fresh value head,
	// the default), "reward" (the reward model's trunk and head), or a critic
	// checkpoint directory.
	Init string `yaml:"init"`
	// LR of the critic, default 1e-5; GradClip, default 1.
	LR       float64 `yaml:"lr"`
	GradClip float64 `yaml:"grad_clip"`
}

// RewardConfig is the `reward` section: where sequence rewards come from. The
// total is ModelWeight·RM(prompt, response) + Σ rule weight·rule, plus
// MissingEOSPenalty for a truncated completion.
type RewardConfig struct {
	// Replicas of the reward actor, default 1.
	Replicas int `yaml:"replicas"`
	// Model: a reward-model checkpoint (or run) directory, "" = none.
	Model string `yaml:"model"`
	// ModelWeight scales the RM score, default 1.
	ModelWeight float64 `yaml:"model_weight"`
	// Rules add rule-based rewards.
	Rules []RuleConfig `yaml:"rules"`
	// MissingEOSPenalty is added to the score of a completion that hit
	// max_new_tokens without end-of-text, default -1 (0 = off).
	MissingEOSPenalty float64 `yaml:"missing_eos_penalty"`
}

// RuleConfig is one rule reward.
type RuleConfig struct {
	// Type: exact_match (1 if the trimmed response equals the prompt's answer),
	// length (the response's length in tokens, e.g. with a negative weight),
	// format (1 if the response matches Pattern).
	Type    string  `yaml:"type"`
	Weight  float64 `yaml:"weight"`  // default 1
	Pattern string  `yaml:"pattern"` // format only: a Go regexp, e.g. "^[0-9]+$"
}

// RuleTypes lists RuleConfig.Type's values.
var RuleTypes = []string{"exact_match", "length", "format"}

// DefaultPPOConfig returns the defaults documented on PPOConfig.
func DefaultPPOConfig() PPOConfig {
	return PPOConfig{Algorithm: "ppo", Iterations: 50, PromptsPerIter: 64, SamplesPerPrompt: 1,
		MaxNewTokens: 16, Temperature: 1, TopP: 1, Epochs: 4, Minibatches: 4, Clip: 0.2, ValueClip: 0.2,
		Gamma: 1, Lambda: 0.95, VFCoef: 0.1, KLCoef: 0.05, KLEstimator: "k1", KLHorizon: 10000,
		WhitenAdvantages: true, PtxData: []string{}, LR: 1e-5, GradClip: 1, Beta1: 0.9, Beta2: 0.95, PtxBatch: 8, PtxSeqLen: 64,
		EvalPrompts: 500}
}

// DefaultCriticConfig returns the defaults documented on CriticConfig.
func DefaultCriticConfig() CriticConfig { return CriticConfig{Init: "policy", LR: 1e-5, GradClip: 1} }

// DefaultRewardConfig returns the defaults documented on RewardConfig.
func DefaultRewardConfig() RewardConfig {
	return RewardConfig{Replicas: 1, ModelWeight: 1, Rules: []RuleConfig{}, MissingEOSPenalty: -1}
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Validate names the first bad field by its YAML path under prefix ("ppo").
func (c PPOConfig) Validate(prefix string) error {
	f := func(name, format string, a ...any) error { return fieldErr(prefix+"."+name, format, a...) }
	switch {
	case !oneOf(c.Algorithm, "ppo", "a2c"):
		return f("algorithm", "%q is not one of ppo, a2c", c.Algorithm)
	case c.Iterations < 1:
		return f("iterations", "must be >= 1, got %d", c.Iterations)
	case c.PromptsPerIter < 1:
		return f("prompts_per_iter", "must be >= 1, got %d", c.PromptsPerIter)
	case c.SamplesPerPrompt < 1:
		return f("samples_per_prompt", "must be >= 1, got %d", c.SamplesPerPrompt)
	case c.MaxNewTokens < 1:
		return f("max_new_tokens", "must be >= 1, got %d", c.MaxNewTokens)
	case !(c.Temperature > 0) || !finite(c.Temperature):
		return f("temperature", "must be > 0 (rollouts are sampled), got %g", c.Temperature)
	case c.TopK < 0:
		return f("top_k", "must be >= 0 (0 = off), got %d", c.TopK)
	case !(c.TopP > 0 && c.TopP <= 1):
		return f("top_p", "must be in (0,1] (1 = off), got %g", c.TopP)
	case c.Epochs < 1:
		return f("epochs", "must be >= 1, got %d", c.Epochs)
	case c.Minibatches < 1 || c.Minibatches > c.PromptsPerIter*c.SamplesPerPrompt:
		return f("minibatches", "must be in [1, prompts_per_iter*samples_per_prompt = %d], got %d", c.PromptsPerIter*c.SamplesPerPrompt, c.Minibatches)
	case !(c.Clip > 0) || !finite(c.Clip):
		return f("clip", "must be > 0, got %g", c.Clip)
	case !(c.ValueClip >= 0) || !finite(c.ValueClip):
		return f("value_clip", "must be >= 0 (0 = unclipped), got %g", c.ValueClip)
	case !(c.Gamma >= 0 && c.Gamma <= 1):
		return f("gamma", "must be in [0,1], got %g", c.Gamma)
	case !(c.Lambda >= 0 && c.Lambda <= 1):
		return f("lambda", "must be in [0,1], got %g", c.Lambda)
	case !(c.VFCoef >= 0) || !finite(c.VFCoef):
		return f("vf_coef", "must be >= 0, got %g", c.VFCoef)
	case !(c.EntropyCoef >= 0) || !finite(c.EntropyCoef):
		return f("entropy_coef", "must be >= 0, got %g", c.EntropyCoef)
	case !(c.KLCoef >= 0) || !finite(c.KLCoef):
		return f("kl_coef", "must be >= 0 (0 = no KL penalty), got %g", c.KLCoef)
	case !oneOf(c.KLEstimator, "k1", "k3"):
		return f("kl_estimator", "%q is not one of k1, k3", c.KLEstimator)
	case !(c.TargetKL >= 0) || !finite(c.TargetKL):
		return f("target_kl", "must be >= 0 (0 = fixed kl_coef), got %g", c.TargetKL)
	case c.TargetKL > 0 && c.KLHorizon < 1:
		return f("kl_horizon", "must be >= 1 with target_kl, got %d", c.KLHorizon)
	case !(c.ClipReward >= 0) || !finite(c.ClipReward):
		return f("clip_reward", "must be >= 0 (0 = off), got %g", c.ClipReward)
	case !(c.LR > 0) || !finite(c.LR):
		return f("lr", "must be > 0, got %g", c.LR)
	case c.WarmupIters < 0:
		return f("warmup_iters", "must be >= 0, got %d", c.WarmupIters)
	case !(c.GradClip >= 0) || !finite(c.GradClip):
		return f("grad_clip", "must be >= 0 (0 = off), got %g", c.GradClip)
	case !(c.WeightDecay >= 0) || !finite(c.WeightDecay):
		return f("weight_decay", "must be >= 0, got %g", c.WeightDecay)
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return f("beta1", "must be in [0,1), got %g", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return f("beta2", "must be in [0,1), got %g", c.Beta2)
	case !(c.PtxCoef >= 0) || !finite(c.PtxCoef):
		return f("ptx_coef", "must be >= 0 (0 = off), got %g", c.PtxCoef)
	case c.PtxCoef > 0 && len(c.PtxData) == 0:
		return f("ptx_data", "must name files when ptx_coef > 0")
	case c.PtxCoef > 0 && c.PtxBatch < 1:
		return f("ptx_batch", "must be >= 1, got %d", c.PtxBatch)
	case c.PtxCoef > 0 && c.PtxSeqLen < 2:
		return f("ptx_seq_len", "must be >= 2, got %d", c.PtxSeqLen)
	case c.MaxStaleness < 0:
		return f("max_staleness", "must be >= 0 (0 = synchronous), got %d", c.MaxStaleness)
	case c.EvalPrompts < 0:
		return f("eval_prompts", "must be >= 0, got %d", c.EvalPrompts)
	}
	return nil
}

// Validate names the first bad field under prefix ("critic").
func (c CriticConfig) Validate(prefix string) error {
	switch {
	case strings.TrimSpace(c.Init) == "":
		return fieldErr(prefix+".init", "must be policy, reward or a critic checkpoint directory")
	case !(c.LR > 0) || !finite(c.LR):
		return fieldErr(prefix+".lr", "must be > 0, got %g", c.LR)
	case !(c.GradClip >= 0) || !finite(c.GradClip):
		return fieldErr(prefix+".grad_clip", "must be >= 0 (0 = off), got %g", c.GradClip)
	}
	return nil
}

// Validate names the first bad field under prefix ("reward").
func (c RewardConfig) Validate(prefix string) error {
	switch {
	case c.Replicas < 1:
		return fieldErr(prefix+".replicas", "must be >= 1, got %d", c.Replicas)
	case c.Model == "" && len(c.Rules) == 0:
		return fieldErr(prefix, "needs a model (a reward-model checkpoint) or at least one rule (%s)", strings.Join(RuleTypes, ", "))
	case !finite(c.ModelWeight):
		return fieldErr(prefix+".model_weight", "must be finite, got %g", c.ModelWeight)
	case !finite(c.MissingEOSPenalty):
		return fieldErr(prefix+".missing_eos_penalty", "must be finite, got %g", c.MissingEOSPenalty)
	}
	for i, r := range c.Rules {
		p := fmt.Sprintf("%s.rules[%d]", prefix, i)
		switch {
		case !oneOf(r.Type, RuleTypes...):
			return fieldErr(p+".type", "%q is not one of %s", r.Type, strings.Join(RuleTypes, ", "))
		case !finite(r.Weight):
			return fieldErr(p+".weight", "must be finite, got %g", r.Weight)
		case r.Type == "format" && r.Pattern == "":
			return fieldErr(p+".pattern", "a format rule needs a pattern (a Go regexp)")
		case r.Type != "format" && r.Pattern != "":
			return fieldErr(p+".pattern", "only a format rule takes a pattern")
		}
	}
	return nil
}
