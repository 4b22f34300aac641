package learner

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
)

// TestBuildModel: a fresh model takes its shape from the preset and the
// overrides and its vocabulary from the tokenizer, and the same seed gives
// the same weights; a checkpoint in model.init is loaded as saved (overrides
// ignored) with its own tokenizer.
func TestBuildModel(t *testing.T) {
	tok, tokDir := trainedTokenizer(t, strings.Repeat("the beginning of the end\n", 20), 300)
	mc := DefaultModelConfig()
	mc.Tokenizer, mc.NLayer, mc.NEmbd, mc.NHead = tokDir, 1, 32, 2
	dev := kernels.NewCPU(1)
	m, tk, err := BuildModel(mc, dev, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := policy.Config{VocabSize: tok.VocabSize(), MaxSeqLen: 128, NumLayers: 1, NumHeads: 2, Channels: 32, LayerNormEps: 1e-5}
	if m.Config != want || tk.VocabSize() != tok.VocabSize() {
		t.Fatalf("config %+v, want %+v", m.Config, want)
	}
	m2, _, _ := BuildModel(mc, dev, 3)
	m3, _, _ := BuildModel(mc, dev, 4)
	same, differ := true, false
	for i := range m.Params.F {
		same = same && m.Params.F[i] == m2.Params.F[i]
		differ = differ || m.Params.F[i] != m3.Params.F[i]
	}
	if !same || !differ {
		t.Fatalf("same seed same weights: %v; other seed other weights: %v", same, differ)
	}

	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := policy.SaveWithTokenizer(m, tok, dir); err != nil {
		t.Fatal(err)
	}
	init := ModelConfig{Init: dir, Shape: "tiny", NLayer: 5}
	l, ltok, err := BuildModel(init, dev, 99)
	if err != nil {
		t.Fatal(err)
	}
	if l.Config != m.Config || ltok.VocabSize() != tok.VocabSize() {
		t.Fatalf("loaded config %+v, want the saved %+v", l.Config, m.Config)
	}
	for i := range m.Params.F {
		if l.Params.F[i] != m.Params.F[i] {
			t.Fatalf("loaded weight %d differs from the saved one", i)
		}
	}

	for _, c := range []struct {
		mc   ModelConfig
		want string
	}{
		{ModelConfig{Init: filepath.Join(t.TempDir(), "missing")}, "model.init"},
		{ModelConfig{Init: tokDir}, "model.init"}, // a tokenizer but no model
		{ModelConfig{Shape: "tiny", Tokenizer: filepath.Join(t.TempDir(), "none")}, "model.tokenizer"},
		{ModelConfig{Shape: "tiny", Tokenizer: tokDir, NHead: 3}, "model.n_embd"},
		{ModelConfig{Shape: "tiny", Tokenizer: tokDir, NLayer: -1}, "model.n_layer"},
		{ModelConfig{Shape: "big", Tokenizer: tokDir}, "model.shape"},
	} {
		if _, _, err := BuildModel(c.mc, dev, 1); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("BuildModel(%+v) = %v, want ErrConfig naming %s", c.mc, err, c.want)
		}
	}
}

// TestSFTFromPretrainCheckpoint: a pretraining checkpoint is a valid
// model.init for SFT, which starts from exactly its weights.
func TestSFTFromPretrainCheckpoint(t *testing.T) {
	_, dc, tc := sftSetup(t)
	mc, _, _ := sftSetup(t)
	tc.Steps = 2
	pre, err := NewSFT(mc, dc, tc, 1, kernels.NewCPU(2)) // any next-token job writes the same layout
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, pre, 2)
	dir := filepath.Join(t.TempDir(), "step-2")
	if err := pre.SaveCheckpoint(dir); err != nil {
		t.Fatal(err)
	}
	sft, err := NewSFT(ModelConfig{Init: dir}, dc, tc, 1, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	if sft.StepsDone() != 0 {
		t.Fatalf("a job initialised from a checkpoint starts at step %d, want 0", sft.StepsDone())
	}
	a, b := pre.Weights(), sft.Weights()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("weight %d: %v in the checkpoint, %v in the new job", i, a[i], b[i])
		}
	}
}
