// Package tokenizer is a byte-level BPE tokenizer that gives exactly GPT-2's ids:
// GPT-2's pre-tokenisation regex (written out as a scanner), its byte-to-rune
// alphabet, merges applied by rank, and added (special) tokens such as
// "<|endoftext|>". It reads and writes GPT-2's vocab.json + merges.txt and Hugging
// Face's tokenizer.json, and trains new vocabularies (Train).
//
// A Tokenizer is safe for concurrent use: Encode's per-word cache is locked.
package tokenizer

import (
	"errors"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// ErrBadTokenizer is wrapped by every error about tokenizer files.
var ErrBadTokenizer = errors.New("tokenizer: bad tokenizer files")

// EndOfText is GPT-2's document separator, present in every trained vocabulary.
const EndOfText = "<|endoftext|>"

// Tokenizer maps text to token ids and back.
type Tokenizer struct {
	raw     []string         // id -> the bytes the token stands for (a special: its content)
	visible []string         // id -> the token as vocab.json spells it (a special: its content)
	vocab   map[string]int32 // visible -> id, specials included
	special []bool           // id -> an added token, matched in Encode's input as a whole
	byteID  [256]int32       // byte -> its single-byte token

	merges    map[uint64]uint64 // pairKey(left, right) -> rank<<32 | result id
	mergeList [][2]int32        // (left, right) in rank order, as loaded or trained

	specials []specialToken // longest content first
	eot      int32          // id of "<|endoftext|>", -1 if absent

	cache wordCache
}

type specialToken struct {
	content string
	id      int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// VocabSize is the number of ids, special tokens included, e.g. 50257 for GPT-2.
func (t *Tokenizer) VocabSize() int { return len(t.raw) }

// EOT is the id of "<|endoftext|>", or -1 if the vocabulary has none.
func (t *Tokenizer) EOT() int32 { return t.eot }

// TokenID looks a token up as vocab.json spells it, as Hugging Face's token_to_id
// does: special tokens by their content ("<|endoftext|>"), others in GPT-2's
// byte-level alphabet ("Ġthe" for " the").
func (t *Tokenizer) TokenID(s string) (int32, bool) {
	id, ok := t.vocab[s]
	return id, ok
}

// Encode returns the ids of text. Special tokens that appear in text become their
// ids, as Hugging Face tokenizers does for added tokens (and tiktoken with
// allowed_special="all"); the text between them is encoded as EncodeOrdinary does.
func (t *Tokenizer) Encode(text string) []int32 {
	out := make([]int32, 0, len(text)/4+1)
	if len(t.specials) == 0 {
		return t.appendOrdinary(out, text)
	}
	f := newSpecialFinder(t.specials, text)
	pos := 0
	for {
		at, sp := f.next(pos)
		if at < 0 {
			return t.appendOrdinary(out, text[pos:])
		}
		out = t.appendOrdinary(out, text[pos:at])
		out = append(out, sp.id)
		pos = at + len(sp.content)
	}
}

// EncodeOrdinary returns the ids of text with no special-token handling:
// "<|endoftext|>" in text is encoded as the plain characters it is made of
// (tiktoken's encode_ordinary).
func (t *Tokenizer) EncodeOrdinary(text string) []int32 {
	return t.appendOrdinary(make([]int32, 0, len(text)/4+1), text)
}

// appendOrdinary pre-tokenizes text and appends each word's BPE ids.
func (t *Tokenizer) appendOrdinary(out []int32, text string) []int32 {
	var s bpeScratch
	c := &t.cache
	// Hold the read lock across a batch of words rather than per lookup (the
	// atomics were an eighth of the time), but let writers in between batches.
	const batch = 1024
	c.mu.RLock()
	for k := 0; len(text) > 0; k++ {
		if k == batch {
			c.mu.RUnlock()
			c.mu.RLock()
			k = 0
		}
		n := nextPiece(text)
		word := text[:n]
		text = text[n:]
		if n == 1 {
			out = append(out, t.byteID[word[0]])
			continue
		}
		if ids, ok := c.m[word]; ok {
			out = append(out, ids...)
			continue
		}
		c.mu.RUnlock()
		start := len(out)
		out = t.bpe(out, word, &s)
		c.put(word, out[start:])
		c.mu.RLock()
	}
	c.mu.RUnlock()
	return out
}

// Decode returns the text of ids: the exact inverse of Encode for valid UTF-8
// text. Bytes that do not form valid UTF-8 (ids cut mid-character, or chosen by a
// sampler) become U+FFFD as in Hugging Face's decoder (Python's errors="replace"),
// and so does an id outside the vocabulary.
func (t *Tokenizer) Decode(ids []int32) string {
	buf := make([]byte, 0, len(ids)*4)
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.raw) {
			buf = append(buf, "\uFFFD"...)
			continue
		}
		buf = append(buf, t.raw[id]...)
	}
	if utf8.Valid(buf) {
		return string(buf)
	}
	return string(appendLossyUTF8(make([]byte, 0, len(buf)+8), buf))
}

// specialFinder finds the leftmost special token at or after a position, the
// longest one where several start at the same place. It remembers each token's
// next occurrence, so a long text with many specials is scanned once per token.
type specialFinder struct {
	specials []specialToken
	text     string
	nextAt   []int // per special: next occurrence at or after lastFrom; -1 none left
}

func newSpecialFinder(specials []specialToken, text string) *specialFinder {
	f := &specialFinder{specials: specials, text: text, nextAt: make([]int, len(specials))}
	for i := range f.nextAt {
		f.nextAt[i] = -2 // not searched yet
	}
	return f
}

func (f *specialFinder) next(pos int) (int, specialToken) {
	best, bestI := -1, -1
	for i, sp := range f.specials {
		at := f.nextAt[i]
		if at == -2 || (at >= 0 && at < pos) {
			at = -1
			if k := strings.Index(f.text[pos:], sp.content); k >= 0 {
				at = pos + k
			}
			f.nextAt[i] = at
		}
		// specials are sorted longest first, so a strict < keeps the longest at a tie.
		if at >= 0 && (best < 0 || at < best) {
			best, bestI = at, i
		}
	}
	if bestI < 0 {
		return -1, specialToken{}
	}
	return best, f.specials[bestI]
}

func sortSpecials(s []specialToken) {
	sort.SliceStable(s, func(i, j int) bool {
		if len(s[i].content) != len(s[j].content) {
			return len(s[i].content) > len(s[j].content)
		}
		return s[i].content < s[j].content
	})
}

// wordCache remembers the ids of words already encoded: natural text repeats a few
// thousand words, so after warm-up Encode is mostly the pre-tokenizer and map hits.
// It is dropped whole when full, which bounds memory on adversarial input.
type wordCache struct {
	mu sync.RWMutex
	m  map[string][]int32
}

const (
	cacheMaxWords   = 1 << 17 // about 10-20 MB at most
	cacheMaxWordLen = 256     // longer words are rare and would only bloat the cache
)

func (c *wordCache) put(w string, ids []int32) {
	if len(w) > cacheMaxWordLen {
		return
	}
	own := append([]int32(nil), ids...)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= cacheMaxWords {
		c.m = make(map[string][]int32, 1024)
	}
	c.m[strings.Clone(w)] = own // Clone: w points into the caller's text
	c.mu.Unlock()
}
