package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// gpt2TokDir holds GPT-2's vocab.json and merges.txt.
const gpt2TokDir = "../../data/gpt2"

// testCheckpoint writes a small random GPT-2 (vocab 50257, 32 positions) with
// the GPT-2 tokenizer through init-model, and returns its directory.
func testCheckpoint(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(gpt2TokDir, "vocab.json")); err != nil {
		t.Skipf("GPT-2 tokenizer files: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	err := runInitModel([]string{"--config", "custom", "--n-embd", "16", "--n-layer", "2", "--n-head", "2",
		"--n-positions", "32", "--tokenizer", gpt2TokDir, "--out", dir, "--seed", "3"})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseLogProbs reads score's output lines.
func parseLogProbs(t *testing.T, out string) [][]float32 {
	t.Helper()
	var res [][]float32
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var v struct {
			LogProbs []float32 `json:"logprobs"`
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.LogProbs == nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		res = append(res, v.LogProbs)
	}
	return res
}

func TestScore(t *testing.T) {
	ckpt := testCheckpoint(t)
	m, err := policy.Load(ckpt, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	text := "<|endoftext|>The quick brown fox jumps over the lazy dog."
	seqs := [][]int32{{464, 2068, 7586, 21831}, tok.Encode(text), {50256}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}
	want, err := m.LogProbs(seqs)
	if err != nil {
		t.Fatal(err)
	}
	input := `{"tokens": [464, 2068, 7586, 21831]}

{"text": ` + string(must(json.Marshal(text))) + `, "id": "ignored"}
   {"tokens": [50256]}
{"tokens": [1,2,3,4,5,6,7,8,9,10,11,12]}` // no final newline
	data := writeFile(t, t.TempDir(), "data.jsonl", input)
	for _, args := range [][]string{
		{"--model", ckpt, data},
		{"--model", ckpt, "--batch", "1", data},
		{"--model", ckpt, "--batch", "3", "-"},
	} {
		var out bytes.Buffer
		if err := runScore(args, strings.NewReader(input), &out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		got := parseLogProbs(t, out.String())
		if len(got) != len(want) {
			t.Fatalf("%v: got %d lines, want %d (blank lines skipped)", args, len(got), len(want))
		}
		for i := range want {
			if len(got[i]) != len(seqs[i])-1 {
				t.Fatalf("%v line %d: got %d log-probs, want %d", args, i, len(got[i]), len(seqs[i])-1)
			}
			for j := range want[i] {
				if d := math.Abs(float64(got[i][j] - want[i][j])); d > 1e-4 || got[i][j] > 0 {
					t.Fatalf("%v line %d[%d]: got %g, want %g", args, i, j, got[i][j], want[i][j])
				}
			}
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestScoreErrors(t *testing.T) {
	ckpt := testCheckpoint(t)
	ok := `{"tokens": [1, 2, 3]}` + "\n"
	long := make([]string, 33)
	for i := range long {
		long[i] = "7"
	}
	for _, tc := range []struct {
		name, input, want string
	}{
		{"invalid json", ok + `{"tokens": [1, 2` + "\n", "data.jsonl:2: invalid JSON"},
		{"not an object", `[1, 2, 3]`, "data.jsonl:1: invalid JSON: want an object, got array"},
		{"no key", ok + ok + `{"toks": [1]}`, `data.jsonl:3: need "tokens" or "text"`},
		{"both keys", `{"tokens": [1], "text": "a"}`, `data.jsonl:1: give "tokens" or "text", not both`},
		{"out of range", ok + ok + ok + `{"tokens": [1, 99999]}`, "data.jsonl:4: token 99999 out of range [0,50257)"},
		{"negative", `{"tokens": [-1]}`, "data.jsonl:1: token -1 out of range [0,50257)"},
		{"not integers", `{"tokens": [1.5]}`, `data.jsonl:1: "tokens" must be an array of integers, got number 1.5`},
		{"text not string", `{"text": 5}`, `data.jsonl:1: "text" must be a string, got number`},
		{"too long", ok + `{"tokens": [` + strings.Join(long, ",") + `]}`, "data.jsonl:2: sequence too long: 33 tokens, more than the model's n_positions 32"},
		{"empty tokens", "\n\n" + `{"tokens": []}`, `data.jsonl:3: "tokens" is empty`},
		{"empty text", `{"text": ""}`, `data.jsonl:1: "text" is empty`},
		// A bad line after a full batch: the batch before it is already written.
		{"after a batch", strings.Repeat(ok, 16) + "{", "data.jsonl:17: invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "data.jsonl", tc.input)
			var out bytes.Buffer
			err := runScore([]string{"--model", ckpt, path}, nil, &out)
			if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), path[:len(path)-len("data.jsonl")]+tc.want) {
				t.Fatalf("got %v, want a non-usage error containing %q", err, tc.want)
			}
			// Every line before the bad one has been scored and written.
			in := strings.TrimSuffix(tc.input, "\n")
			before := strings.Count(in[:max(0, strings.LastIndex(in, "\n"))], `"tokens"`)
			if got := strings.Count(out.String(), "\n"); got != before {
				t.Fatalf("got %d output lines before the error, want %d", got, before)
			}
		})
	}
	for _, args := range [][]string{
		{"x.jsonl"},                              // no --model
		{"--model", ckpt},                        // no file
		{"--model", ckpt, "a.jsonl", "b.jsonl"},  // two files
		{"--model", ckpt, "--batch", "0", "x"},   // bad batch
		{"--model", ckpt, "--no-such-flag", "x"}, // unknown flag
	} {
		if err := runScore(args, nil, &bytes.Buffer{}); !errors.Is(err, errUsage) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
	// A checkpoint that does not load is a plain error naming the problem.
	err := runScore([]string{"--model", t.TempDir(), "-"}, strings.NewReader(""), &bytes.Buffer{})
	if !errors.Is(err, policy.ErrBadCheckpoint) {
		t.Errorf("empty model dir: got %v, want ErrBadCheckpoint", err)
	}
}

// TestExitStatus runs the built binary: data errors exit 1 with "FILE:LINE:",
// usage errors exit 2.
func TestExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ckpt := testCheckpoint(t)
	bin := filepath.Join(t.TempDir(), "troupe")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	data := writeFile(t, dir, "data.jsonl", `{"tokens": [1, 2]}`+"\n"+`{"tokens": [50257]}`+"\n")
	prompts := writeFile(t, dir, "prompts.jsonl", `{"prompt": "a"}`+"\n"+`{"text": "b"}`+"\n")
	for _, tc := range []struct {
		args   []string
		status int
		stderr string
	}{
		{[]string{"score", "--model", ckpt, data}, 1, "troupe score: " + data + ":2: token 50257 out of range [0,50257)"},
		{[]string{"score", "--model", ckpt}, 2, "troupe score: want one input FILE.jsonl"},
		{[]string{"generate", "--model", ckpt, "--prompts", prompts, "--temperature", "0", "--max-new-tokens", "2"}, 1, "troupe generate: " + prompts + `:2: need "prompt"`},
		{[]string{"generate", "--model", ckpt, "--prompt", "a", "--top-p", "2"}, 2, "--top-p must be in [0,1]"},
		{[]string{"init-model", "--config", "huge", "--out", dir}, 2, `--config "huge": allowed: tiny, small, gpt2, custom`},
	} {
		cmd := exec.Command(bin, tc.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.status || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: got %v, stderr %q; want exit %d with %q", tc.args, err, stderr.String(), tc.status, tc.stderr)
		}
		if tc.args[0] == "score" && tc.status == 1 && strings.Count(stdout.String(), "\n") != 1 {
			t.Errorf("%v: stdout %q, want the first line's result before the error", tc.args, stdout.String())
		}
	}
}
