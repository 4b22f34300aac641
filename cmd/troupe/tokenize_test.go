package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/policy/tokenizer"
)

func TestTokenizeCommand(t *testing.T) {
	text := "Hello world<|endoftext|> naïve 👍\n"
	var out bytes.Buffer
	if err := runTokenize([]string{"--tokenizer", gpt2TokDir}, strings.NewReader(text), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "]\n") {
		t.Fatalf("output %q is not one JSON array and a newline", out.String())
	}
	var ids []int32
	if err := json.Unmarshal(out.Bytes(), &ids); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(gpt2TokDir)
	if err != nil {
		t.Fatal(err)
	}
	if want := tok.Encode(text); !slices.Equal(ids, want) || !slices.Contains(ids, 50256) {
		t.Fatalf("tokenize printed %v, want %v", ids, want)
	}

	out.Reset()
	if err := runTokenize([]string{"--tokenizer", gpt2TokDir, "--ordinary"}, strings.NewReader(text), &out); err != nil {
		t.Fatal(err)
	}
	var ord []int32
	json.Unmarshal(out.Bytes(), &ord)
	if want := tok.EncodeOrdinary(text); !slices.Equal(ord, want) {
		t.Fatalf("tokenize --ordinary printed %v, want %v", ord, want)
	}

	// --decode gives the text back exactly, with no newline added.
	var back bytes.Buffer
	in, _ := json.Marshal(ids)
	if err := runTokenize([]string{"--tokenizer", gpt2TokDir, "--decode"}, bytes.NewReader(in), &back); err != nil {
		t.Fatal(err)
	}
	if back.String() != text {
		t.Fatalf("tokenize --decode printed %q, want %q", back.String(), text)
	}

	// Empty input: an empty array.
	out.Reset()
	if err := runTokenize([]string{"--tokenizer", gpt2TokDir}, strings.NewReader(""), &out); err != nil || out.String() != "[]\n" {
		t.Fatalf("empty input: %q, %v", out.String(), err)
	}
}

func TestTokenizeCommandErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, c := range []struct {
		args  []string
		stdin string
		usage bool
		want  string
	}{
		{[]string{"--bogus"}, "", true, "bogus"},
		{[]string{"--tokenizer", gpt2TokDir, "file.txt"}, "", true, "stdin"},
		{[]string{"--tokenizer", gpt2TokDir, "--decode", "--ordinary"}, "", true, "--ordinary"},
		{[]string{"--tokenizer", missing}, "x", false, missing},
		{[]string{"--tokenizer", t.TempDir()}, "x", false, "vocab.json"},
		{[]string{"--tokenizer", gpt2TokDir, "--decode"}, "hello", false, "JSON array"},
		{[]string{"--tokenizer", gpt2TokDir, "--decode"}, "[1, 99999]", false, "99999"},
	} {
		var out bytes.Buffer
		err := runTokenize(c.args, strings.NewReader(c.stdin), &out)
		if err == nil || errors.Is(err, errUsage) != c.usage || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("tokenize %q: error %v; want usage=%v mentioning %q", c.args, err, c.usage, c.want)
		}
	}
	if err := runTokenize([]string{"--help"}, strings.NewReader(""), &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
}

func TestTrainTokenizerCommand(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.txt", strings.Repeat("the cat sat on the mat. ", 200)+"\n")
	b := writeFile(t, dir, "b.txt", strings.Repeat("a dog ate the hat!\n", 200))
	out := filepath.Join(dir, "tok")
	var progress bytes.Buffer
	err := runTrainTokenizer([]string{"--input", a + "," + b, "--vocab-size", "270", "--out", out, "--special", "<|pad|>"}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "12/12 merges (100%)") {
		t.Fatalf("progress %q does not reach 12/12", progress.String())
	}
	for _, f := range []string{"vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatal(err)
		}
	}
	// The saved tokenizer works with tokenize.
	var ids bytes.Buffer
	if err := runTokenize([]string{"--tokenizer", out}, strings.NewReader("the cat<|pad|>"), &ids); err != nil {
		t.Fatal(err)
	}
	var got []int32
	json.Unmarshal(ids.Bytes(), &got)
	if len(got) == 0 || got[len(got)-1] != 269 {
		t.Fatalf("tokenize with the trained tokenizer: %v, want <|pad|> = 269 last", got)
	}

	// More ids than the text has pairs to merge: it stops early and says so.
	progress.Reset()
	if err := runTrainTokenizer([]string{"--input", a, "--vocab-size", "5000", "--out", filepath.Join(dir, "big")}, &progress); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "/4743 merges") {
		t.Fatalf("progress %q lacks a final line", progress.String())
	}

	for _, c := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"--vocab-size", "300", "--out", out}, true, "--input"},
		{[]string{"--input", a, "--vocab-size", "300"}, true, "--out"},
		{[]string{"--input", a, "--out", out}, true, "--vocab-size"},
		{[]string{"--input", a, "--vocab-size", "100", "--out", out}, true, "at least 257"},
		{[]string{"--input", a + ",", "--vocab-size", "300", "--out", out}, true, "empty file name"},
		{[]string{"--input", filepath.Join(dir, "missing.txt"), "--vocab-size", "300", "--out", out}, false, "missing.txt"},
		{[]string{"--input", a, "--vocab-size", "300", "--out", out, "--special", "<|x|>,<|x|>"}, false, "twice"},
	} {
		err := runTrainTokenizer(c.args, &bytes.Buffer{})
		if err == nil || errors.Is(err, errUsage) != c.usage || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("train-tokenizer %q: error %v; want usage=%v mentioning %q", c.args, err, c.usage, c.want)
		}
	}
}
