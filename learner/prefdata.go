package learner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

// prefPair is one tokenised preference pair of the rm stage.
type prefPair struct {
	Chosen   []int32 // prompt then chosen response, no end-of-text, at most seq_len tokens
	Rejected []int32 // prompt then rejected response, likewise
	Kind     string  // the kind of rejected answer, e.g. "digit"; "" if the data has none
	Task     string  // the task (dataset) it comes from, e.g. "addition"; "" if the data has none
}

// prefEncoder turns preference lines into token pairs.
type prefEncoder struct {
	tok      *tokenizer.Tokenizer
	template string // DataConfig.Template, "{prompt}" replaced by the prompt
	seqLen   int    // longest sequence kept; longer ones lose their start
}

// Encode returns the tokens of a templated prompt and a response (see reward.Encode).
func (e prefEncoder) Encode(prompt, response string) []int32 {
	return reward.Encode(e.tok, strings.ReplaceAll(e.template, "{prompt}", prompt), response, e.seqLen)
}

// parse checks one line's object and returns its pair.
func (e prefEncoder) parse(obj map[string]json.RawMessage) (prefPair, error) {
	prompt, err := jsonString(obj, "prompt", true)
	if err != nil {
		return prefPair{}, err
	}
	chosen, err := jsonString(obj, "chosen", false)
	if err != nil {
		return prefPair{}, err
	}
	rejected, err := jsonString(obj, "rejected", false)
	if err != nil {
		return prefPair{}, err
	}
	if chosen == rejected {
		return prefPair{}, fmt.Errorf(`"chosen" and "rejected" are the same text`)
	}
	p := prefPair{Chosen: e.Encode(prompt, chosen), Rejected: e.Encode(prompt, rejected)}
	if p.Kind, err = metricName(obj, "kind"); err != nil {
		return prefPair{}, err
	}
	if p.Task, err = metricName(obj, "task"); err != nil {
		return prefPair{}, err
	}
	return p, nil
}

// metricName reads the optional string field that names a metric
// (val_accuracy_<name>): "" when absent.
func metricName(obj map[string]json.RawMessage, field string) (string, error) {
	if _, ok := obj[field]; !ok {
		return "", nil
	}
	v, err := jsonString(obj, field, true)
	if err != nil {
		return "", err
	}
	if v != "" && !validKind(v) {
		return "", fmt.Errorf(`field %q %q: use letters, digits, "_" and "-" (it names a metric)`, field, v)
	}
	return v, nil
}

func validKind(k string) bool {
	if len(k) > 32 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// loadPrefData reads the rm stage's training and held-out pairs with
// loadJSONL (same rules as sft: malformed lines listed as file:line, the load
// refused above data.max_bad_fraction): dc.Train, and dc.Val or, when it is
// empty, the last dc.ValFraction of the training pairs. fingerprint hashes the
// files' contents and the split, for the resume check.
func loadPrefData(dc DataConfig, enc prefEncoder) (train, val []prefPair, rep DataReport, fingerprint string, err error) {
	read := func(field string, patterns []string) ([]prefPair, DataReport, [32]byte, error) {
		return loadRecords(field, patterns, dc.MaxBadFraction, enc.parse)
	}
	all, rep, sum, err := read("data.train", dc.Train)
	if err != nil {
		return nil, nil, rep, "", err
	}
	fp := sha256.New()
	fp.Write(sum[:])
	valField := "data.val"
	if len(dc.Val) > 0 {
		v, vrep, vsum, err := read("data.val", dc.Val)
		if err != nil {
			return nil, nil, vrep, "", err
		}
		rep.Files = append(rep.Files, vrep.Files...)
		rep.Lines += vrep.Lines
		rep.Bad += vrep.Bad
		rep.BadLines = append(rep.BadLines, vrep.BadLines[:min(len(vrep.BadLines), maxBadListed-len(rep.BadLines))]...)
		train, val = all, v
		fp.Write(vsum[:])
	} else {
		valField = "data.val_fraction"
		nv := int(math.Round(float64(len(all)) * dc.ValFraction))
		if dc.ValFraction > 0 {
			nv = max(nv, 1)
		}
		nv = min(nv, len(all))
		train, val = all[:len(all)-nv], all[len(all)-nv:]
		fmt.Fprintf(fp, "split %d", nv)
	}
	if len(train) == 0 {
		return nil, nil, rep, "", fmt.Errorf("%w: data.train: no training pairs left", ErrData)
	}
	if len(val) == 0 {
		return nil, nil, rep, "", fmt.Errorf("%w: %s: no held-out pairs", ErrData, valField)
	}
	rep.TrainItems, rep.ValItems = len(train), len(val)
	return train, val, rep, hex.EncodeToString(fp.Sum(nil)), nil
}
