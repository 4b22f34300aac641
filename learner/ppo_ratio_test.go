package learner

import (
	"math"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// TestPPORatioStartsAtOne: the learner's log-probs of freshly sampled
// rollouts equal the generator's behaviour log-probs (ρ = 1 before any update),
// and the reference's equal them too while the policy is the reference.
func TestPPORatioStartsAtOne(t *testing.T) {
	cfg := rlSetup(t, "ppo")
	cfg.PPO.Temperature = 0.7
	jj, err := NewPPO(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	j := jj.(*ppoJob)
	gen, _ := j.NewGenerator("g", 1)
	ref, _ := j.NewReference(1)
	rs, err := gen.Rollout(j.Prompts(0), j.RolloutSeed(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.Fill(rs); err != nil {
		t.Fatal(err)
	}
	ss := make([]*sample, len(rs))
	for i, r := range rs {
		ss[i] = &sample{seq: append(append([]int32{}, r.Prompt...), r.Response...), p: len(r.Prompt)}
	}
	tokens, targets, B, T := pack(ss)
	logp, _ := j.policy.ForwardLogProbs(tokens, targets, B, T, float32(cfg.PPO.Temperature), false)
	worst := 0.0
	for b, r := range rs {
		for t2, lp := range r.LogProbs {
			row := b*T + ss[b].p - 1 + t2
			worst = math.Max(worst, math.Abs(float64(logp[row]-lp)))
			worst = math.Max(worst, math.Abs(float64(r.RefLogProbs[t2]-lp)))
		}
	}
	if worst > 1e-4 {
		t.Fatalf("learner/reference vs behaviour log-probs differ by %g", worst)
	}
}
