package policy

import (
	"math/rand/v2"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// benchModel is the "small" preset (V512, maxT 256, L6, H6, d384), GPT-2 init,
// on the default threads (NewCPU(0): GOMAXPROCS less the spare P, see TestMain).
func benchModel(b *testing.B) *Model {
	cfg, err := NamedConfig("small")
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(cfg, kernels.NewCPU(0))
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	return m
}

// BenchmarkTrainStepSmall: one step (forward, backward, AdamW) on B=8, T=256.
func BenchmarkTrainStepSmall(b *testing.B) { benchTrainStep(b, benchModel(b), 8, 256) }

// BenchmarkTrainStepGPT2: one step at the 124M shape (V50257, L12, H12, d768)
// on B=4, T=256, as `troupe bench --config gpt2` runs it.
func BenchmarkTrainStepGPT2(b *testing.B) {
	cfg, err := NamedConfig("gpt2")
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxSeqLen = 256
	m, err := New(cfg, kernels.NewCPU(0))
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	benchTrainStep(b, m, 4, 256)
}

// benchTrainStep times training steps (forward, backward, AdamW) of m on
// random tokens, B rows of T, and reports tokens/s.
func benchTrainStep(b *testing.B, m *Model, B, T int) {
	rng := rand.New(rand.NewPCG(1, 1))
	x := randomTokens(rng, B*T, m.Config.VocabSize)
	y := randomTokens(rng, B*T, m.Config.VocabSize)
	opt := NewAdamW(m, DefaultAdamWConfig())
	step := func() {
		m.ZeroGrad()
		m.LossAndBackward(x, y, nil, B, T)
		opt.Update(m, opt.Config.LR)
	}
	step() // allocations
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
	b.ReportMetric(float64(B*T*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// benchGeneration is the bench shape's generation: 8 random prompts of 16
// tokens, 64 new tokens each, sampled at T=1.
func benchGeneration(m *Model) ([][]int32, SampleOptions) {
	rng := rand.New(rand.NewPCG(2, 2))
	prompts := make([][]int32, 8)
	for i := range prompts {
		prompts[i] = randomTokens(rng, 16, m.Config.VocabSize)
	}
	return prompts, SampleOptions{MaxNewTokens: 64, Temperature: 1, Seed: 1}
}

// BenchmarkGenerateSmall: 8 prompts of 16 tokens, 64 new tokens each, T=1.
func BenchmarkGenerateSmall(b *testing.B) {
	m := benchModel(b)
	prompts, opt := benchGeneration(m)
	if _, err := m.Generate(prompts, opt); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		out, _ := m.Generate(prompts, opt)
		for _, s := range out {
			n += len(s.Tokens)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "new_tokens/s")
}

// BenchmarkLogProbsSmall: score 8 sequences of 256 tokens.
func BenchmarkLogProbsSmall(b *testing.B) {
	m := benchModel(b)
	seqs := benchSeqs(m, 3, 256)
	if _, err := m.LogProbs(seqs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.LogProbs(seqs)
	}
	b.ReportMetric(float64(8*256*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
