package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// genOut runs generate and parses its output lines.
func genOut(t *testing.T, args []string, stdin string) []genLine {
	t.Helper()
	var out bytes.Buffer
	if err := runGenerate(args, strings.NewReader(stdin), &out); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	var lines []genLine
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var g genLine
		if err := json.Unmarshal([]byte(l), &g); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		lines = append(lines, g)
	}
	return lines
}

func TestGenerate(t *testing.T) {
	ckpt := testCheckpoint(t)
	m, err := policy.Load(ckpt, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(ckpt)
	if err != nil {
		t.Fatal(err)
	}

	// Greedy: the completion is Generate's argmax continuation, decoded.
	greedy := []string{"--model", ckpt, "--temperature", "0", "--max-new-tokens", "6"}
	got := genOut(t, append(greedy, "--prompt", "Hello, world"), "")
	samples, err := m.Generate([][]int32{tok.Encode("Hello, world")}, policy.SampleOptions{MaxNewTokens: 6, StopTokens: []int32{tok.EOT()}})
	if err != nil {
		t.Fatal(err)
	}
	s := samples[0]
	want := s.Tokens
	if s.Stopped {
		want = want[:len(want)-1]
	}
	if len(got) != 1 || got[0].Prompt != "Hello, world" || got[0].Completion != tok.Decode(want) || got[0].Stopped != s.Stopped || got[0].Sample != nil {
		t.Fatalf("got %+v, want completion %q stopped=%v", got, tok.Decode(want), s.Stopped)
	}

	// A prompts file (here on stdin, with a blank line and an empty prompt):
	// one line per prompt, in order, the first as --prompt gives it.
	file := `{"prompt": "Hello, world"}` + "\n\n" + `{"prompt": ""}` + "\n" + `{"prompt": "<|endoftext|>Once upon a time"}` + "\n"
	lines := genOut(t, append(greedy, "--prompts", "-"), file)
	if len(lines) != 3 || lines[0] != got[0] || lines[1].Prompt != "" || lines[2].Prompt != "<|endoftext|>Once upon a time" {
		t.Fatalf("got %+v", lines)
	}

	// --n samples per prompt, numbered, reproducible with the seed, and
	// (at temperature 1 over 50257 tokens) not all alike.
	sampled := []string{"--model", ckpt, "--n", "3", "--max-new-tokens", "8", "--top-k", "50", "--top-p", "0.9", "--seed", "7"}
	a := genOut(t, append(sampled, "--prompt", "The"), "")
	b := genOut(t, append(sampled, "--prompt", "The"), "")
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different output:\n%+v\n%+v", a, b)
	}
	if len(a) != 3 {
		t.Fatalf("got %d lines, want 3", len(a))
	}
	for i, l := range a {
		if l.Sample == nil || *l.Sample != i || l.Prompt != "The" {
			t.Fatalf("line %d: got %+v, want sample %d of prompt The", i, l, i)
		}
	}
	if a[0].Completion == a[1].Completion && a[1].Completion == a[2].Completion {
		t.Fatalf("three samples are identical: %q", a[0].Completion)
	}
	c := genOut(t, append(sampled[:len(sampled)-1], "8", "--prompt", "The"), "")
	if reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 7 and 8 gave the same samples")
	}

	// More prompts than one Generate call takes: output stays in input order.
	var many strings.Builder
	for i := range genPromptsPerCall + 3 {
		many.WriteString(`{"prompt": "` + strings.Repeat("a", i+1) + `"}` + "\n")
	}
	lines = genOut(t, []string{"--model", ckpt, "--max-new-tokens", "2", "--prompts", "-"}, many.String())
	if len(lines) != genPromptsPerCall+3 {
		t.Fatalf("got %d lines, want %d", len(lines), genPromptsPerCall+3)
	}
	for i, l := range lines {
		if l.Prompt != strings.Repeat("a", i+1) {
			t.Fatalf("line %d: prompt %q, want %q", i, l.Prompt, strings.Repeat("a", i+1))
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	ckpt := testCheckpoint(t)
	base := []string{"--model", ckpt}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--prompt", "a"}, "--model DIR is required"},
		{base, "give exactly one of --prompt TEXT and --prompts FILE.jsonl"},
		{append(base, "--prompt", "a", "--prompts", "p.jsonl"), "give exactly one of"},
		{append(base, "--prompt", "a", "extra"), `unexpected argument "extra"`},
		{append(base, "--prompt", "a", "--n", "0"), "--n must be >= 1, got 0"},
		{append(base, "--prompt", "a", "--temperature", "-0.5"), "--temperature must be finite and >= 0 (0 = greedy), got -0.5"},
		{append(base, "--prompt", "a", "--temperature", "NaN"), "--temperature must be finite"},
		{append(base, "--prompt", "a", "--top-k", "-1"), "--top-k must be >= 0"},
		{append(base, "--prompt", "a", "--top-p", "1.5"), "--top-p must be in [0,1] (0 or 1 = off), got 1.5"},
		{append(base, "--prompt", "a", "--max-new-tokens", "0"), "--max-new-tokens must be >= 1, got 0"},
		{append(base, "--prompt", "a", "--seed", "-1"), "invalid value"},
	} {
		err := runGenerate(tc.args, nil, &bytes.Buffer{})
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}

	long := strings.Repeat(" the", 40) // 40 tokens > n_positions 32
	dir := t.TempDir()
	for _, tc := range []struct {
		name, input, want string
	}{
		{"invalid json", `{"prompt": "a"}` + "\n" + `{"prompt": "a",`, "prompts.jsonl:2: invalid JSON"},
		{"no prompt", `{"text": "a"}`, `prompts.jsonl:1: need "prompt"`},
		{"prompt not string", "\n" + `{"prompt": ["a"]}`, `prompts.jsonl:2: "prompt" must be a string, got array`},
		{"too long", `{"prompt": "` + long + `"}`, "prompts.jsonl:1: prompt too long: 40 tokens leave no room for a completion in the model's n_positions 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "prompts.jsonl", tc.input)
			err := runGenerate(append(base, "--prompts", path, "--max-new-tokens", "2"), nil, &bytes.Buffer{})
			if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), path[:len(path)-len("prompts.jsonl")]+tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	err := runGenerate(append(base, "--prompt", long), nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--prompt: prompt too long: 40 tokens") {
		t.Fatalf("long --prompt: got %v", err)
	}
	err = runGenerate(append(base, "--prompts", dir+"/missing.jsonl"), nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "missing.jsonl") {
		t.Fatalf("missing prompts file: got %v", err)
	}
}
