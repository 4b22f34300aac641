package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

func init() {
	register(&command{
		name:    "generate",
		usage:   "generate --model DIR (--prompt TEXT | --prompts FILE.jsonl) [--n N --temperature T --top-k K --top-p P --max-new-tokens M --seed S]",
		summary: `sample completions; prints {"prompt": ..., "completion": ...} per prompt and sample`,
		run:     func(args []string) error { return runGenerate(args, os.Stdin, os.Stdout) },
	})
}

// genPromptsPerCall is how many prompts (times --n samples) go to one Generate
// call: enough to batch the matmuls, few enough that results stream out.
const genPromptsPerCall = 16

// genLine is one line of output.
type genLine struct {
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`       // the new text, without the end-of-text token
	Sample     *int   `json:"sample,omitempty"` // 0..n-1, only when --n > 1
	Stopped    bool   `json:"stopped"`          // ended at end-of-text (false: --max-new-tokens or n_positions)
}

// runGenerate samples --n completions for each prompt. An empty prompt starts
// from the end-of-text token alone, as GPT-2's unconditional samples do. A
// completion ends at end-of-text, after --max-new-tokens, or when the sequence
// fills the model's n_positions. The same --seed gives the same output; the
// first prompt of a --prompts file gets the same samples as --prompt would.
func runGenerate(args []string, stdin io.Reader, stdout io.Writer) error {
	c := commands["generate"]
	fs := newFlags(c)
	modelDir := fs.String("model", "", "checkpoint directory with tokenizer files (required)")
	prompt := fs.String("prompt", "", "one prompt (may be empty: unconditional)")
	promptsFile := fs.String("prompts", "", `JSONL file of {"prompt": "..."} lines (- for stdin)`)
	n := fs.Int("n", 1, "samples per prompt, >= 1")
	temperature := fs.Float64("temperature", 1, "softmax temperature, >= 0; 0 = greedy")
	topK := fs.Int("top-k", 0, "sample from the K most likely tokens, >= 0; 0 = off")
	topP := fs.Float64("top-p", 1, "nucleus sampling mass in [0,1]; 0 or 1 = off")
	maxNew := fs.Int("max-new-tokens", 64, "new tokens per sample at most, >= 1")
	seed := fs.Uint64("seed", 0, "random seed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *modelDir == "":
		return fmt.Errorf("%w: --model DIR is required", errUsage)
	case set["prompt"] == set["prompts"]:
		return fmt.Errorf("%w: give exactly one of --prompt TEXT and --prompts FILE.jsonl", errUsage)
	case fs.NArg() != 0:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	case *n < 1:
		return fmt.Errorf("%w: --n must be >= 1, got %d", errUsage, *n)
	case !(*temperature >= 0) || math.IsInf(*temperature, 0):
		return fmt.Errorf("%w: --temperature must be finite and >= 0 (0 = greedy), got %g", errUsage, *temperature)
	case *topK < 0:
		return fmt.Errorf("%w: --top-k must be >= 0 (0 = off), got %d", errUsage, *topK)
	case !(*topP >= 0 && *topP <= 1):
		return fmt.Errorf("%w: --top-p must be in [0,1] (0 or 1 = off), got %g", errUsage, *topP)
	case *maxNew < 1:
		return fmt.Errorf("%w: --max-new-tokens must be >= 1, got %d", errUsage, *maxNew)
	}

	m, err := policy.Load(*modelDir, kernels.NewCPU(0))
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(*modelDir)
	if err != nil {
		return fmt.Errorf("generate needs the tokenizer in --model %s: %w", *modelDir, err)
	}
	if tok.VocabSize() > m.Config.VocabSize {
		return fmt.Errorf("%s: the tokenizer has %d ids but the model's vocab_size is %d", *modelDir, tok.VocabSize(), m.Config.VocabSize)
	}
	opt := policy.SampleOptions{
		MaxNewTokens: *maxNew,
		Temperature:  float32(*temperature),
		TopK:         *topK,
		TopP:         float32(*topP),
	}
	eot := tok.EOT()
	if eot >= 0 {
		opt.StopTokens = []int32{eot}
	}

	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false) // keep "<|endoftext|>" readable
	var texts []string
	var ids [][]int32
	calls := 0
	flush := func() error {
		if len(texts) == 0 {
			return nil
		}
		batch := make([][]int32, 0, len(ids)**n)
		for _, p := range ids {
			for range *n {
				batch = append(batch, p)
			}
		}
		// Generate gives prompt i the random stream (Seed, i); each call gets
		// its own seed so that calls do not repeat each other's streams.
		opt.Seed = callSeed(*seed, calls)
		calls++
		samples, err := m.Generate(batch, opt)
		if err != nil {
			return err
		}
		for i, s := range samples {
			toks := s.Tokens
			if s.Stopped && len(toks) > 0 {
				toks = toks[:len(toks)-1] // the stop token itself
			}
			line := genLine{Prompt: texts[i / *n], Completion: tok.Decode(toks), Stopped: s.Stopped}
			if *n > 1 {
				k := i % *n
				line.Sample = &k
			}
			if err := enc.Encode(line); err != nil {
				return err
			}
		}
		texts, ids = texts[:0], ids[:0]
		return out.Flush()
	}
	// encode turns a prompt into ids; where names it in errors ("--prompt" or FILE:LINE).
	encode := func(text string, where func(string, ...any) error) ([]int32, error) {
		p := tok.Encode(text)
		if len(p) == 0 {
			if eot < 0 {
				return nil, where("prompt is empty and the tokenizer has no end-of-text token to start from")
			}
			p = []int32{eot}
		}
		if len(p) >= m.Config.MaxSeqLen {
			return nil, where("prompt too long: %d tokens leave no room for a completion in the model's n_positions %d", len(p), m.Config.MaxSeqLen)
		}
		return p, nil
	}

	if set["prompt"] {
		p, err := encode(*prompt, func(format string, args ...any) error {
			return fmt.Errorf("--prompt: %s", fmt.Sprintf(format, args...))
		})
		if err != nil {
			return err
		}
		texts, ids = append(texts, *prompt), append(ids, p)
		return flush()
	}
	in, err := openJSONL(*promptsFile, stdin)
	if err != nil {
		return err
	}
	defer in.Close()
	for {
		raw, err := in.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		var v struct {
			Prompt *string `json:"prompt"`
		}
		if err := decodeLine(raw, &v); err != nil {
			return in.errorf("%v", err)
		}
		if v.Prompt == nil {
			return in.errorf(`need "prompt"`)
		}
		p, err := encode(*v.Prompt, in.errorf)
		if err != nil {
			return err
		}
		texts, ids = append(texts, *v.Prompt), append(ids, p)
		if len(texts) == genPromptsPerCall {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// callSeed is the seed of the k-th Generate call: the user's seed for the
// first, then a mix of it with k (the golden-ratio multiplier spreads
// consecutive k over the whole range).
func callSeed(seed uint64, k int) uint64 {
	return seed ^ uint64(k)*0x9e3779b97f4a7c15
}
