package reward

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// Architecture is the Hugging Face class a reward checkpoint loads as.
const Architecture = "GPT2ForSequenceClassification"

// Save writes a reward-model checkpoint into dir (created): the tokenizer files
// (when tok is not nil), model.safetensors with Hugging Face's names (the
// trunk's transformer.* tensors and score.weight [1, C]) and config.json
// (architectures GPT2ForSequenceClassification, num_labels 1, pad_token_id the
// end-of-text id), each file atomically and config.json last, so that
// GPT2ForSequenceClassification.from_pretrained(dir) loads it.
func (m *Model) Save(dir string, tok *tokenizer.Tokenizer) error {
	if tok != nil {
		if n := tok.VocabSize(); n > m.Trunk.Config.VocabSize {
			return fmt.Errorf("%w: the tokenizer has %d ids but the model's vocab_size is %d", policy.ErrConfig, n, m.Trunk.Config.VocabSize)
		}
		if id := tok.EOT(); id >= 0 {
			m.PadID = id
		}
		if err := tok.Save(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := policy.WriteParams(filepath.Join(dir, policy.ModelFile), m.Layout().Specs, m.Weights()); err != nil {
		return err
	}
	return writeConfig(filepath.Join(dir, policy.ConfigFile), m.Trunk.Config, m.PadID)
}

// writeConfig writes config.json as Hugging Face's GPT2Config writes it for a
// GPT2ForSequenceClassification with one label: GPT-2's keys (policy.WriteConfig)
// with the architecture, the label maps and the pad token added.
func writeConfig(path string, cfg policy.Config, padID int32) error {
	var pad *int
	if padID >= 0 {
		id := int(padID)
		pad = &id
	}
	extra := map[string]any{
		"architectures": []string{Architecture},
		"id2label":      map[string]any{"0": "LABEL_0"},
		"label2id":      map[string]int{"LABEL_0": 0},
		"num_labels":    1,
	}
	if pad != nil {
		extra["pad_token_id"] = *pad
	}
	return policy.WriteConfig(path, cfg, pad, extra)
}

// Load reads a reward-model checkpoint (config.json and model.safetensors with
// score.weight) into a new model on dev. It refuses a language-model checkpoint
// (no score.weight) with an error that says how to start a reward model from
// one, a head of another shape, more than one label, and any missing or
// unexpected tensor. The tokenizer is loaded separately (tokenizer.Load(dir)).
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
	var extra struct {
		NumLabels  *int            `json:"num_labels"`
		ID2Label   map[string]any  `json:"id2label"`
		PadTokenID json.RawMessage `json:"pad_token_id"`
	}
	if err := json.Unmarshal(raw, &extra); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadCheckpoint, cpath, err)
	}
	labels := 1
	if extra.NumLabels != nil {
		labels = *extra.NumLabels
	} else if extra.ID2Label != nil {
		labels = len(extra.ID2Label)
	}
	if labels != 1 {
		return nil, fmt.Errorf("%w: %s: num_labels is %d, a reward model has 1", ErrBadCheckpoint, cpath, labels)
	}
	pad := int32(-1)
	if len(extra.PadTokenID) > 0 && !bytes.Equal(extra.PadTokenID, []byte("null")) {
		var id int32
		if err := json.Unmarshal(extra.PadTokenID, &id); err != nil {
			return nil, fmt.Errorf("%w: %s: pad_token_id: %v", ErrBadCheckpoint, cpath, err)
		}
		pad = id
	}

	path := filepath.Join(dir, policy.ModelFile)
	tensors, err := policy.ReadParams(path, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if _, ok := tensors[HeadName]; !ok {
		return nil, fmt.Errorf("%w: %w: %s has no %s: it is a language-model checkpoint (GPT2LMHeadModel), not a reward model; "+
			"to train a reward model from it, name it as the rm stage's model.init", ErrBadCheckpoint, ErrNoHead, path, HeadName)
	}
	m, err := New(cfg, dev, pad)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadCheckpoint, cpath, err)
	}
	host := make([]float32, m.Params.N)
	if err := policy.CopyTensors(path, tensors, m.Layout().Specs, host, HeadName); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	m.Dev.Upload(m.Params, host)
	return m, nil
}
