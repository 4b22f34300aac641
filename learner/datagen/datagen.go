// Package datagen builds the JSONL datasets of the SFT, RM and RL stages: a
// synthetic task with an exact answer (multi-digit addition) and definitions
// from WordNet. Every dataset is a pure function of its config and seed, and
// keeps a held-out split that shares no problem (addition) or word (WordNet)
// with the training split.
package datagen

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/troupe-rl/troupe/policy"
)

// ErrConfig is wrapped by every refusal of a generator's settings.
var ErrConfig = errors.New("datagen: bad config")

// SFTExample is one line of sft_*.jsonl: the response follows the prompt directly.
type SFTExample struct {
	Prompt   string `json:"prompt"`   // e.g. "123+456=" or "Define cat:"
	Response string `json:"response"` // e.g. "579" or " feline mammal ..."
}

// PrefExample is one line of pref_*.jsonl: Chosen is preferred to Rejected as
// the response to Prompt; Kind says how Rejected was made (per-kind accuracy).
type PrefExample struct {
	Prompt   string `json:"prompt"`
	Chosen   string `json:"chosen"`
	Rejected string `json:"rejected"`
	Kind     string `json:"kind"` // addition: digit | offset; WordNet: random | hypernym | shuffled | truncated
	Task     string `json:"task"` // the dataset: addition | wordnet (accuracy is also reported per task)
}

// RLPrompt is one line of rl_prompts*.jsonl: a prompt for PPO with its exact answer.
type RLPrompt struct {
	Prompt string `json:"prompt"`
	Answer string `json:"answer"`
}

// Dataset is everything one generator makes; Write puts it into a directory.
type Dataset struct {
	SFTTrain, SFTVal   []SFTExample
	PrefTrain, PrefVal []PrefExample
	RLTrain, RLVal     []RLPrompt // empty for datasets without an exact answer

	// License, when not empty, is written as LicenseFile next to the data: the
	// terms the source's licence asks to travel with copies.
	License     string
	LicenseFile string // e.g. "LICENSE.wordnet"
}

// The files Write creates (those with no examples are not written).
const (
	SFTTrainFile  = "sft_train.jsonl"
	SFTValFile    = "sft_val.jsonl"
	PrefTrainFile = "pref_train.jsonl"
	PrefValFile   = "pref_val.jsonl"
	RLTrainFile   = "rl_prompts.jsonl"
	RLValFile     = "rl_prompts_val.jsonl"
)

// Write writes the dataset's files into dir (created), each atomically, and
// returns their paths.
func (d *Dataset) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	put := func(name string, n int, line func(i int) any) error {
		if n == 0 {
			return nil
		}
		path := filepath.Join(dir, name)
		err := policy.WriteFileAtomic(path, func(w io.Writer) error {
			bw := bufio.NewWriter(w)
			enc := json.NewEncoder(bw)
			enc.SetEscapeHTML(false)
			for i := 0; i < n; i++ {
				if err := enc.Encode(line(i)); err != nil {
					return err
				}
			}
			return bw.Flush()
		})
		if err != nil {
			return err
		}
		paths = append(paths, path)
		return nil
	}
	files := []struct {
		name string
		n    int
		line func(i int) any
	}{
		{SFTTrainFile, len(d.SFTTrain), func(i int) any { return d.SFTTrain[i] }},
		{SFTValFile, len(d.SFTVal), func(i int) any { return d.SFTVal[i] }},
		{PrefTrainFile, len(d.PrefTrain), func(i int) any { return d.PrefTrain[i] }},
		{PrefValFile, len(d.PrefVal), func(i int) any { return d.PrefVal[i] }},
		{RLTrainFile, len(d.RLTrain), func(i int) any { return d.RLTrain[i] }},
		{RLValFile, len(d.RLVal), func(i int) any { return d.RLVal[i] }},
	}
	for _, f := range files {
		if err := put(f.name, f.n, f.line); err != nil {
			return paths, err
		}
	}
	if d.License != "" {
		path := filepath.Join(dir, d.LicenseFile)
		err := policy.WriteFileAtomic(path, func(w io.Writer) error {
			_, err := io.WriteString(w, d.License)
			return err
		})
		if err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// KindCounts counts the preference pairs of each kind, e.g. {"digit": 500, "offset": 500}.
func KindCounts(pairs []PrefExample) map[string]int {
	out := map[string]int{}
	for _, p := range pairs {
		out[p.Kind]++
	}
	return out
}

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}
