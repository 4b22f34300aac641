package learner

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner/datagen"
)

// rlSetup is a fresh 2-layer policy on a byte-level tokenizer, addition
// prompts, and a rule reward: 1 when the completion starts with a digit (a
// random policy does so ~4% of the time).
func rlSetup(t testing.TB, algo string) RLConfig {
	t.Helper()
	train, _, tokDir := additionSFT(t)
	dir := filepath.Dir(train)
	mc := lmTiny(tokDir)
	mc.NPositions = 24
	dc := DefaultDataConfig()
	dc.Train, dc.Val = []string{filepath.Join(dir, datagen.RLTrainFile)}, []string{filepath.Join(dir, datagen.RLValFile)}
	pc := DefaultPPOConfig()
	pc.Algorithm, pc.Iterations, pc.PromptsPerIter, pc.MaxNewTokens, pc.LR = algo, 30, 32, 4, 3e-3
	pc.Minibatches, pc.EvalPrompts = 2, 64
	cc := DefaultCriticConfig()
	cc.LR = 3e-3
	rc := DefaultRewardConfig()
	rc.Rules, rc.MissingEOSPenalty = []RuleConfig{{Type: "format", Pattern: "^[0-9]"}}, 0
	return RLConfig{Model: mc, Data: dc, PPO: pc, Critic: cc, Reward: rc, Seed: 7}
}

// rlIterate runs n iterations with the roles in-process (what the actors do).
func rlIterate(t testing.TB, j RLJob, n int) []StepMetrics {
	t.Helper()
	gen, err := j.NewGenerator("g", 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := j.NewReference(1)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := j.NewScoring(1)
	if err != nil {
		t.Fatal(err)
	}
	var out []StepMetrics
	for range n {
		it := j.IterationsDone()
		if err := gen.SetWeights(j.Weights(), int64(it+1)); err != nil {
			t.Fatal(err)
		}
		rs, err := gen.Rollout(j.Prompts(it), j.RolloutSeed(it))
		if err != nil {
			t.Fatal(err)
		}
		if err := ref.Fill(rs); err != nil {
			t.Fatal(err)
		}
		if err := sc.Fill(rs); err != nil {
			t.Fatal(err)
		}
		m, err := j.Train(it, rs, int64(it+1))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func meanOf(ms []StepMetrics, key string) float64 {
	var s float64
	for _, m := range ms {
		s += m.Extra[key]
	}
	return s / float64(len(ms))
}

// TestPPOLearns: seeded PPO and A2C raise the rule reward within 30
// iterations while the KL to the reference stays bounded.
func TestPPOLearns(t *testing.T) {
	for _, algo := range []string{"ppo", "a2c"} {
		t.Run(algo, func(t *testing.T) {
			j, err := NewPPO(rlSetup(t, algo), kernels.NewCPU(2))
			if err != nil {
				t.Fatal(err)
			}
			ms := rlIterate(t, j, 30)
			first, last := meanOf(ms[:5], "score_mean"), meanOf(ms[25:], "score_mean")
			t.Logf("%s: score %.3f -> %.3f, kl %.3f -> %.3f, entropy %.3f -> %.3f, clip_frac %.3f", algo,
				first, last, ms[0].Extra["kl"], ms[29].Extra["kl"], ms[0].Extra["entropy"], ms[29].Extra["entropy"], ms[29].Extra["clip_frac"])
			// A2C takes one gradient step per minibatch, PPO four epochs of them.
			gain := map[string]float64{"ppo": 0.3, "a2c": 0.08}[algo]
			if last < first+gain {
				t.Fatalf("score %.3f -> %.3f: not learning", first, last)
			}
			for _, m := range ms {
				// A random policy moving its first token onto 10 digits of 257
				// ids alone costs log(25.7) = 3.2 nats; β = 0.05 keeps the rest small.
				if kl := m.Extra["kl"]; kl > 15 {
					t.Fatalf("iteration %d: KL %.2f nats per sample", m.Step, kl)
				}
			}
		})
	}
}

// TestPPOResumeEquality: a run saved after 2 iterations and restored into a
// fresh job continues exactly as the uninterrupted run (policy, critic, both
// optimizers, β and the PPO-ptx data position all restored).
func TestPPOResumeEquality(t *testing.T) {
	cfg := rlSetup(t, "ppo")
	cfg.PPO.TargetKL, cfg.PPO.NormalizeReward = 1, true // state that must survive too
	text, _ := lmCorpus(t)
	cfg.PPO.PtxCoef, cfg.PPO.PtxData, cfg.PPO.PtxSeqLen = 0.5, []string{text}, 16
	cfg.Data.CacheDir = filepath.Join(t.TempDir(), "cache")
	a, err := NewPPO(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	want := rlIterate(t, a, 4)
	if want[3].Extra["ptx_loss"] <= 0 {
		t.Fatalf("ptx_loss %v: PPO-ptx not mixed in", want[3].Extra["ptx_loss"])
	}
	b, err := NewPPO(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	rlIterate(t, b, 2)
	dir := filepath.Join(t.TempDir(), "step-2")
	if err := b.SaveCheckpoint(dir); err != nil {
		t.Fatal(err)
	}
	c, err := NewPPO(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(dir); err != nil {
		t.Fatal(err)
	}
	if c.IterationsDone() != 2 {
		t.Fatalf("restored at iteration %d", c.IterationsDone())
	}
	got := rlIterate(t, c, 2)
	for i, g := range got {
		w := want[2+i]
		for _, k := range []string{"score_mean", "kl", "kl_coef", "policy_loss", "value_loss", "ptx_loss"} {
			if g.Extra[k] != w.Extra[k] {
				t.Fatalf("iteration %d: %s %v after resume, %v uninterrupted", g.Step, k, g.Extra[k], w.Extra[k])
			}
		}
	}
	// A checkpoint of another config is refused with the reason.
	other := cfg
	other.PPO.Clip = 0.3
	d, err := NewPPO(other, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Restore(dir); !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), "ppo") {
		t.Fatalf("restore under another ppo config: %v", err)
	}
}
