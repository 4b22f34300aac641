package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Load reads the tokenizer in dir: tokenizer.json if present, else vocab.json and
// merges.txt.
func Load(dir string) (*Tokenizer, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokenizer, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrBadTokenizer, dir)
	}
	hf := filepath.Join(dir, "tokenizer.json")
	vocab := filepath.Join(dir, "vocab.json")
	merges := filepath.Join(dir, "merges.txt")
	if exists(hf) {
		return LoadHF(hf)
	}
	switch hasV, hasM := exists(vocab), exists(merges); {
	case hasV && hasM:
		return LoadGPT2(vocab, merges)
	case hasV:
		return nil, fmt.Errorf("%w: %s has vocab.json but no merges.txt (and no tokenizer.json)", ErrBadTokenizer, dir)
	case hasM:
		return nil, fmt.Errorf("%w: %s has merges.txt but no vocab.json (and no tokenizer.json)", ErrBadTokenizer, dir)
	}
	return nil, fmt.Errorf("%w: %s has no tokenizer: want tokenizer.json, or vocab.json and merges.txt", ErrBadTokenizer, dir)
}

func exists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// LoadGPT2 reads GPT-2's vocab.json (token -> id, in the byte-level alphabet) and
// merges.txt ("#version" line, then one "left right" pair per line, best first).
// vocab.json has no flag for special tokens, so an entry that is neither a byte nor
// the result of a merge (GPT-2's "<|endoftext|>") is taken as one.
func LoadGPT2(vocabJSON, mergesTXT string) (*Tokenizer, error) {
	vocab, err := readVocabJSON(vocabJSON)
	if err != nil {
		return nil, err
	}
	merges, err := readMergesTXT(mergesTXT)
	if err != nil {
		return nil, err
	}
	return build(vocabJSON, vocab, merges, nil, true)
}

func readVocabJSON(path string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokenizer, err)
	}
	var vocab map[string]int64
	if err := json.Unmarshal(data, &vocab); err != nil {
		return nil, fmt.Errorf("%w: %s: want a JSON object of token -> id: %v", ErrBadTokenizer, path, err)
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("%w: %s: empty vocabulary", ErrBadTokenizer, path)
	}
	return vocab, nil
}

type mergeSpec struct {
	a, b  string
	where string // for errors, e.g. "merges.txt:12"
}

func readMergesTXT(path string) ([]mergeSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokenizer, err)
	}
	var merges []mergeSpec
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSuffix(sc.Text(), "\r")
		if s == "" || (line == 1 && strings.HasPrefix(s, "#version")) {
			continue
		}
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, fmt.Errorf("%w: %s:%d: want two tokens separated by one space, got %q", ErrBadTokenizer, path, line, s)
		}
		merges = append(merges, mergeSpec{a: a, b: b, where: fmt.Sprintf("%s:%d", path, line)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadTokenizer, path, err)
	}
	return merges, nil
}

// hfTokenizer is the part of Hugging Face's tokenizer.json this package reads.
type hfTokenizer struct {
	AddedTokens  []hfAddedToken  `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        struct {
		Type                    string           `json:"type"`
		Vocab                   map[string]int64 `json:"vocab"`
		Merges                  json.RawMessage  `json:"merges"`
		Dropout                 *float64         `json:"dropout"`
		ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
		ByteFallback            bool             `json:"byte_fallback"`
		IgnoreMerges            bool             `json:"ignore_merges"`
	} `json:"model"`
}

type hfAddedToken struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfByteLevel struct {
	Type           string `json:"type"`
	AddPrefixSpace *bool  `json:"add_prefix_space"`
	UseRegex       *bool  `json:"use_regex"`
}

// LoadHF reads a Hugging Face tokenizer.json whose model is BPE with GPT-2's
// ByteLevel pre-tokenizer (add_prefix_space false, use_regex true), no normalizer,
// and a ByteLevel decoder (or none). Every added token is matched in Encode's
// input as a whole. The post-processor is ignored: Encode adds no BOS/EOS.
// Anything else (another regex, a normalizer, byte fallback, dropout, lstrip or
// rstrip on an added token) would make the ids differ from Hugging Face's, so it
// is refused with an error that names the field.
func LoadHF(tokenizerJSON string) (*Tokenizer, error) {
	path := tokenizerJSON
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokenizer, err)
	}
	var f hfTokenizer
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadTokenizer, path, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadTokenizer, path, fmt.Sprintf(format, args...))
	}
	m := &f.Model
	switch {
	case m.Type != "BPE" && m.Type != "":
		return nil, bad("model.type is %q; only BPE is supported", m.Type)
	case len(m.Vocab) == 0:
		return nil, bad("model.vocab is missing or empty")
	case m.Dropout != nil && *m.Dropout != 0:
		return nil, bad("model.dropout is %g; only null is supported", *m.Dropout)
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return nil, bad("model.continuing_subword_prefix is %q; only empty is supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return nil, bad("model.end_of_word_suffix is %q; only empty is supported", *m.EndOfWordSuffix)
	case m.ByteFallback:
		return nil, bad("model.byte_fallback is true; only false is supported")
	case m.IgnoreMerges:
		return nil, bad("model.ignore_merges is true; only false is supported")
	}
	if !isJSONNull(f.Normalizer) {
		return nil, bad("normalizer is %s; only null is supported", f.Normalizer)
	}
	var pre hfByteLevel
	if isJSONNull(f.PreTokenizer) || json.Unmarshal(f.PreTokenizer, &pre) != nil || pre.Type != "ByteLevel" ||
		pre.AddPrefixSpace == nil || *pre.AddPrefixSpace || (pre.UseRegex != nil && !*pre.UseRegex) {
		return nil, bad("pre_tokenizer is %s; only GPT-2's ByteLevel with add_prefix_space false and use_regex true is supported", f.PreTokenizer)
	}
	if !isJSONNull(f.Decoder) {
		var dec hfByteLevel
		if json.Unmarshal(f.Decoder, &dec) != nil || dec.Type != "ByteLevel" {
			return nil, bad("decoder is %s; only ByteLevel (or null) is supported", f.Decoder)
		}
	}
	merges, err := parseHFMerges(path, m.Merges)
	if err != nil {
		return nil, err
	}
	var added []addedSpec
	for i, a := range f.AddedTokens {
		where := fmt.Sprintf("%s: added_tokens[%d]", path, i)
		if a.LStrip || a.RStrip || a.SingleWord {
			return nil, fmt.Errorf("%w: %s (%q): lstrip, rstrip and single_word must be false", ErrBadTokenizer, where, a.Content)
		}
		added = append(added, addedSpec{content: a.Content, id: a.ID, where: where})
	}
	return build(path, m.Vocab, merges, added, false)
}

func isJSONNull(r json.RawMessage) bool {
	s := strings.TrimSpace(string(r))
	return s == "" || s == "null"
}

// parseHFMerges accepts both spellings of model.merges: "left right" strings
// (tokenizers before 0.20) and ["left", "right"] pairs (0.20 on).
func parseHFMerges(path string, raw json.RawMessage) ([]mergeSpec, error) {
	if isJSONNull(raw) {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		merges := make([]mergeSpec, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok || a == "" || b == "" || strings.Contains(b, " ") {
				return nil, fmt.Errorf("%w: %s: model.merges[%d]: want two tokens separated by one space, got %q", ErrBadTokenizer, path, i, s)
			}
			merges[i] = mergeSpec{a: a, b: b, where: fmt.Sprintf("%s: model.merges[%d]", path, i)}
		}
		return merges, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("%w: %s: model.merges: want a list of \"left right\" strings or [left, right] pairs: %v", ErrBadTokenizer, path, err)
	}
	merges := make([]mergeSpec, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 || p[0] == "" || p[1] == "" {
			return nil, fmt.Errorf("%w: %s: model.merges[%d]: want two non-empty tokens, got %q", ErrBadTokenizer, path, i, p)
		}
		merges[i] = mergeSpec{a: p[0], b: p[1], where: fmt.Sprintf("%s: model.merges[%d]", path, i)}
	}
	return merges, nil
}

type addedSpec struct {
	content string
	id      int64
	where   string
}

// build checks a vocabulary, its merges and its added tokens and makes the
// Tokenizer. Ids must be 0..n-1, each used once (an added token may repeat its own
// vocab entry, as GPT-2's tokenizer.json does for "<|endoftext|>"). With
// unreachableIsSpecial, vocab entries that no merge produces and that are not
// single bytes become special tokens (how GPT-2's vocab.json marks them).
func build(src string, vocab map[string]int64, merges []mergeSpec, added []addedSpec, unreachableIsSpecial bool) (*Tokenizer, error) {
	keys := make([]string, 0, len(vocab))
	for k := range vocab {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic error messages
	owner := make(map[int64]string, len(vocab)+len(added))
	for _, k := range keys {
		id := vocab[k]
		if k == "" {
			// It would become a special token that matches everywhere, and
			// Encode would loop on it forever.
			return nil, fmt.Errorf("%w: %s: id %d is the empty string", ErrBadTokenizer, src, id)
		}
		if id < 0 || id >= math.MaxInt32 {
			return nil, fmt.Errorf("%w: %s: token %q has id %d, out of range", ErrBadTokenizer, src, k, id)
		}
		if o, dup := owner[id]; dup {
			return nil, fmt.Errorf("%w: %s: id %d is used by both %q and %q", ErrBadTokenizer, src, id, o, k)
		}
		owner[id] = k
	}
	isAdded := map[int64]bool{}
	for _, a := range added {
		if a.content == "" {
			return nil, fmt.Errorf("%w: %s: empty content", ErrBadTokenizer, a.where)
		}
		if a.id < 0 || a.id >= math.MaxInt32 {
			return nil, fmt.Errorf("%w: %s: id %d out of range", ErrBadTokenizer, a.where, a.id)
		}
		if isAdded[a.id] {
			return nil, fmt.Errorf("%w: %s: id %d is listed twice", ErrBadTokenizer, a.where, a.id)
		}
		if o, used := owner[a.id]; used && o != a.content {
			return nil, fmt.Errorf("%w: %s: id %d of %q is already %q in the vocabulary", ErrBadTokenizer, a.where, a.id, a.content, o)
		}
		if id, in := vocab[a.content]; in && id != a.id {
			return nil, fmt.Errorf("%w: %s: %q has id %d, but %d in the vocabulary", ErrBadTokenizer, a.where, a.content, a.id, id)
		}
		owner[a.id] = a.content
		isAdded[a.id] = true
	}
	n := len(owner)
	for id := range owner {
		if id >= int64(n) {
			return nil, fmt.Errorf("%w: %s: ids are not 0..%d: %d tokens, but id %d (%q)", ErrBadTokenizer, src, n-1, n, id, owner[id])
		}
	}

	t := &Tokenizer{
		raw:     make([]string, n),
		visible: make([]string, n),
		vocab:   make(map[string]int32, n),
		special: make([]bool, n),
		merges:  make(map[uint64]uint64, len(merges)),
		eot:     -1,
	}
	literal := make([]bool, n) // not in the byte-level alphabet
	for id64, s := range owner {
		id := int32(id64)
		t.visible[id] = s
		t.vocab[s] = id
		if isAdded[id64] {
			t.raw[id], t.special[id] = s, true
			continue
		}
		if b, ok := visibleToBytes(s); ok {
			t.raw[id] = string(b)
		} else {
			// Outside the alphabet: decoded as written. Hugging Face never produces
			// such an entry from text unless it is an added token.
			t.raw[id], literal[id] = s, true
		}
	}
	for b := 0; b < 256; b++ {
		v := string(byteToRune[b])
		id, ok := t.vocab[v]
		if !ok || t.special[id] {
			return nil, fmt.Errorf("%w: %s: no token for byte 0x%02x (%q): a byte-level vocabulary needs all 256", ErrBadTokenizer, src, b, v)
		}
		t.byteID[b] = id
	}
	produced := make([]bool, n)
	t.mergeList = make([][2]int32, 0, len(merges))
	for rank, m := range merges {
		a, okA := t.vocab[m.a]
		b, okB := t.vocab[m.b]
		out, okOut := t.vocab[m.a+m.b]
		switch {
		case !okA:
			return nil, fmt.Errorf("%w: %s: merge %q %q: %q is not in the vocabulary", ErrBadTokenizer, m.where, m.a, m.b, m.a)
		case !okB:
			return nil, fmt.Errorf("%w: %s: merge %q %q: %q is not in the vocabulary", ErrBadTokenizer, m.where, m.a, m.b, m.b)
		case !okOut:
			return nil, fmt.Errorf("%w: %s: merge %q %q: the result %q is not in the vocabulary", ErrBadTokenizer, m.where, m.a, m.b, m.a+m.b)
		}
		// A repeated pair keeps its later rank, as in GPT-2's and Hugging Face's loaders.
		t.merges[pairKey(a, b)] = uint64(rank)<<32 | uint64(uint32(out))
		t.mergeList = append(t.mergeList, [2]int32{a, b})
		produced[out] = true
	}
	for id := int32(0); int(id) < n; id++ {
		if t.special[id] {
			continue
		}
		single := len(t.raw[id]) == 1 && t.byteID[t.raw[id][0]] == id
		if unreachableIsSpecial && (literal[id] || (!single && !produced[id])) {
			t.raw[id], t.special[id] = t.visible[id], true
		}
	}
	for id, sp := range t.special {
		if sp {
			t.specials = append(t.specials, specialToken{content: t.visible[id], id: int32(id)})
		}
	}
	sortSpecials(t.specials)
	if id, ok := t.vocab[EndOfText]; ok {
		t.eot = id
	}
	return t, nil
}
