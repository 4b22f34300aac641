package learner

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/troupe-rl/troupe/kernels"
)

// TestPPOExperiment runs PPO on the demo's SFT policy and reward model
// in-process (no actors), for tuning: TROUPE_PPO_EXP=DIR holding sft/ and rm/
// checkpoints and addition/ prompts. Skipped otherwise.
func TestPPOExperiment(t *testing.T) {
	root := os.Getenv("TROUPE_PPO_EXP")
	if root == "" {
		t.Skip("set TROUPE_PPO_EXP")
	}
	env := func(k string, d float64) float64 {
		if v, err := strconv.ParseFloat(os.Getenv(k), 64); err == nil {
			return v
		}
		return d
	}
	cfg := RLConfig{Model: DefaultModelConfig(), Data: DefaultDataConfig(), PPO: DefaultPPOConfig(), Critic: DefaultCriticConfig(), Reward: DefaultRewardConfig(), Seed: 1}
	cfg.Model.Init = root + "/sft"
	cfg.Data.Train, cfg.Data.Val = []string{root + "/addition/rl_prompts.jsonl"}, []string{root + "/addition/rl_prompts_val.jsonl"}
	cfg.Reward.Model = root + "/rm"
	cfg.Critic.Init = "reward"
	if os.Getenv("RULE") != "" {
		cfg.Reward.Model, cfg.Reward.Rules = "", []RuleConfig{{Type: os.Getenv("RULE")}}
		cfg.Critic.Init = "policy"
	}
	if w := env("MIX", 0); w > 0 {
		cfg.Reward.Rules = []RuleConfig{{Type: "exact_match", Weight: w}}
	}
	cfg.Reward.ModelWeight = env("RMW", 1)
	if c := os.Getenv("CRIT"); c != "" {
		cfg.Critic.Init = c
	}
	pc := &cfg.PPO
	if a := os.Getenv("ALGO"); a != "" {
		pc.Algorithm = a
	}
	pc.Epochs = int(env("EPOCHS", 4))
	pc.SamplesPerPrompt = int(env("SAMPLES", 1))
	pc.Minibatches = int(env("MB", 4))
	pc.Temperature = env("TEMP", 1)
	pc.Iterations = int(env("ITERS", 100))
	pc.MaxNewTokens = 8
	pc.LR = env("LR", 1e-4)
	cfg.Critic.LR = env("CLR", 1e-4)
	pc.KLCoef = env("BETA", 0.05)
	pc.PromptsPerIter = int(env("PROMPTS", 64))
	pc.WarmupIters = 5
	j, err := NewPPO(cfg, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := j.NewEvaluator(EvalOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	r0, err := ev.Evaluate(j.Weights())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initial %v", r0.Metrics)
	start := time.Now()
	every := int(env("EVERY", 25))
	for done := 0; done < pc.Iterations; done += every {
		ms := rlIterate(t, j, min(every, pc.Iterations-done))
		m := ms[len(ms)-1]
		r, err := ev.Evaluate(j.Weights())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("it %d (%.0fs): score %.3f kl %.3f ent %.3f clip %.3f ev %.3f | val exact %.3f score %.3f kl %.3f ent %.3f d1 %.3f", j.IterationsDone(), time.Since(start).Seconds(),
			meanOf(ms, "score_mean"), m.Extra["kl"], m.Extra["entropy"], m.Extra["clip_frac"], m.Extra["explained_variance"],
			r.Metrics["val_exact_match"], r.Metrics["val_score"], r.Metrics["val_kl"], r.Metrics["val_entropy"], r.Metrics["val_distinct1"])
	}
}
