package policy

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestLogProbsGroups: scoring a batch as one group per thread gives the same
// log-probs as scoring it as one batch with every op split over the threads,
// for ragged lengths, a temperature, and a budget small enough to chunk each
// group. To the last bit where troupe's kernels take the products; this
// model's are small enough to go to OpenBLAS, whose sgemm rounds a row
// differently depending on where it falls in a call's rows (17 x 40 x 120:
// rows 1-16 computed alone differ in the last bit from the same rows of the
// whole call, with either its Haswell or its SkylakeX kernels), so the
// groups' row split may move the last bit: allowed, 1e-6 relative.
func TestLogProbsGroups(t *testing.T) {
	cfg := Config{VocabSize: 67, MaxSeqLen: 48, NumLayers: 2, NumHeads: 2, Channels: 40, LayerNormEps: 1e-5}
	m := randomModel(t, cfg, 33, 0.3) // NewCPU(2): two groups
	seqs := samplePrompts(rand.New(rand.NewPCG(6, 6)), cfg.VocabSize, 17, 2, 48, 9, 30, 5, 33)
	defer func(g bool, b int) { scoreGroups, inferBudget = g, b }(scoreGroups, inferBudget)
	for _, budget := range []int{inferBudget, 3000} {
		inferBudget = budget
		for _, temp := range []float32{1, 0.7} {
			scoreGroups = false
			want, err := m.LogProbsT(seqs, temp)
			if err != nil {
				t.Fatal(err)
			}
			scoreGroups = true
			m.scoreActs = nil
			got, err := m.LogProbsT(seqs, temp)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.scoreActs) != 2 {
				t.Fatalf("budget %d: %d group workspaces, want 2 (the grouped path did not run)", budget, len(m.scoreActs))
			}
			for i := range seqs {
				if len(got[i]) != len(want[i]) {
					t.Fatalf("budget %d temperature %v sequence %d: %d log-probs grouped, %d in one batch", budget, temp, i, len(got[i]), len(want[i]))
				}
				for j, w := range want[i] {
					if d := math.Abs(float64(got[i][j] - w)); d > 1e-6*max(1, math.Abs(float64(w))) {
						t.Fatalf("budget %d temperature %v sequence %d position %d: grouped %v, one batch %v", budget, temp, i, j, got[i][j], w)
					}
				}
			}
		}
	}
	// A single sequence is one group: no split.
	m.scoreActs = nil
	if _, err := m.LogProbs(seqs[:1]); err != nil || m.scoreActs != nil {
		t.Fatalf("one sequence: err %v, group workspaces %d", err, len(m.scoreActs))
	}
}
