package policy

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// TestGeneratePanels: decoding from the panel-packed weights gives the same
// tokens and bit-identical log-probs as from the row-major weights, for a
// ragged batch and after the parameters change (the panels are repacked).
func TestGeneratePanels(t *testing.T) {
	cfg := Config{VocabSize: 61, MaxSeqLen: 48, NumLayers: 2, NumHeads: 2, Channels: 40, LayerNormEps: 1e-5}
	m := randomModel(t, cfg, 21, 0.3)
	if !kernels.CanPackPanels(m.Dev) {
		t.Skip("the device packs no panels (pure-Go build or no AVX-512)")
	}
	prompts := samplePrompts(rand.New(rand.NewPCG(5, 5)), cfg.VocabSize, 9, 1, 14, 3, 6)
	opt := SampleOptions{MaxNewTokens: 20, Temperature: 1, Seed: 7}
	gen := func(panels bool) []Sample {
		defer func(u bool) { usePanels = u }(usePanels)
		usePanels = panels
		out, err := m.Generate(prompts, opt)
		if err != nil {
			t.Fatal(err)
		}
		if panels && m.panels == nil {
			t.Fatal("Generate packed no panels")
		}
		return out
	}
	for round := 0; round < 2; round++ {
		with, without := gen(true), gen(false)
		for i := range with {
			if !slices.Equal(with[i].Tokens, without[i].Tokens) || !slices.Equal(with[i].LogProbs, without[i].LogProbs) {
				t.Fatalf("round %d prompt %d: panels %v %v, row-major %v %v", round, i,
					with[i].Tokens, with[i].LogProbs, without[i].Tokens, without[i].LogProbs)
			}
		}
		// Change every parameter; the next Generate must repack into the same buffer.
		p := make([]float32, m.Layout.Total)
		m.Dev.Download(p, m.Params)
		for j := range p {
			p[j] *= 1.1
		}
		m.Dev.Upload(m.Params, p)
	}
}
