package learner

import (
	"fmt"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// NewEvaluator returns an evaluator with its own model copy on its own
// one-thread CPU device (so it does not take the learner's cores). Every
// Evaluate scores the same fixed held-out batches and samples opts.Prompts
// (for sft through the data template, as training saw its prompts), stopping
// at end-of-text.
func (j *lmJob) NewEvaluator(opts EvalOptions) (Evaluator, error) {
	m, err := policy.New(j.model.Config, kernels.NewCPU(1))
	if err != nil {
		return nil, err
	}
	sample := policy.SampleOptions{MaxNewTokens: opts.MaxNewTokens, Temperature: float32(opts.Temperature),
		Seed: opts.Seed, StopTokens: []int32{j.tok.EOT()}}
	if err := sample.Validate(); err != nil {
		return nil, fmt.Errorf("%w: evaluator: %w", ErrConfig, err)
	}
	e := &lmEvaluator{stage: j.stage, model: m, tok: j.tok, batches: j.data.evalBatches(), sample: sample}
	for _, p := range opts.Prompts {
		text := p
		if j.stage == "sft" {
			text = strings.ReplaceAll(j.dc.Template, "{prompt}", p)
		}
		ids := j.tok.EncodeOrdinary(text)
		if len(ids) == 0 {
			ids = []int32{j.tok.EOT()} // an empty prompt starts a new document
		}
		if keep := m.Config.MaxSeqLen - 1; len(ids) > keep {
			ids = ids[len(ids)-keep:]
		}
		e.prompts = append(e.prompts, ids)
		e.texts = append(e.texts, p)
	}
	return e, nil
}

// lmEvaluator is a next-token job's held-out evaluator. Not safe for
// concurrent use; it shares only read-only data with its job.
type lmEvaluator struct {
	stage   string
	model   *policy.Model
	tok     *tokenizer.Tokenizer
	batches []lmBatch
	prompts [][]int32
	texts   []string
	sample  policy.SampleOptions
}

// Evaluate loads w and returns "val_loss": the mean loss per loss token over
// the fixed held-out batches (for sft the response tokens, also reported as
// "val_response_loss"), and one sample per prompt.
func (e *lmEvaluator) Evaluate(w []float32) (EvalResult, error) {
	m := e.model
	if len(w) != m.Layout.Total {
		return EvalResult{}, fmt.Errorf("%w: %d weights, this model has %d", ErrConfig, len(w), m.Layout.Total)
	}
	m.Dev.Upload(m.Params, w)
	var sum, n float64
	for i := range e.batches {
		b := &e.batches[i]
		if b.LossTokens == 0 {
			continue
		}
		l := m.Loss(b.Tokens, b.Targets, b.Mask, b.B, b.T)
		sum += float64(l) * float64(b.LossTokens)
		n += float64(b.LossTokens)
	}
	res := EvalResult{Metrics: map[string]float64{"val_loss": sum / n}}
	if e.stage == "sft" {
		res.Metrics["val_response_loss"] = sum / n
	}
	if len(e.prompts) > 0 && e.sample.MaxNewTokens > 0 {
		out, err := m.Generate(e.prompts, e.sample)
		if err != nil {
			return res, err
		}
		for i, s := range out {
			ids := s.Tokens
			if s.Stopped && len(ids) > 0 {
				ids = ids[:len(ids)-1]
			}
			res.Samples = append(res.Samples, Sample{Prompt: e.texts[i], Completion: e.tok.Decode(ids)})
		}
	}
	return res, nil
}
