package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Save writes the tokenizer to dir (created if missing) in both formats, as Hugging
// Face's GPT-2 tokenizer has them: vocab.json and merges.txt, tokenizer.json, and
// special_tokens_map.json and tokenizer_config.json for transformers'
// AutoTokenizer. Each file is written atomically (temp file, fsync, rename), but
// the set is not: a crash midway can leave old and new files side by side.
//
// tokenizer_config.json sets clean_up_tokenization_spaces to false (older
// transformers defaulted GPT-2 to true, which rewrites " ." as "." when decoding)
// so that Hugging Face's decode is, like Decode, the exact inverse of encode.
// It has no model_max_length: the context length belongs to the model.
func (t *Tokenizer) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tokenizer: save: %w", err)
	}
	for _, m := range t.mergeList {
		for _, id := range m {
			if strings.ContainsAny(t.visible[id], " \n\r") {
				return fmt.Errorf("tokenizer: save: merge token %q holds white space, which merges.txt cannot spell", t.visible[id])
			}
		}
	}
	files := []struct {
		name string
		data func() ([]byte, error)
	}{
		{"vocab.json", t.vocabJSON},
		{"merges.txt", t.mergesTXT},
		{"tokenizer.json", t.tokenizerJSON},
		{"special_tokens_map.json", t.specialTokensMapJSON},
		{"tokenizer_config.json", t.tokenizerConfigJSON},
	}
	for _, f := range files {
		data, err := f.data()
		if err != nil {
			return fmt.Errorf("tokenizer: save %s: %w", f.name, err)
		}
		if err := writeFileAtomic(filepath.Join(dir, f.name), data); err != nil {
			return fmt.Errorf("tokenizer: save: %w", err)
		}
	}
	// Make the renames themselves durable.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// writeFileAtomic writes data to a temp file beside path, syncs it and renames it
// over path, so a reader sees the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// jsonString is s as a JSON string, without Go's HTML escaping of <, > and &
// (Python's json.dumps does not escape them either, and "<|endoftext|>" reads better).
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// orderedVocab marshals as a JSON object of token -> id in id order, as GPT-2's
// vocab.json and Hugging Face's tokenizer.json list it.
type orderedVocab struct{ t *Tokenizer }

func (v orderedVocab) MarshalJSON() ([]byte, error) { return v.t.vocabObject(":", ","), nil }

func (t *Tokenizer) vocabObject(colon, comma string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for id, s := range t.visible {
		if id > 0 {
			b.WriteString(comma)
		}
		b.Write(jsonString(s))
		b.WriteString(colon)
		b.WriteString(strconv.Itoa(id))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// vocabJSON is one line, spaced like GPT-2's encoder.json: {"!": 0, "\"": 1, ...}.
func (t *Tokenizer) vocabJSON() ([]byte, error) {
	return append(t.vocabObject(": ", ", "), '\n'), nil
}

func (t *Tokenizer) mergesTXT() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("#version: 0.2\n")
	for _, m := range t.mergeList {
		b.WriteString(t.visible[m[0]])
		b.WriteByte(' ')
		b.WriteString(t.visible[m[1]])
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

type hfAddedOut struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfByteLevelOut struct {
	Type           string `json:"type"`
	AddPrefixSpace bool   `json:"add_prefix_space"`
	TrimOffsets    bool   `json:"trim_offsets"`
	UseRegex       bool   `json:"use_regex"`
}

// addedTokens lists the special tokens in id order.
func (t *Tokenizer) addedTokens() []hfAddedOut {
	var out []hfAddedOut
	for id, sp := range t.special {
		if sp {
			// normalized: true as in GPT-2's own file; with no normalizer it has no effect.
			out = append(out, hfAddedOut{ID: int32(id), Content: t.visible[id], Normalized: true, Special: true})
		}
	}
	return out
}

// tokenizerJSON is GPT-2's tokenizer.json layout. Merges are written as
// "left right" strings, which every version of tokenizers reads.
func (t *Tokenizer) tokenizerJSON() ([]byte, error) {
	merges := make([]string, len(t.mergeList))
	for i, m := range t.mergeList {
		merges[i] = t.visible[m[0]] + " " + t.visible[m[1]]
	}
	type model struct {
		Type                    string       `json:"type"`
		Dropout                 *float64     `json:"dropout"`
		UnkToken                *string      `json:"unk_token"`
		ContinuingSubwordPrefix string       `json:"continuing_subword_prefix"`
		EndOfWordSuffix         string       `json:"end_of_word_suffix"`
		FuseUnk                 bool         `json:"fuse_unk"`
		ByteFallback            bool         `json:"byte_fallback"`
		IgnoreMerges            bool         `json:"ignore_merges"`
		Vocab                   orderedVocab `json:"vocab"`
		Merges                  []string     `json:"merges"`
	}
	added := t.addedTokens()
	if added == nil {
		added = []hfAddedOut{}
	}
	doc := struct {
		Version       string         `json:"version"`
		Truncation    *struct{}      `json:"truncation"`
		Padding       *struct{}      `json:"padding"`
		AddedTokens   []hfAddedOut   `json:"added_tokens"`
		Normalizer    *struct{}      `json:"normalizer"`
		PreTokenizer  hfByteLevelOut `json:"pre_tokenizer"`
		PostProcessor hfByteLevelOut `json:"post_processor"`
		Decoder       hfByteLevelOut `json:"decoder"`
		Model         model          `json:"model"`
	}{
		Version:       "1.0",
		AddedTokens:   added,
		PreTokenizer:  hfByteLevelOut{Type: "ByteLevel", AddPrefixSpace: false, TrimOffsets: true, UseRegex: true},
		PostProcessor: hfByteLevelOut{Type: "ByteLevel", AddPrefixSpace: true, TrimOffsets: false, UseRegex: true},
		Decoder:       hfByteLevelOut{Type: "ByteLevel", AddPrefixSpace: true, TrimOffsets: true, UseRegex: true},
		Model:         model{Type: "BPE", Vocab: orderedVocab{t}, Merges: merges},
	}
	return marshalIndent(doc)
}

func marshalIndent(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// namedSpecials is what transformers' special_tokens_map.json holds: GPT-2 uses
// "<|endoftext|>" as bos, eos and unk; any other specials are additional.
func (t *Tokenizer) namedSpecials() map[string]any {
	m := map[string]any{}
	if t.eot >= 0 {
		for _, k := range []string{"bos_token", "eos_token", "unk_token"} {
			m[k] = EndOfText
		}
	}
	var extra []string
	for _, a := range t.addedTokens() {
		if a.Content != EndOfText {
			extra = append(extra, a.Content)
		}
	}
	if len(extra) > 0 {
		m["additional_special_tokens"] = extra
	}
	return m
}

func (t *Tokenizer) specialTokensMapJSON() ([]byte, error) {
	return marshalIndent(t.namedSpecials())
}

func (t *Tokenizer) tokenizerConfigJSON() ([]byte, error) {
	cfg := t.namedSpecials()
	// transformers keys these by id and leaves the id out of the entry.
	type entry struct {
		Content    string `json:"content"`
		LStrip     bool   `json:"lstrip"`
		Normalized bool   `json:"normalized"`
		RStrip     bool   `json:"rstrip"`
		SingleWord bool   `json:"single_word"`
		Special    bool   `json:"special"`
	}
	decoder := map[string]entry{}
	for _, a := range t.addedTokens() {
		decoder[strconv.Itoa(int(a.ID))] = entry{Content: a.Content, Normalized: a.Normalized, Special: a.Special}
	}
	cfg["added_tokens_decoder"] = decoder
	cfg["add_bos_token"] = false
	cfg["add_prefix_space"] = false
	cfg["clean_up_tokenization_spaces"] = false
	cfg["errors"] = "replace"
	cfg["tokenizer_class"] = "GPT2Tokenizer"
	return marshalIndent(cfg)
}
