package actors

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/learner/datagen"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// rlPPOConfig is learner's TestPPOLearns set-up: a fresh 2-layer policy on a
// byte-level tokenizer, addition prompts, and a rule reward of 1 when the
// completion starts with a digit (a random policy does so ~4% of the time).
func rlPPOConfig(t *testing.T, iterations, maxStaleness int) learner.RLConfig {
	t.Helper()
	d, err := datagen.Addition(datagen.AdditionConfig{Digits: 2, Train: 1500, Val: 200, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := d.Write(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Train(strings.NewReader("0123456789+="), 257, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokDir := filepath.Join(dir, "tokenizer")
	if err := tok.Save(tokDir); err != nil {
		t.Fatal(err)
	}
	mc := learner.DefaultModelConfig()
	mc.Tokenizer, mc.NLayer, mc.NHead, mc.NEmbd, mc.NPositions = tokDir, 2, 4, 64, 24
	dc := learner.DefaultDataConfig()
	dc.Train, dc.Val = []string{filepath.Join(dir, datagen.RLTrainFile)}, []string{filepath.Join(dir, datagen.RLValFile)}
	pc := learner.DefaultPPOConfig()
	pc.Iterations, pc.PromptsPerIter, pc.MaxNewTokens, pc.LR = iterations, 32, 4, 3e-3
	pc.Minibatches, pc.EvalPrompts, pc.MaxStaleness = 2, 64, maxStaleness
	cc := learner.DefaultCriticConfig()
	cc.LR = 3e-3
	rc := learner.DefaultRewardConfig()
	rc.Rules, rc.MissingEOSPenalty = []learner.RuleConfig{{Type: "format", Pattern: "^[0-9]"}}, 0
	return learner.RLConfig{Model: mc, Data: dc, PPO: pc, Critic: cc, Reward: rc, Seed: 7}
}

// The real PPO job through the topology, 2 generators, asynchronous by one
// version: every iteration trains, the reward rises as it does when the
// roles run in-process (learner's TestPPOLearns), and the evaluator follows.
func TestRLWithPPOJob(t *testing.T) {
	if testing.Short() {
		t.Skip("30 PPO iterations")
	}
	defer leakCheck(t)()
	job, err := learner.NewPPO(rlPPOConfig(t, 30, 1), kernels.NewCPU(1))
	if err != nil {
		t.Fatalf("NewPPO: %v", err)
	}
	sink := newRecordSink(t)
	log, logs := testLogger()
	opt := RLOptions{
		Job: job, NATSDir: filepath.Join(t.TempDir(), "nats"), Generators: 2, CheckpointEvery: 10,
		Evaluators: 1, EvalEvery: 10, MaxStaleness: 1, Sink: sink, Logger: log,
	}
	runRL(t, opt, logs)
	rec := sink.snapshot()
	if len(rec.steps) != 30 {
		t.Fatalf("%d iterations reported, want 30", len(rec.steps))
	}
	mean := func(ms []learner.StepMetrics, key string) float64 { return sumExtra(ms, key) / float64(len(ms)) }
	first, last := mean(rec.steps[:5], "score_mean"), mean(rec.steps[25:], "score_mean")
	t.Logf("score %.3f -> %.3f; kl %.2f; max version lag %v; rollout tokens/s %.0f; checkpoints %v; evaluations %v",
		first, last, rec.steps[29].Extra["kl"], extras(rec.steps, "max_version_lag"), mean(rec.steps, "rollout_tokens_per_s"), rec.checkpoints, rec.evals)
	if last < first+0.3 {
		t.Fatalf("score %.3f -> %.3f: not learning through the topology", first, last)
	}
	for _, m := range rec.steps {
		if m.Extra["max_version_lag"] > 1 {
			t.Fatalf("iteration %d: lag %v past max_staleness 1", m.Step, m.Extra["max_version_lag"])
		}
	}
	checkEvals(t, rec, 1, rec.publishes[len(rec.publishes)-1])
}
