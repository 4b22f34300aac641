package learner

import (
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// BenchmarkPretrainStep: one optimizer step of the 2-layer, 64-wide model
// (B16 × T64) on the learner's device, allocations included.
func BenchmarkPretrainStep(b *testing.B) {
	mc, dc, tc := pretrainSetup(b)
	tc.Steps = 1 << 30
	j, err := NewPretrain(mc, dc, tc, 1, kernels.NewCPU(0))
	if err != nil {
		b.Fatal(err)
	}
	j.Step() // grow the working memory
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := j.Step(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*tc.BatchSize*tc.SeqLen)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkSFTStep: one optimizer step of SFT on 2-digit addition (B32).
func BenchmarkSFTStep(b *testing.B) {
	mc, dc, tc := sftSetup(b)
	tc.Steps = 1 << 30
	j, err := NewSFT(mc, dc, tc, 1, kernels.NewCPU(0))
	if err != nil {
		b.Fatal(err)
	}
	j.Step()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := j.Step(); err != nil {
			b.Fatal(err)
		}
	}
}
