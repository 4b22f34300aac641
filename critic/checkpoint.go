package critic

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/reward"
)

// A critic checkpoint is a directory like the other models': model.safetensors
// (the trunk's transformer.* tensors with Hugging Face's names, then
// value_head.weight [1, C] and value_head.bias [1]) and config.json (GPT-2's
// keys). Hugging Face has no GPT-2 value-model class, so config.json names the
// trunk's, GPT2Model (which loads the transformer.* tensors and ignores the
// head), and marks the directory with KindKey = Kind.
const (
	KindKey      = "troupe_model"
	Kind         = "critic"
	Architecture = "GPT2Model"
)

// Save writes the checkpoint into dir (created), each file atomically and
// config.json last, as policy and reward do.
func (m *Model) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := policy.WriteParams(filepath.Join(dir, policy.ModelFile), m.Layout().Specs, m.Weights()); err != nil {
		return err
	}
	extra := map[string]any{
		"architectures": []string{Architecture},
		KindKey:         Kind,
	}
	return policy.WriteConfig(filepath.Join(dir, policy.ConfigFile), m.Trunk.Config, nil, extra)
}

// Load reads a critic checkpoint into a new model on dev. It is strict: a
// config.json marked as another kind of model, and any missing, unexpected or
// mis-shaped tensor, are refused with the name and the reason; a language-model
// or reward-model checkpoint is refused with a pointer to FromPolicy or
// FromReward.
func Load(dir string, dev kernels.Device) (*Model, error) {
	cfg, err := policy.LoadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	cpath := filepath.Join(dir, policy.ConfigFile)
	raw, err := os.ReadFile(cpath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	var marks map[string]json.RawMessage
	if err := json.Unmarshal(raw, &marks); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadCheckpoint, cpath, err)
	}
	if k, ok := marks[KindKey]; ok {
		var kind string
		if err := json.Unmarshal(k, &kind); err != nil || kind != Kind {
			return nil, fmt.Errorf("%w: %s: %s is %s, want %q", ErrBadCheckpoint, cpath, KindKey, k, Kind)
		}
	}

	path := filepath.Join(dir, policy.ModelFile)
	tensors, err := policy.ReadParams(path, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if _, ok := tensors[HeadWeightName]; !ok {
		if _, rm := tensors[reward.HeadName]; rm {
			return nil, fmt.Errorf("%w: %s has no %s but a %s: it is a reward model; start a critic from it with critic.FromReward",
				ErrBadCheckpoint, path, HeadWeightName, reward.HeadName)
		}
		return nil, fmt.Errorf("%w: %s has no %s: it is a language model; start a critic from it with critic.FromPolicy",
			ErrBadCheckpoint, path, HeadWeightName)
	}
	m, err := New(cfg, dev)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadCheckpoint, cpath, err)
	}
	host := make([]float32, m.Params.N)
	if err := policy.CopyTensors(path, tensors, m.Layout().Specs, host, "value_head."); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	m.Dev.Upload(m.Params, host)
	return m, nil
}
