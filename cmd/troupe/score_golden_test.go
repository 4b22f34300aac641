package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScoreMatchesPyTorch runs `troupe score` on the PyTorch-written checkpoints of
// odd shapes under testdata/golden (scripts/gpt2_golden.py) and checks every
// log-prob against the values PyTorch computed, to 1e-3.
func TestScoreMatchesPyTorch(t *testing.T) {
	dirs, err := filepath.Glob("../../testdata/golden/*/golden.json")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden fixtures under testdata/golden: %v", err)
	}
	for _, g := range dirs {
		ckpt := filepath.Dir(g)
		t.Run(filepath.Base(ckpt), func(t *testing.T) {
			raw, err := os.ReadFile(g)
			if err != nil {
				t.Fatal(err)
			}
			var golden struct {
				Sequences [][]int32   `json:"sequences"`
				LogProbs  [][]float64 `json:"logprobs"`
			}
			if err := json.Unmarshal(raw, &golden); err != nil {
				t.Fatal(err)
			}
			var in strings.Builder
			for _, s := range golden.Sequences {
				line, _ := json.Marshal(map[string]any{"tokens": s})
				in.Write(line)
				in.WriteByte('\n')
			}
			var out bytes.Buffer
			if err := runScore([]string{"--model", ckpt, "-"}, strings.NewReader(in.String()), &out); err != nil {
				t.Fatal(err)
			}
			got := parseLogProbs(t, out.String())
			if len(got) != len(golden.LogProbs) {
				t.Fatalf("got %d lines, want %d", len(got), len(golden.LogProbs))
			}
			var maxErr float64
			for i := range golden.LogProbs {
				if len(got[i]) != len(golden.LogProbs[i]) {
					t.Fatalf("line %d: got %d log-probs, want %d", i, len(got[i]), len(golden.LogProbs[i]))
				}
				for j, want := range golden.LogProbs[i] {
					d := math.Abs(float64(got[i][j]) - want)
					maxErr = max(maxErr, d)
					if d > 1e-3 {
						t.Fatalf("line %d token %d: got %.6f, PyTorch %.6f", i, j, got[i][j], want)
					}
				}
			}
			t.Logf("max |troupe - pytorch| = %.2e over %d sequences", maxErr, len(got))
		})
	}
}
