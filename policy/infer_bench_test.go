package policy

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/troupe-rl/troupe/kernels"
)

// BenchmarkScoreBenchShape: LogProbs of 8 sequences of 80 tokens (16-token
// prompts plus 64 new ones), the shape `troupe bench --what score` times.
func BenchmarkScoreBenchShape(b *testing.B) { benchScore(b, benchModel(b)) }

// benchSeqs is 8 random sequences of T tokens for m, drawn from PCG(seed, seed).
func benchSeqs(m *Model, seed uint64, T int) [][]int32 {
	rng := rand.New(rand.NewPCG(seed, seed))
	seqs := make([][]int32, 8)
	for i := range seqs {
		seqs[i] = randomTokens(rng, T, m.Config.VocabSize)
	}
	return seqs
}

// benchScore times m.LogProbs of 8 random sequences of 80 tokens and reports
// tokens/s.
func benchScore(b *testing.B, m *Model) {
	seqs := benchSeqs(m, 4, 80)
	if _, err := m.LogProbs(seqs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.LogProbs(seqs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(8*79*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// plainDev hides the CPU's optional fused ops (the composed-primitives path).
type plainDev struct{ kernels.Device }

// BenchmarkScoreFusedVsPlain alternates LogProbs at the bench shape on the CPU
// device (fused inference ops) and on the same CPU behind plainDev, and reports
// both medians: an A/B in one process, robust to a busy machine's drift.
func BenchmarkScoreFusedVsPlain(b *testing.B) {
	fused, plain := fusedAndPlain(b)
	seqs := benchSeqs(fused, 4, 80)
	abMedians(b, fused, plain, 632, "tokens/s", func(m *Model) error {
		_, err := m.LogProbs(seqs)
		return err
	})
}

// BenchmarkGenerateFusedVsPlain alternates Generate at the bench shape (8
// prompts of 16 tokens, 64 new, T=1) on the CPU device and behind plainDev (the
// products through Gemm + AddBias + AddInto), reporting both medians.
func BenchmarkGenerateFusedVsPlain(b *testing.B) {
	fused, plain := fusedAndPlain(b)
	prompts, opt := benchGeneration(fused)
	abMedians(b, fused, plain, 512, "new_tokens/s", func(m *Model) error {
		_, err := m.Generate(prompts, opt)
		return err
	})
}

// fusedAndPlain is the bench model on the CPU device and a copy of it behind
// plainDev (the composed-primitives path).
func fusedAndPlain(b *testing.B) (fused, plain *Model) {
	fused = benchModel(b)
	plain, err := New(fused.Config, plainDev{fused.Dev})
	if err != nil {
		b.Fatal(err)
	}
	copy(plain.Params.F, fused.Params.F)
	return fused, plain
}

// abMedians runs fn on fused and plain alternately (one untimed round, then
// b.N timed ones) and reports tokens / the median time of each as
// fused_<unit> and plain_<unit>.
func abMedians(b *testing.B, fused, plain *Model, tokens float64, unit string, fn func(*Model) error) {
	abRun(b, tokens, unit, "fused_", "plain_", func() error { return fn(fused) }, func() error { return fn(plain) })
}

// abRun runs x and y alternately (one untimed round, then b.N timed ones) and
// reports tokens / the median time of each, as xName+unit and yName+unit.
func abRun(b *testing.B, tokens float64, unit, xName, yName string, x, y func() error) {
	var tx, ty []float64
	for i := 0; i < b.N+1; i++ {
		for j, fn := range []func() error{x, y} {
			t0 := time.Now()
			if err := fn(); err != nil {
				b.Fatal(err)
			}
			if i > 0 {
				if j == 0 {
					tx = append(tx, time.Since(t0).Seconds())
				} else {
					ty = append(ty, time.Since(t0).Seconds())
				}
			}
		}
	}
	slices.Sort(tx)
	slices.Sort(ty)
	b.ReportMetric(tokens/tx[len(tx)/2], xName+unit)
	b.ReportMetric(tokens/ty[len(ty)/2], yName+unit)
}

// BenchmarkGeneratePanels alternates Generate at the bench shape with the decode
// products reading panel-packed weights (packing included) and row-major ones.
func BenchmarkGeneratePanels(b *testing.B) {
	m := benchModel(b)
	prompts, opt := benchGeneration(m)
	defer func(u bool) { usePanels = u }(usePanels)
	gen := func(panels bool) func() error {
		return func() error {
			usePanels = panels
			_, err := m.Generate(prompts, opt)
			return err
		}
	}
	abRun(b, 512, "new_tokens/s", "panels_", "rowmajor_", gen(true), gen(false))
}

// benchModelGPT2 is a randomly initialised 124M GPT-2 (V=50257, C=768) on the CPU.
func benchModelGPT2(b *testing.B) *Model {
	m, err := New(GPT2Small(), kernels.NewCPU(0))
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	return m
}

// BenchmarkScoreGPT2: LogProbs of 8 sequences of 80 tokens on the gpt2 shape,
// what `troupe bench --config gpt2 --what score` times.
func BenchmarkScoreGPT2(b *testing.B) { benchScore(b, benchModelGPT2(b)) }

// BenchmarkScoreGroups alternates LogProbs at the bench shape scored as one
// group of sequences per thread (single-threaded ops) and as one batch with
// every op split over the threads.
func BenchmarkScoreGroups(b *testing.B) { scoreGroupsAB(b, benchModel(b)) }

// BenchmarkScoreGroupsGPT2 is BenchmarkScoreGroups on the gpt2 shape.
func BenchmarkScoreGroupsGPT2(b *testing.B) { scoreGroupsAB(b, benchModelGPT2(b)) }

func scoreGroupsAB(b *testing.B, m *Model) {
	seqs := benchSeqs(m, 4, 80)
	defer func(g bool) { scoreGroups = g }(scoreGroups)
	score := func(groups bool) func() error {
		return func() error {
			scoreGroups = groups
			_, err := m.LogProbs(seqs)
			return err
		}
	}
	abRun(b, 632, "tokens/s", "groups_", "ops_", score(true), score(false))
}
