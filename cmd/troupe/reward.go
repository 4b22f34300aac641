package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

func init() {
	register(&command{
		name:    "reward",
		usage:   "reward --model DIR FILE.jsonl   (FILE - reads stdin)",
		summary: `print a reward model's score of each JSONL line {"prompt": "...", "response": "..."}`,
		run:     func(args []string) error { return runReward(args, os.Stdin, os.Stdout) },
	})
}

// runReward scores prompt/response lines with a reward checkpoint (an rm run's
// checkpoint: score.weight, config.json, tokenizer files) and writes one line
// {"reward": x} per input line, in order. The prompt goes through --template
// (use the one the model was trained with), then prompt and response are
// tokenised as in training (reward.Encode: no end-of-text; a sequence longer
// than n_positions keeps its end). Blank lines are skipped; lines are scored in
// batches, a batch's results written before the next is read. A bad line stops
// the command with "FILE:LINE: reason", after the results of the lines before it.
func runReward(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlags(commands["reward"])
	f := addJSONLFlags(fs, "reward checkpoint directory: config.json, model.safetensors with score.weight, tokenizer files (required)", 32)
	template := fs.String("template", "{prompt}", "how the prompt is presented, as in the rm config's data.template")
	threads := fs.Int("threads", 0, "CPU threads, 0 = every core")
	err := f.parse(fs, args, func() error {
		if !strings.Contains(*template, "{prompt}") {
			return fmt.Errorf("%w: --template must contain {prompt}, got %q", errUsage, *template)
		}
		return nil
	})
	if err != nil {
		return err
	}
	modelDir := *f.model
	m, err := reward.Load(modelDir, kernels.NewCPU(*threads))
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(modelDir)
	if err != nil {
		return fmt.Errorf("%s: a reward checkpoint needs its tokenizer files: %w", modelDir, err)
	}
	if n := tok.VocabSize(); n > m.Trunk.Config.VocabSize {
		return fmt.Errorf("%s: the tokenizer has %d ids but the model's vocab_size is %d", modelDir, n, m.Trunk.Config.VocabSize)
	}
	in, err := openJSONL(fs.Arg(0), stdin)
	if err != nil {
		return err
	}
	defer in.Close()

	parse := func(raw []byte) ([]int32, error) {
		var v struct {
			Prompt   *string `json:"prompt"`
			Response *string `json:"response"`
		}
		if err := decodeLine(raw, &v); err != nil {
			return nil, in.errorf("%v", err)
		}
		switch {
		case v.Prompt == nil:
			return nil, in.errorf(`need "prompt"`)
		case v.Response == nil:
			return nil, in.errorf(`need "response"`)
		}
		seq := reward.Encode(tok, strings.ReplaceAll(*template, "{prompt}", *v.Prompt), *v.Response, m.Trunk.Config.MaxSeqLen)
		if len(seq) == 0 {
			return nil, in.errorf("prompt and response are both empty: nothing to score")
		}
		return seq, nil
	}
	encode := func(r float32) ([]byte, error) {
		if math.IsNaN(float64(r)) || math.IsInf(float64(r), 0) {
			return nil, fmt.Errorf("the reward is %v (a broken checkpoint?)", r)
		}
		return json.Marshal(struct {
			Reward float32 `json:"reward"`
		}{r})
	}
	return scoreJSONL(in, stdout, *f.batch, parse, m.Scores, encode)
}
