package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

// rewardCheckpoint writes a small random reward model with a byte-level
// tokenizer and returns its directory, the model and the tokenizer.
func rewardCheckpoint(t *testing.T) (string, *reward.Model, *tokenizer.Tokenizer) {
	t.Helper()
	tok, err := tokenizer.Train(strings.NewReader("0123456789+="), 257, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := policy.Config{VocabSize: 257, MaxSeqLen: 16, NumLayers: 1, NumHeads: 2, Channels: 16, LayerNormEps: 1e-5}
	m, err := reward.Fresh(cfg, kernels.NewCPU(1), tok.EOT(), 5)
	if err != nil {
		t.Fatal(err)
	}
	m.InitHead(6) // a head of unit-scale rewards would do as well; any non-zero one
	dir := filepath.Join(t.TempDir(), "rm")
	if err := m.Save(dir, tok); err != nil {
		t.Fatal(err)
	}
	return dir, m, tok
}

func TestRewardScoresLines(t *testing.T) {
	dir, m, tok := rewardCheckpoint(t)
	lines := []struct{ prompt, response string }{
		{"12+30=", "42"}, {"12+30=", "43"}, {"1+1=", "2"}, {"", "7"}, {"999+999=", "1998 and a long tail"},
	}
	var in strings.Builder
	var seqs [][]int32
	for i, l := range lines {
		b, _ := json.Marshal(map[string]string{"prompt": l.prompt, "response": l.response})
		in.Write(b)
		in.WriteString("\n")
		if i == 2 {
			in.WriteString("\n") // blank lines are skipped
		}
		seqs = append(seqs, reward.Encode(tok, l.prompt, l.response, 16))
	}
	want, err := m.Scores(seqs)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runReward([]string{"--model", dir, "--batch", "2", "-"}, strings.NewReader(in.String()), &out); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != len(lines) {
		t.Fatalf("%d output lines for %d inputs: %q", len(got), len(lines), out.String())
	}
	for i, g := range got {
		var v struct {
			Reward *float64 `json:"reward"`
		}
		if err := json.Unmarshal([]byte(g), &v); err != nil || v.Reward == nil {
			t.Fatalf("line %q: %v", g, err)
		}
		if math.Abs(*v.Reward-float64(want[i])) > 1e-5 {
			t.Fatalf("line %d: reward %v, want %v", i, *v.Reward, want[i])
		}
	}
}

func TestRewardErrors(t *testing.T) {
	dir, m, tok := rewardCheckpoint(t)
	lm := filepath.Join(t.TempDir(), "lm")
	if err := policy.SaveWithTokenizer(m.Trunk, tok, lm); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, t.TempDir(), "in.jsonl", `{"prompt": "1+1=", "response": "2"}`+"\n"+`{"prompt": "1+1="}`+"\n")
	cases := []struct {
		args  []string
		stdin string
		usage bool
		want  string
	}{
		{[]string{"-"}, "", true, "--model DIR is required"},
		{[]string{"--model", dir}, "", true, "want one input"},
		{[]string{"--model", dir, "--batch", "0", "-"}, "", true, "--batch"},
		{[]string{"--model", dir, "--template", "Q:", "-"}, "", true, "{prompt}"},
		{[]string{"--model", lm, "-"}, "", false, "no score.weight"},
		{[]string{"--model", dir, file}, "", false, file + `:2: need "response"`},
		{[]string{"--model", dir, "-"}, `{"prompt": 3, "response": "x"}`, false, `stdin:1: "prompt" must be a string`},
		{[]string{"--model", dir, "-"}, "{\"prompt\": \"\", \"response\": \"2\"}\nnot json\n", false, "stdin:2: invalid JSON"},
		{[]string{"--model", dir, "-"}, `{"prompt": "", "response": ""}`, false, "stdin:1: prompt and response are both empty"},
	}
	for _, c := range cases {
		var out bytes.Buffer
		err := runReward(c.args, strings.NewReader(c.stdin), &out)
		if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, errUsage) != c.usage {
			t.Errorf("reward %v: got %v (usage %v), want %q (usage %v)", c.args, err, errors.Is(err, errUsage), c.want, c.usage)
		}
	}
	// The lines before a bad one are answered.
	var out bytes.Buffer
	runReward([]string{"--model", dir, file}, nil, &out)
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Fatalf("%d lines written before the bad line 2, want 1: %q", n, out.String())
	}
}
