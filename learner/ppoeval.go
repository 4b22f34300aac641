package learner

import (
	"strings"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

// NewEvaluator returns the RL evaluator: its own policy copy, the reference
// (the starting weights) and the reward on one-thread CPU devices, and the
// first ppo.eval_prompts held-out prompts (training prompts when there is no
// held-out set).
func (j *ppoJob) NewEvaluator(opts EvalOptions) (Evaluator, error) {
	pol, err := j.replica(j.init, 1)
	if err != nil {
		return nil, err
	}
	ref, err := j.replica(j.init, 1)
	if err != nil {
		return nil, err
	}
	sc, err := BuildScorer(j.cfg.Reward, kernels.NewCPU(1))
	if err != nil {
		return nil, err
	}
	src := j.val
	if len(src) == 0 {
		src = j.train
	}
	n := min(len(src), j.pc.EvalPrompts)
	var show []RLPrompt
	for _, p := range opts.Prompts {
		text := strings.ReplaceAll(j.cfg.Data.Template, "{prompt}", p)
		if toks := j.tok.EncodeOrdinary(text); len(toks) > 0 {
			show = append(show, RLPrompt{Text: text, Tokens: toks})
		}
	}
	return &RLEvaluator{Policy: pol, Ref: ref, Scorer: sc, Tok: j.tok, Prompts: src[:n], Show: show,
		MaxNewTokens: j.pc.MaxNewTokens, Temperature: float32(j.pc.Temperature), Seed: opts.Seed}, nil
}

// RLEvaluator measures a policy on held-out prompts: greedy completions for
// the reward (val_score, and each part, e.g. val_score_rm) and the task's true
// measure (val_exact_match when the prompts have answers); sampled completions
// (the rollouts' temperature, a fixed seed) for the KL to the reference
// (val_kl: mean over prompts of Σ_t log π − log π_ref, the k1 estimate),
// the policy's entropy per token (val_entropy) and the diversity of the samples
// (val_distinct1, val_distinct2).
type RLEvaluator struct {
	Policy, Ref  *policy.Model
	Scorer       reward.Scorer
	Tok          *tokenizer.Tokenizer
	Prompts      []RLPrompt
	Show         []RLPrompt // completions shown in samples.jsonl (greedy)
	MaxNewTokens int
	Temperature  float32
	Seed         uint64
}

// Evaluate loads w into the evaluator's policy and measures it.
func (e *RLEvaluator) Evaluate(w []float32) (EvalResult, error) {
	if len(w) != e.Policy.Params.N {
		return EvalResult{}, fieldErr("weights", "%d values for a policy of %d", len(w), e.Policy.Params.N)
	}
	e.Policy.Dev.Upload(e.Policy.Params, w)
	eos := e.Tok.EOT()
	in := make([][]int32, len(e.Prompts))
	for i, p := range e.Prompts {
		in[i] = p.Tokens
	}
	out := map[string]float64{}
	// Greedy: reward and exact match.
	greedy, err := e.Policy.Generate(in, policy.SampleOptions{MaxNewTokens: e.MaxNewTokens, StopTokens: []int32{eos}})
	if err != nil {
		return EvalResult{}, err
	}
	rs := make([]Rollout, len(greedy))
	for i, s := range greedy {
		p := e.Prompts[i]
		rs[i] = Rollout{PromptText: p.Text, Answer: p.Answer, Prompt: p.Tokens, Response: s.Tokens, Stopped: s.Stopped}
	}
	sc := Scoring{Scorer: e.Scorer, Decode: e.Tok.Decode, EOS: eos}
	if err := sc.Fill(rs); err != nil {
		return EvalResult{}, err
	}
	var score, exact, answered float64
	for i := range rs {
		score += rs[i].Score
		if rs[i].Answer != "" {
			answered++
			if strings.TrimSpace(e.Tok.Decode(stripEOS(rs[i].Response, eos))) == strings.TrimSpace(rs[i].Answer) {
				exact++
			}
		}
	}
	n := float64(max(1, len(rs)))
	out["val_score"] = score / n
	for k, v := range partMeans(rs) {
		out["val_score_"+k] = v
	}
	if answered > 0 {
		out["val_exact_match"] = exact / answered
	}
	// Sampled: KL to the reference, entropy, diversity.
	sampled, err := e.Policy.Generate(in, policy.SampleOptions{MaxNewTokens: e.MaxNewTokens, Temperature: e.Temperature, Seed: e.Seed, StopTokens: []int32{eos}})
	if err != nil {
		return EvalResult{}, err
	}
	seqs := make([][]int32, len(sampled))
	resp := make([][]int32, len(sampled))
	var respTokens int
	for i, s := range sampled {
		seqs[i] = append(append([]int32{}, in[i]...), s.Tokens...)
		resp[i] = stripEOS(s.Tokens, eos)
		respTokens += len(s.Tokens)
	}
	ref, err := e.Ref.LogProbsT(seqs, e.Temperature)
	if err != nil {
		return EvalResult{}, err
	}
	var kl float64
	for i, s := range sampled {
		p := len(in[i])
		for t, lp := range s.LogProbs {
			kl += float64(lp) - float64(ref[i][p-1+t])
		}
	}
	out["val_kl"] = kl / n
	out["val_entropy"] = e.entropy(seqs, in)
	out["val_distinct1"] = distinctN(resp, 1)
	out["val_distinct2"] = distinctN(resp, 2)
	out["val_response_len"] = float64(respTokens) / n
	res := EvalResult{Metrics: out}
	if len(e.Show) > 0 {
		sin := make([][]int32, len(e.Show))
		for i, p := range e.Show {
			sin[i] = p.Tokens
		}
		ss, err := e.Policy.Generate(sin, policy.SampleOptions{MaxNewTokens: e.MaxNewTokens, StopTokens: []int32{eos}})
		if err != nil {
			return EvalResult{}, err
		}
		for i, s := range ss {
			res.Samples = append(res.Samples, Sample{Prompt: e.Show[i].Text, Completion: e.Tok.Decode(stripEOS(s.Tokens, eos))})
		}
	}
	return res, nil
}

// entropy is the policy's mean per-token entropy over the sampled responses,
// at the rollouts' temperature, in chunks of 64 sequences.
func (e *RLEvaluator) entropy(seqs, prompts [][]int32) float64 {
	var sum, cnt float64
	for lo := 0; lo < len(seqs); lo += 64 {
		hi := min(len(seqs), lo+64)
		batch := make([]*sample, 0, hi-lo)
		for k := lo; k < hi; k++ {
			batch = append(batch, &sample{seq: seqs[k], p: len(prompts[k])})
		}
		tokens, targets, B, T := pack(batch)
		_, ent := e.Policy.ForwardLogProbs(tokens, targets, B, T, e.Temperature, true)
		for b, s := range batch {
			for t := s.p - 1; t < len(s.seq)-1; t++ {
				sum += float64(ent[b*T+t])
				cnt++
			}
		}
	}
	e.Policy.ReleaseWorkspace()
	if cnt == 0 {
		return 0
	}
	return sum / cnt
}

// stripEOS drops a trailing end-of-text.
func stripEOS(toks []int32, eos int32) []int32 {
	if len(toks) > 0 && toks[len(toks)-1] == eos {
		return toks[:len(toks)-1]
	}
	return toks
}
