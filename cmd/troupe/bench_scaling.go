package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors"
	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// Sequence-length scaling runs the `small` model with a 1024-position table
// ("small-1k": small's block_size of 256 cannot reach the longer lengths).
// Training keeps benchSeqTokens tokens per step (B = tokens/T), so tokens/s
// falls only by what the longer attention costs. Generation samples whole
// sequences of T tokens: a benchSeqPrompt-token prompt and T-benchSeqPrompt
// new tokens (batch benchSeqGenBatch, KV cache), one timed call after the
// training measurement has warmed the process, so new tokens/s is the mean
// cost of a decode step over contexts up to T.
const (
	benchSeqConfig   = "small-1k"
	benchSeqMax      = 1024
	benchSeqPrompt   = 16
	benchSeqGenBatch = 4
	benchSeqMin      = 2 * benchSeqPrompt
	benchSeqTokens   = 2048
	benchSeqSteps    = 3
)

// benchSeqScaling measures training and generation tokens/s at each length,
// troupe then the reference, and a summary line per length and measurement.
func benchSeqScaling(out *benchOut, tc torchRunner, seqs []int, threads int) error {
	base, err := benchShapeFor("small")
	if err != nil {
		return err
	}
	base.cfg.MaxSeqLen = benchSeqMax
	first := map[string][2]float64{} // troupe, pytorch tokens/s at the first length
	for _, T := range seqs {
		s := base
		s.seq, s.batch = T, max(1, benchSeqTokens/T)
		s.genBatch, s.promptLen, s.newTokens = benchSeqGenBatch, benchSeqPrompt, T-benchSeqPrompt
		res, err := benchTroupe(benchSeqConfig, s, []string{"train"}, benchSeqSteps, 1, threads, "cpu")
		if err != nil {
			return err
		}
		g, err := benchGenerateSeq(s, threads)
		if err != nil {
			return err
		}
		ours := map[string]benchResult{}
		for _, r := range append(res, g) {
			r["bench"] = r["bench"].(string) + "_seq"
			r["seq"] = T
			out.emit(r)
			ours[r["bench"].(string)] = r
		}
		theirs := map[string]benchResult{}
		if tc.ok {
			res, _, err := tc.exec([]string{"--config", "small", "--positions", fmt.Sprint(benchSeqMax), "--what", "train,generate",
				"--batch", fmt.Sprint(s.batch), "--seq", fmt.Sprint(T), "--prompt-len", fmt.Sprint(s.promptLen),
				"--gen-batch", fmt.Sprint(s.genBatch), "--new-tokens", fmt.Sprint(s.newTokens), "--steps", fmt.Sprint(benchSeqSteps),
				"--warmup", "1", "--gen-warmup", "0", "--gen-steps", "1"}, threads)
			if err != nil {
				return err
			}
			for _, r := range res {
				r["bench"] = str(r, "bench") + "_seq"
				r["config"], r["seq"] = benchSeqConfig, T
				out.emit(r)
				theirs[str(r, "bench")] = r
			}
		}
		for _, w := range []string{"train_seq", "generate_seq"} {
			key, batch := "tokens_per_s", s.batch
			if w == "generate_seq" {
				key, batch = "new_tokens_per_s", s.genBatch
			}
			line := benchResult{"impl": "summary", "bench": w, "config": benchSeqConfig, "seq": T, "batch": batch}
			a, _ := ours[w][key].(float64)
			p, pok := num(theirs[w], key)
			line["troupe_"+key] = a
			if pok {
				line["pytorch_"+key] = p
				if p > 0 {
					line["ratio"] = round2(a / p)
				}
			}
			f, seen := first[w]
			if !seen {
				f = [2]float64{a, p}
				first[w] = f
			}
			// Cost per token relative to the first length: >1 is slower per token.
			if a > 0 {
				line["troupe_cost_vs_first"] = round2(f[0] / a)
			}
			if pok && p > 0 && f[1] > 0 {
				line["pytorch_cost_vs_first"] = round2(f[1] / p)
			}
			out.emit(line)
		}
	}
	return nil
}

// benchGenerateSeq times one generation of s.newTokens tokens after
// s.promptLen-token prompts, batch s.genBatch.
func benchGenerateSeq(s benchShape, threads int) (benchResult, error) {
	dev := kernels.NewCPU(threads)
	m, err := policy.New(s.cfg, dev)
	if err != nil {
		return nil, err
	}
	m.Init(1)
	rng := rand.New(rand.NewPCG(1, 2))
	prompts := make([][]int32, s.genBatch)
	for i := range prompts {
		prompts[i] = make([]int32, s.promptLen)
		for j := range prompts[i] {
			prompts[i][j] = int32(rng.IntN(s.cfg.VocabSize))
		}
	}
	log.Info().Int("seq", s.promptLen+s.newTokens).Msg("bench: generate a whole sequence (KV cache)")
	var n int
	d, err := timeSteps(0, 1, func() error {
		n = 0
		out, err := m.Generate(prompts, policy.SampleOptions{MaxNewTokens: s.newTokens, Temperature: 1, Seed: 1})
		for _, o := range out {
			n += len(o.Tokens)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return benchResult{"impl": "troupe", "device": dev.Name(), "config": benchSeqConfig, "threads": threads, "bench": "generate",
		"batch": s.genBatch, "prompt_len": s.promptLen, "new_tokens": s.newTokens,
		"ms": round1(float64(d.Microseconds()) / 1e3), "new_tokens_per_s": round1(float64(n) / d.Seconds())}, nil
}

// Rollout scaling: a real PPO run (learner.NewPPO through buildJob, the
// actors.RunRL runtime with its NATS weight broadcast, reference and reward
// pools) on the `small` shape with a byte-level tokenizer and addition
// prompts, once with 1 generator actor and once with 2, each actor's model on
// one thread. rollout_tokens_per_s is what the runtime reports per iteration
// (tokens sampled / the generation wall time); the first iteration (start-up)
// is left out.
const (
	rolloutPrompts   = 32
	rolloutNewTokens = 64
	rolloutShape     = "small"
)

func benchRolloutScaling(out *benchOut, iters int) error {
	var rates []float64
	for _, gens := range []int{1, 2} {
		log.Info().Int("generators", gens).Msg("bench: rollout through the actor runtime")
		rate, steps, err := benchRollout(gens, iters)
		if err != nil {
			return fmt.Errorf("rollout scaling, %d generators: %w", gens, err)
		}
		for i, m := range steps {
			out.emit(benchResult{"impl": "troupe", "bench": "rollout", "config": rolloutShape, "generators": gens, "iteration": i + 1,
				"warmup": i == 0, "rollout_tokens": m.Extra["rollout_tokens"], "generate_seconds": round3(m.Extra["generate_seconds"]),
				"generate_busy_seconds": round3(m.Extra["generate_busy_seconds"]), "weights_wait_seconds": round3(m.Extra["weights_wait_seconds"]),
				"reference_seconds": round3(m.Extra["reference_seconds"]), "train_seconds": round3(m.Extra["train_seconds"]),
				"tokens_per_s": round1(m.Extra["rollout_tokens_per_s"])})
		}
		rates = append(rates, rate)
		line := benchResult{"impl": "summary", "bench": "rollout", "config": rolloutShape, "generators": gens,
			"prompts_per_iter": rolloutPrompts, "max_new_tokens": rolloutNewTokens, "threads_per_generator": 1,
			"iterations": len(steps) - 1, "tokens_per_s": round1(rate)}
		if gens > 1 && rates[0] > 0 {
			line["speedup"] = round2(rate / rates[0])
		}
		out.emit(line)
	}
	return nil
}

// benchRollout runs iters PPO iterations with gens generators and returns the
// mean rollout tokens/s after the first iteration, and every iteration's metrics.
func benchRollout(gens, iters int) (float64, []learner.StepMetrics, error) {
	dir, err := os.MkdirTemp("", "troupe-bench-rollout-")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(dir)
	var prompts, corpus strings.Builder
	enc := json.NewEncoder(&prompts)
	for i := 0; i < 4*rolloutPrompts; i++ {
		a, b := 13*i%97, 29*i%89
		_ = enc.Encode(map[string]string{"prompt": fmt.Sprintf("%d+%d=", a, b), "answer": fmt.Sprint(a + b)})
		fmt.Fprintf(&corpus, "%d+%d=%d\n", a, b, a+b)
	}
	if err := os.WriteFile(filepath.Join(dir, "rl.jsonl"), []byte(prompts.String()), 0o644); err != nil {
		return 0, nil, err
	}
	tok, err := tokenizer.Train(strings.NewReader(corpus.String()), 257, nil, nil) // the 256 bytes and <|endoftext|>
	if err != nil {
		return 0, nil, err
	}
	if err := tok.Save(filepath.Join(dir, "tok")); err != nil {
		return 0, nil, err
	}
	src := fmt.Sprintf(`stage: ppo
run_dir: run
threads: 0
model: {shape: %s, tokenizer: tok}
data: {train: [rl.jsonl], val_fraction: 0.1}
ppo: {iterations: %d, prompts_per_iter: %d, max_new_tokens: %d, epochs: 1, minibatches: 1}
critic: {init: policy}
reward: {rules: [{type: format, pattern: "^[0-9]"}, {type: exact_match}], missing_eos_penalty: 0}
generator: {replicas: %d, threads: 1}
evaluator: {replicas: 0}
`, rolloutShape, iters, rolloutPrompts, rolloutNewTokens, gens)
	cfg, err := actors.ParseRunConfig(filepath.Join(dir, "ppo.yaml"), []byte(src))
	if err != nil {
		return 0, nil, err
	}
	job, err := buildJob(cfg, cfg.Model, kernels.NewCPU(cfg.Threads))
	if err != nil {
		return 0, nil, err
	}
	rl, ok := job.(rlStage)
	if !ok {
		return 0, nil, fmt.Errorf("the rollout config built a %T, not a PPO job", job)
	}
	sink := &benchSink{dir: dir}
	err = actors.RunRL(context.Background(), actors.RLOptions{
		Job: rl.RLJob, NATSDir: filepath.Join(dir, "nats"),
		Generators: cfg.Generator.Replicas, References: 1, Rewards: 1, Threads: cfg.Generator.Threads,
		Sink: sink, Logger: log.Level(zerolog.WarnLevel), StopTimeout: time.Minute,
	})
	if err != nil {
		return 0, nil, err
	}
	steps := sink.snapshot()
	if len(steps) < 2 {
		return 0, nil, fmt.Errorf("%d iterations reported, want %d", len(steps), iters)
	}
	sum := 0.0
	for _, m := range steps[1:] {
		sum += m.Extra["rollout_tokens_per_s"]
	}
	return sum / float64(len(steps)-1), steps, nil
}

// benchSink keeps a run's step metrics; its checkpoints go to a scratch
// directory and are kept where they were written.
type benchSink struct {
	dir   string
	mu    sync.Mutex
	steps []learner.StepMetrics
}

func (s *benchSink) OnStep(m learner.StepMetrics, _ int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps = append(s.steps, m)
}

func (s *benchSink) OnPublish(int64, int, int, string)             {}
func (s *benchSink) OnEval(string, int64, int, learner.EvalResult) {}
func (s *benchSink) CheckpointDir(step int) string {
	return filepath.Join(s.dir, fmt.Sprintf("ckpt-%d", step))
}
func (s *benchSink) OnCheckpoint(_ int, dir string) (string, error) { return dir, nil }
func (s *benchSink) snapshot() []learner.StepMetrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]learner.StepMetrics(nil), s.steps...)
}

var _ actors.Sink = (*benchSink)(nil)
