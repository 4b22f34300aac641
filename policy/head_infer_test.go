package policy

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// TestLogProbsBlockedHead: with a vocabulary above the CPU's composed-head
// threshold, LogProbsT through kernels.InferHeadLogProb (blocked product and
// log-softmax) equals the (N,V) logits then InferLogProb, at several
// temperatures and over ragged lengths.
func TestLogProbsBlockedHead(t *testing.T) {
	cfg := Config{VocabSize: 5003, MaxSeqLen: 32, NumLayers: 2, NumHeads: 2, Channels: 64, LayerNormEps: 1e-5}
	m, err := New(cfg, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	rng := rand.New(rand.NewPCG(5, 5))
	seqs := [][]int32{randomTokens(rng, 32, cfg.VocabSize), randomTokens(rng, 7, cfg.VocabSize), randomTokens(rng, 20, cfg.VocabSize)}
	defer func() { fuseHead = true }()
	for _, temp := range []float32{0, 1, 0.6, 1.5} {
		fuseHead = false
		want, err := m.LogProbsT(seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		fuseHead = true
		got, err := m.LogProbsT(seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if len(got[i]) != len(want[i]) {
				t.Fatalf("T=%g seq %d: %d log-probs, want %d", temp, i, len(got[i]), len(want[i]))
			}
			for j := range want[i] {
				if d := math.Abs(float64(got[i][j] - want[i][j])); d > 1e-4*(1+math.Abs(float64(want[i][j]))) || math.IsNaN(d) {
					t.Fatalf("T=%g seq %d token %d: %g, want %g", temp, i, j, got[i][j], want[i][j])
				}
			}
		}
	}
}
