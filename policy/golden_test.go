package policy

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// golden is testdata/golden/<name>/golden.json, written by scripts/gpt2_golden.py
// from a float64 PyTorch re-implementation of Hugging Face's GPT2LMHeadModel.
type golden struct {
	Sequences      [][]int32   `json:"sequences"`
	LogProbs       [][]float64 `json:"logprobs"` // log p(s[j+1] | s[:j+1])
	LogitsSequence []int32     `json:"logits_sequence"`
	Logits         [][]float64 `json:"logits"` // (T,V) of LogitsSequence
	Greedy         []struct {
		Prompt   []int32   `json:"prompt"`
		Tokens   []int32   `json:"tokens"`
		LogProbs []float64 `json:"logprobs"`
	} `json:"greedy"`
}

// TestGoldenPyTorch: log-probs, logits and greedy continuations of the
// checkpoints PyTorch wrote agree with troupe's to 1e-3 (typically ~1e-5).
func TestGoldenPyTorch(t *testing.T) {
	dirs, _ := filepath.Glob("../testdata/golden/*/golden.json")
	if len(dirs) == 0 {
		t.Fatal("no fixtures: run /usr/bin/python3 scripts/gpt2_golden.py")
	}
	const tol = 1e-3
	for _, f := range dirs {
		dir := filepath.Dir(f)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var g golden
			if err := json.Unmarshal(b, &g); err != nil {
				t.Fatal(err)
			}
			m, err := Load(dir, kernels.NewCPU(2))
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			check := func(what string, got float32, want float64) {
				t.Helper()
				d := math.Abs(float64(got) - want)
				worst = max(worst, d)
				if !(d <= tol) {
					t.Errorf("%s: got %.7g, want %.7g (|Δ| %.3g)", what, got, want, d)
				}
			}

			lps, err := m.LogProbs(g.Sequences)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range g.LogProbs {
				if len(lps[i]) != len(want) {
					t.Fatalf("sequence %d: %d log-probs, want %d", i, len(lps[i]), len(want))
				}
				for j := range want {
					check("logprob", lps[i][j], want[j])
				}
			}
			lpWorst := worst

			T, V := len(g.LogitsSequence), m.Config.VocabSize
			logits := download(m, m.Forward(g.LogitsSequence, 1, T))
			for i := 0; i < T; i++ {
				for v := 0; v < V; v++ {
					check("logit", logits[i*V+v], g.Logits[i][v])
				}
			}

			prompts := make([][]int32, len(g.Greedy))
			for i, gr := range g.Greedy {
				prompts[i] = gr.Prompt
			}
			samples, err := m.Generate(prompts, SampleOptions{MaxNewTokens: len(g.Greedy[0].Tokens)})
			if err != nil {
				t.Fatal(err)
			}
			for i, gr := range g.Greedy {
				s := samples[i]
				if len(s.Tokens) < len(gr.Tokens) {
					t.Fatalf("greedy %d: %d tokens, want %d", i, len(s.Tokens), len(gr.Tokens))
				}
				for j := range gr.Tokens {
					if s.Tokens[j] != gr.Tokens[j] {
						t.Fatalf("greedy %d: tokens %v, PyTorch %v", i, s.Tokens, gr.Tokens)
					}
					check("greedy logprob", s.LogProbs[j], gr.LogProbs[j])
				}
			}
			t.Logf("max |Δ| vs PyTorch: log-probs %.3g, all (logits, greedy) %.3g", lpWorst, worst)
		})
	}
}
