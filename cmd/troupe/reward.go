package main

import (
	"bufio"
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
	c := commands["reward"]
	fs := newFlags(c)
	modelDir := fs.String("model", "", "reward checkpoint directory: config.json, model.safetensors with score.weight, tokenizer files (required)")
	batch := fs.Int("batch", 32, "lines scored together (at least 1)")
	template := fs.String("template", "{prompt}", "how the prompt is presented, as in the rm config's data.template")
	threads := fs.Int("threads", 0, "CPU threads, 0 = every core")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *modelDir == "":
		return fmt.Errorf("%w: --model DIR is required", errUsage)
	case *batch < 1:
		return fmt.Errorf("%w: --batch must be >= 1, got %d", errUsage, *batch)
	case !strings.Contains(*template, "{prompt}"):
		return fmt.Errorf("%w: --template must contain {prompt}, got %q", errUsage, *template)
	case fs.NArg() != 1:
		return fmt.Errorf("%w: want one input FILE.jsonl (- for stdin), got %d arguments", errUsage, fs.NArg())
	}
	m, err := reward.Load(*modelDir, kernels.NewCPU(*threads))
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(*modelDir)
	if err != nil {
		return fmt.Errorf("%s: a reward checkpoint needs its tokenizer files: %w", *modelDir, err)
	}
	if n := tok.VocabSize(); n > m.Trunk.Config.VocabSize {
		return fmt.Errorf("%s: the tokenizer has %d ids but the model's vocab_size is %d", *modelDir, n, m.Trunk.Config.VocabSize)
	}
	in, err := openJSONL(fs.Arg(0), stdin)
	if err != nil {
		return err
	}
	defer in.Close()

	out := bufio.NewWriter(stdout)
	var seqs [][]int32
	var lines []int
	flush := func() error {
		if len(seqs) == 0 {
			return nil
		}
		defer func() { seqs, lines = seqs[:0], lines[:0] }()
		rs, err := m.Scores(seqs)
		if err != nil {
			return fmt.Errorf("%s:%d-%d: %w", in.name, lines[0], lines[len(lines)-1], err)
		}
		for i, r := range rs {
			if math.IsNaN(float64(r)) || math.IsInf(float64(r), 0) {
				return fmt.Errorf("%s:%d: the reward is %v (a broken checkpoint?)", in.name, lines[i], r)
			}
			b, _ := json.Marshal(struct {
				Reward float32 `json:"reward"`
			}{r})
			out.Write(b)
			out.WriteByte('\n')
		}
		return out.Flush()
	}
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
	for {
		raw, err := in.next()
		if err == io.EOF {
			break
		}
		if err == nil {
			var seq []int32
			if seq, err = parse(raw); err == nil {
				seqs = append(seqs, seq)
				lines = append(lines, in.line)
				if len(seqs) < *batch {
					continue
				}
				err = flush()
			}
		}
		if err != nil {
			flush()
			return err
		}
	}
	return flush()
}
