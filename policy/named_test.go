package policy

import (
	"errors"
	"strings"
	"testing"
)

// TestNamedConfig pins the named shapes that init-model and bench offer.
func TestNamedConfig(t *testing.T) {
	for name, want := range map[string]Config{
		"tiny":  {VocabSize: 256, MaxSeqLen: 128, NumLayers: 4, NumHeads: 4, Channels: 128, LayerNormEps: 1e-5},
		"small": {VocabSize: 512, MaxSeqLen: 256, NumLayers: 6, NumHeads: 6, Channels: 384, LayerNormEps: 1e-5},
		"gpt2":  {VocabSize: 50257, MaxSeqLen: 1024, NumLayers: 12, NumHeads: 12, Channels: 768, LayerNormEps: 1e-5},
	} {
		if got, err := NamedConfig(name); err != nil || got != want {
			t.Errorf("NamedConfig(%q): got %+v, %v; want %+v", name, got, err, want)
		}
	}
	_, err := NamedConfig("huge")
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "tiny, small, gpt2") {
		t.Errorf("NamedConfig(huge): got %v, want ErrConfig listing tiny, small, gpt2", err)
	}
}
