package policy

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkScoreGPT2AB alternates LogProbs at the gpt2 bench shape with the
// (N,V) logits then InferLogProb (a) and with InferHeadLogProb (b) and reports both medians.
func BenchmarkScoreGPT2AB(b *testing.B) { scoreHeadAB(b, benchModelGPT2(b)) }

// BenchmarkScoreSmallAB is BenchmarkScoreGPT2AB on the small config.
func BenchmarkScoreSmallAB(b *testing.B) { scoreHeadAB(b, benchModel(b)) }

// scoreHeadAB alternates LogProbs of 8 sequences of 80 tokens on m with fuseHead
// off (a) and on (b) and reports both medians.
func scoreHeadAB(b *testing.B, m *Model) {
	seqs := benchSeqs(m, 4, 80)
	defer func() { fuseHead = true }()
	set := []func(){func() { fuseHead = false }, func() { fuseHead = true }}
	ts := make([][]float64, 2)
	for i := 0; i < b.N+1; i++ {
		for k, s := range set {
			s()
			t0 := time.Now()
			if _, err := m.LogProbs(seqs); err != nil {
				b.Fatal(err)
			}
			if i > 0 {
				ts[k] = append(ts[k], time.Since(t0).Seconds())
			}
		}
	}
	for k := range ts {
		slices.Sort(ts[k])
	}
	b.ReportMetric(632/ts[0][len(ts[0])/2], "a_tokens/s")
	b.ReportMetric(632/ts[1][len(ts[1])/2], "b_tokens/s")
}
