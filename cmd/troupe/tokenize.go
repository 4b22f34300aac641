package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/troupe-rl/troupe/policy/tokenizer"
)

func init() {
	register(&command{
		name:    "tokenize",
		usage:   "tokenize [--tokenizer DIR] [--ordinary] [--decode]  < TEXT",
		summary: "print the token ids of the text on stdin as one JSON array (--decode: ids back to text)",
		run:     func(args []string) error { return runTokenize(args, os.Stdin, os.Stdout) },
	})
	register(&command{
		name:    "train-tokenizer",
		usage:   "train-tokenizer --input FILE[,FILE...] --vocab-size N --out DIR [--special TOKEN,...]",
		summary: "train a GPT-2-style byte-level BPE tokenizer on text files and save it in GPT-2 and Hugging Face formats",
		run:     func(args []string) error { return runTrainTokenizer(args, os.Stderr) },
	})
}

// defaultTokenizer is GPT-2's vocab.json + merges.txt, shipped in the repository.
const defaultTokenizer = "data/gpt2"

// runTokenize reads all of stdin. Without --decode it writes the ids of the text
// as one JSON array and a newline; special tokens in the text such as
// "<|endoftext|>" become their ids unless --ordinary. With --decode, stdin is a
// JSON array of ids and the text is written exactly, with no newline added, so
// `tokenize | tokenize --decode` gives the input back.
func runTokenize(args []string, stdin io.Reader, stdout io.Writer) error {
	c := commands["tokenize"]
	fs := newFlags(c)
	dir := fs.String("tokenizer", defaultTokenizer, "tokenizer directory: tokenizer.json, or vocab.json + merges.txt")
	decode := fs.Bool("decode", false, "read a JSON array of ids and print their text")
	ordinary := fs.Bool("ordinary", false, "encode special tokens in the text as plain text (tiktoken's encode_ordinary)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() != 0:
		return fmt.Errorf("%w: unexpected argument %q: the text comes on stdin", errUsage, fs.Arg(0))
	case *decode && *ordinary:
		return fmt.Errorf("%w: --ordinary applies to encoding, not --decode", errUsage)
	case *dir == "":
		return fmt.Errorf("%w: --tokenizer DIR must not be empty", errUsage)
	}
	tok, err := tokenizer.Load(*dir)
	if err != nil {
		return err
	}
	in, err := io.ReadAll(stdin)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	if *decode {
		var ids []int32
		if err := json.Unmarshal(bytes.TrimSpace(in), &ids); err != nil {
			return fmt.Errorf("stdin: want a JSON array of token ids: %v", err)
		}
		for i, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				return fmt.Errorf("stdin: id %d at index %d is outside the vocabulary [0, %d)", id, i, tok.VocabSize())
			}
		}
		_, err := io.WriteString(stdout, tok.Decode(ids))
		return err
	}
	var ids []int32
	if *ordinary {
		ids = tok.EncodeOrdinary(string(in))
	} else {
		ids = tok.Encode(string(in))
	}
	var b bytes.Buffer
	b.Grow(6*len(ids) + 3)
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, id)
	}
	b.WriteString("]\n")
	_, err = stdout.Write(b.Bytes())
	return err
}

// runTrainTokenizer trains on the --input files read one after another, as if
// concatenated, and saves the tokenizer to --out. The start and the result are
// logged; merge progress lines go to progress (stderr; tests pass a buffer).
func runTrainTokenizer(args []string, progress io.Writer) error {
	c := commands["train-tokenizer"]
	fs := newFlags(c)
	inputs := fs.String("input", "", "comma-separated text files to train on (required)")
	vocabSize := fs.Int("vocab-size", 0, "ids in the vocabulary: 256 bytes + merges + special tokens, e.g. 4096 (required)")
	out := fs.String("out", "", "directory to write vocab.json, merges.txt, tokenizer.json, ... (required)")
	special := fs.String("special", "", "comma-separated extra special tokens; <|endoftext|> is always one")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var specials []string
	if *special != "" {
		specials = strings.Split(*special, ",")
	}
	switch {
	case fs.NArg() != 0:
		return fmt.Errorf("%w: unexpected argument %q (inputs go in --input, comma-separated)", errUsage, fs.Arg(0))
	case *inputs == "":
		return fmt.Errorf("%w: --input FILE[,FILE...] is required", errUsage)
	case *out == "":
		return fmt.Errorf("%w: --out DIR is required", errUsage)
	case *vocabSize < 256+1+len(specials):
		return fmt.Errorf("%w: --vocab-size must be at least %d (256 bytes + <|endoftext|> + %d more specials), got %d", errUsage, 257+len(specials), len(specials), *vocabSize)
	}
	var readers []io.Reader
	var total int64
	for _, name := range strings.Split(*inputs, ",") {
		if name == "" {
			return fmt.Errorf("%w: --input has an empty file name: %q", errUsage, *inputs)
		}
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil {
			if st.IsDir() {
				return fmt.Errorf("--input %s is a directory, want a text file", name)
			}
			total += st.Size()
		}
		readers = append(readers, f)
	}

	// On a terminal one line is redrawn in place; elsewhere (a log file, CI) a
	// line every few seconds, and always the last.
	redraw, every, end := false, 5*time.Second, "\n"
	if f, ok := progress.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		redraw, every, end = true, 200*time.Millisecond, ""
	}
	start := time.Now()
	var lastPrint time.Time
	lastDone, lastWant, printed := 0, 0, false
	show := func(done, want int) {
		if redraw {
			fmt.Fprint(progress, "\r")
		}
		fmt.Fprintf(progress, "train-tokenizer: %d/%d merges (%.0f%%) %.1fs%s", done, want, 100*float64(done)/float64(max(want, 1)), time.Since(start).Seconds(), end)
	}
	report := func(done, want int) {
		lastDone, lastWant = done, want
		if now := time.Now(); done == want || now.Sub(lastPrint) >= every {
			lastPrint, printed = now, true
			show(done, want)
		} else {
			printed = false
		}
	}
	log.Info().Str("input", *inputs).Int64("bytes", total).Int("vocab_size", *vocabSize).Msg("training tokenizer")
	tok, err := tokenizer.Train(io.MultiReader(readers...), *vocabSize, specials, report)
	if err == nil && !printed { // stopped early: the text ran out of pairs
		show(lastDone, lastWant)
	}
	if redraw {
		fmt.Fprintln(progress)
	}
	if err != nil {
		return err
	}
	if err := tok.Save(*out); err != nil {
		return err
	}
	ev := log.Info().Str("out", *out).Int("vocab_size", tok.VocabSize()).Dur("took", time.Since(start))
	if tok.VocabSize() < *vocabSize {
		ev = ev.Str("note", "the text ran out of pairs to merge before --vocab-size")
	}
	ev.Msg("saved tokenizer")
	return nil
}
