package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

func init() {
	register(&command{
		name:    "score",
		usage:   "score --model DIR FILE.jsonl   (FILE - reads stdin)",
		summary: `print each token's log-prob given its prefix, for JSONL lines {"tokens": [...]} or {"text": "..."}`,
		run:     func(args []string) error { return runScore(args, os.Stdin, os.Stdout) },
	})
}

// runScore reads JSONL lines, each {"tokens": [ids]} or {"text": "..."} (text is
// encoded with the checkpoint's tokenizer, special tokens such as
// <|endoftext|> included), and writes one line {"logprobs": [...]} per input
// line: log p(token j+1 | tokens 0..j) for every token after the first, so a
// sequence of n tokens gets n-1 values. Prefix the text with <|endoftext|> to
// score its first token too, as GPT-2 was trained.
//
// Blank lines are skipped (they produce no output line), so that a trailing
// newline or a blank separator is harmless; output line k answers the k-th
// non-blank input line. Lines are scored in batches, and a batch's results are
// written before the next is read. A bad line stops the command with
// "FILE:LINE: reason", after the results of every line before it are written.
func runScore(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlags(commands["score"])
	f := addJSONLFlags(fs, "checkpoint directory: config.json, model.safetensors, tokenizer files (required)", 16)
	if err := f.parse(fs, args, nil); err != nil {
		return err
	}
	modelDir := *f.model
	m, err := policy.Load(modelDir, kernels.NewCPU(0))
	if err != nil {
		return err
	}
	in, err := openJSONL(fs.Arg(0), stdin)
	if err != nil {
		return err
	}
	defer in.Close()

	var tok *tokenizer.Tokenizer // loaded at the first text line: token-only input needs no tokenizer files
	// parse checks one line and returns its tokens; errors name FILE:LINE.
	parse := func(raw []byte) ([]int32, error) {
		var v struct {
			Tokens *[]int64 `json:"tokens"`
			Text   *string  `json:"text"`
		}
		if err := decodeLine(raw, &v); err != nil {
			return nil, in.errorf("%v", err)
		}
		var seq []int32
		switch {
		case v.Tokens != nil && v.Text != nil:
			return nil, in.errorf(`give "tokens" or "text", not both`)
		case v.Tokens != nil:
			if len(*v.Tokens) == 0 {
				return nil, in.errorf(`"tokens" is empty`)
			}
			seq = make([]int32, len(*v.Tokens))
			for i, t := range *v.Tokens {
				if t < 0 || t >= int64(m.Config.VocabSize) {
					return nil, in.errorf("token %d out of range [0,%d)", t, m.Config.VocabSize)
				}
				seq[i] = int32(t)
			}
		case v.Text != nil:
			if tok == nil {
				var err error
				if tok, err = tokenizer.Load(modelDir); err != nil {
					return nil, in.errorf("text needs the checkpoint's tokenizer: %v", err)
				}
			}
			seq = tok.Encode(*v.Text)
			if len(seq) == 0 {
				return nil, in.errorf(`"text" is empty: no tokens to score`)
			}
			for _, t := range seq {
				if int(t) >= m.Config.VocabSize {
					return nil, in.errorf("text encodes to token %d, out of the model's range [0,%d)", t, m.Config.VocabSize)
				}
			}
		default:
			return nil, in.errorf(`need "tokens" or "text"`)
		}
		if len(seq) > m.Config.MaxSeqLen {
			return nil, in.errorf("sequence too long: %d tokens, more than the model's n_positions %d", len(seq), m.Config.MaxSeqLen)
		}
		return seq, nil
	}
	encode := func(lp []float32) ([]byte, error) {
		if lp == nil {
			lp = []float32{} // a one-token line: [] rather than null
		}
		// A non-finite log-prob is an error: JSON cannot hold it.
		return json.Marshal(struct {
			LogProbs []float32 `json:"logprobs"`
		}{lp})
	}
	return scoreJSONL(in, stdout, *f.batch, parse, m.LogProbs, encode)
}

// jsonlFlags are the flags score and reward share: the checkpoint and the
// batch size; both read one input file.
type jsonlFlags struct {
	model *string
	batch *int
}

func addJSONLFlags(fs *flag.FlagSet, modelUsage string, batch int) jsonlFlags {
	return jsonlFlags{
		model: fs.String("model", "", modelUsage),
		batch: fs.Int("batch", batch, "lines scored together (at least 1)"),
	}
}

// parse parses args and checks them; check (nil for none) checks the
// command's own flags, after --model and --batch and before the input file.
func (f jsonlFlags) parse(fs *flag.FlagSet, args []string, check func() error) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *f.model == "":
		return fmt.Errorf("%w: --model DIR is required", errUsage)
	case *f.batch < 1:
		return fmt.Errorf("%w: --batch must be >= 1, got %d", errUsage, *f.batch)
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want one input FILE.jsonl (- for stdin), got %d arguments", errUsage, fs.NArg())
	}
	return nil
}

// scoreJSONL is the loop score and reward share: it reads in's lines, parse
// turns each into a sequence, batch lines at a time are scored together, and
// encode writes each line's result as one JSON line (its error is put on
// FILE:LINE). A batch's results are written before the next is read; a bad
// line stops the loop after the results of the lines before it.
func scoreJSONL[R any](in *jsonl, stdout io.Writer, batch int, parse func(raw []byte) ([]int32, error),
	score func(seqs [][]int32) ([]R, error), encode func(r R) ([]byte, error)) error {
	out := bufio.NewWriter(stdout)
	var seqs [][]int32
	var lines []int
	flush := func() error {
		if len(seqs) == 0 {
			return nil
		}
		defer func() { seqs, lines = seqs[:0], lines[:0] }()
		rs, err := score(seqs)
		if err != nil {
			return fmt.Errorf("%s:%d-%d: %w", in.name, lines[0], lines[len(lines)-1], err)
		}
		for i, r := range rs {
			b, err := encode(r)
			if err != nil {
				return fmt.Errorf("%s:%d: %w", in.name, lines[i], err)
			}
			out.Write(b)
			out.WriteByte('\n')
		}
		return out.Flush()
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
				if len(seqs) < batch {
					continue
				}
				err = flush()
			}
		}
		if err != nil {
			flush() // the lines before the bad one; its own error is the one to report
			return err
		}
	}
	return flush()
}

// jsonl reads a JSON-lines input one line at a time, counting lines from 1
// and skipping blank ones, so errors can say "FILE:LINE: reason".
type jsonl struct {
	name string // the path, or "stdin"
	r    *bufio.Reader
	c    io.Closer // nil for stdin
	line int       // number of the line last returned
}

// openJSONL opens path, or stdin when path is "-".
func openJSONL(path string, stdin io.Reader) (*jsonl, error) {
	if path == "-" {
		return &jsonl{name: "stdin", r: bufio.NewReaderSize(stdin, 1<<16)}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &jsonl{name: path, r: bufio.NewReaderSize(f, 1<<16), c: f}, nil
}

func (j *jsonl) Close() error {
	if j.c == nil {
		return nil
	}
	return j.c.Close()
}

// next returns the next non-blank line without its line ending, or io.EOF.
// Lines may be of any length.
func (j *jsonl) next() ([]byte, error) {
	for {
		b, err := j.r.ReadBytes('\n')
		if len(b) == 0 && err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("%s:%d: %w", j.name, j.line+1, err)
		}
		j.line++
		if s := strings.TrimSpace(string(b)); s != "" {
			return []byte(s), nil
		}
		if err == io.EOF {
			return nil, io.EOF
		}
	}
}

// errorf is an error about the line last returned.
func (j *jsonl) errorf(format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", j.name, j.line, fmt.Sprintf(format, args...))
}

// decodeLine unmarshals one JSON object into v (whose fields are pointers, so
// that an absent key stays nil), phrasing a wrong type by the key it is in.
func decodeLine(raw []byte, v any) error {
	err := json.Unmarshal(raw, v)
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te) && te.Field == "":
		return fmt.Errorf("invalid JSON: want an object, got %s", te.Value)
	case errors.As(err, &te):
		key, _, _ := strings.Cut(te.Field, ".")
		want, ok := map[string]string{"int64": "an array of integers", "[]int64": "an array of integers", "string": "a string"}[te.Type.String()]
		if !ok {
			want = te.Type.String()
		}
		return fmt.Errorf("%q must be %s, got %s", key, want, te.Value)
	}
	return fmt.Errorf("invalid JSON: %v", err)
}
