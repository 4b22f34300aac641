package tokenizer

import (
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrTrain is wrapped by Train's errors about its arguments.
var ErrTrain = errors.New("tokenizer: cannot train")

// Train learns a byte-level BPE vocabulary of vocabSize ids from the text in r:
// ids 0..255 are the bytes (in GPT-2's order, so they match GPT-2's first 256),
// then one id per learned merge, then the special tokens. "<|endoftext|>" is
// always a special (the first one, if specials does not list it). Specials in the
// text are cut out before counting, as Encode would. progress, if not nil, is
// called with the number of merged tokens so far and the number wanted.
//
// The text is pre-tokenized with GPT-2's rules and each distinct word counted;
// then the most frequent adjacent pair is merged, again and again, updating the
// pair counts only for the words that hold the pair. Ties go to the pair with the
// lower ids (left first), so the same text always gives the same merges. Training
// stops early, with a smaller vocabulary, when every word is a single token.
//
// r is read in chunks cut just before a newline that follows a non-space, where no
// GPT-2 word can straddle the cut, so memory is the distinct words, not the text
// (a special token that holds a newline could be cut; none of GPT-2's does).
func Train(r io.Reader, vocabSize int, specials []string, progress func(done, total int)) (*Tokenizer, error) {
	sp, err := trainSpecials(specials)
	if err != nil {
		return nil, err
	}
	want := vocabSize - 256 - len(sp)
	if want < 0 || vocabSize > 1<<30 {
		return nil, fmt.Errorf("%w: vocab size %d: need 256 byte tokens + %d specials, at most %d", ErrTrain, vocabSize, len(sp), 1<<30)
	}
	counts, err := countWords(r, sp)
	if err != nil {
		return nil, err
	}
	tr := newTrainer(counts)
	if progress != nil {
		progress(0, want)
	}
	for tr.added < want {
		if !tr.mergeBest() {
			break
		}
		if progress != nil {
			progress(tr.added, want)
		}
	}
	return tr.tokenizer(sp)
}

func trainSpecials(specials []string) ([]specialToken, error) {
	list := append([]string(nil), specials...)
	hasEOT := false
	for _, s := range list {
		hasEOT = hasEOT || s == EndOfText
	}
	if !hasEOT {
		list = append([]string{EndOfText}, list...)
	}
	seen := map[string]bool{}
	out := make([]specialToken, len(list))
	for i, s := range list {
		if s == "" {
			return nil, fmt.Errorf("%w: empty special token", ErrTrain)
		}
		if seen[s] {
			return nil, fmt.Errorf("%w: special token %q listed twice", ErrTrain, s)
		}
		seen[s] = true
		out[i] = specialToken{content: s, id: int32(i)} // id: order, for now
	}
	return out, nil
}

// countWords counts the distinct pre-tokenized words of r's text.
func countWords(r io.Reader, specials []specialToken) (map[string]int64, error) {
	sorted := append([]specialToken(nil), specials...)
	sortSpecials(sorted)
	counts := map[string]int64{}
	const chunk = 1 << 20
	buf := make([]byte, 0, 2*chunk)
	for eof := false; !eof; {
		if cap(buf)-len(buf) < chunk {
			buf = append(make([]byte, 0, 2*cap(buf)), buf...)
		}
		n, err := io.ReadFull(r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			eof = true
		case err != nil:
			return nil, fmt.Errorf("tokenizer: train: reading text: %w", err)
		}
		cut := len(buf)
		if !eof {
			if cut = safeCut(buf); cut < 0 {
				continue // no safe cut yet: read more
			}
		}
		countText(counts, string(buf[:cut]), sorted)
		buf = buf[:copy(buf, buf[cut:])]
	}
	return counts, nil
}

// safeCut returns the index of the last newline in b that follows a non-space
// rune, or -1. Every GPT-2 word ends before such a newline: a word is all white
// space or holds none but a leading ' '.
func safeCut(b []byte) int {
	for i := bytes.LastIndexByte(b, '\n'); i > 0; i = bytes.LastIndexByte(b[:i], '\n') {
		if r, _ := utf8.DecodeLastRune(b[:i]); !unicode.IsSpace(r) {
			return i
		}
	}
	return -1
}

func countText(counts map[string]int64, text string, specials []specialToken) {
	f := newSpecialFinder(specials, text)
	for pos := 0; pos < len(text); {
		end, next := len(text), len(text)
		if at, sp := f.next(pos); at >= 0 {
			end, next = at, at+len(sp.content)
		}
		for s := text[pos:end]; len(s) > 0; {
			n := nextPiece(s)
			w := s[:n]
			s = s[n:]
			if c, ok := counts[w]; ok {
				counts[w] = c + 1
			} else {
				counts[strings.Clone(w)] = 1 // Clone: w points into the whole chunk
			}
		}
		pos = next
	}
}

// trainer holds the words as token sequences and the counts of adjacent pairs.
type trainer struct {
	words []trainWord
	raw   []string         // id -> bytes
	index map[string]int32 // bytes -> id
	added int              // tokens made by merges

	pairs  map[uint64]int64   // pairKey -> occurrences, weighted by word count
	where  map[uint64][]int32 // pairKey -> words that hold it (may repeat or be stale)
	queue  pairHeap           // candidates, checked against pairs when popped
	seen   []int              // word -> last merge that visited it
	merges [][2]int32
}

type trainWord struct {
	syms  []int32
	count int64
}

func newTrainer(counts map[string]int64) *trainer {
	tr := &trainer{
		index: make(map[string]int32),
		pairs: make(map[uint64]int64),
		where: make(map[uint64][]int32),
	}
	var byteID [256]int32
	for id, b := range byteOrder {
		byteID[b] = int32(id)
		tr.raw = append(tr.raw, string([]byte{b}))
		tr.index[string([]byte{b})] = int32(id)
	}
	keys := make([]string, 0, len(counts))
	for w := range counts {
		keys = append(keys, w)
	}
	sort.Strings(keys)
	for wi, w := range keys {
		syms := make([]int32, len(w))
		for i := 0; i < len(w); i++ {
			syms[i] = byteID[w[i]]
		}
		tr.words = append(tr.words, trainWord{syms: syms, count: counts[w]})
		for i := 0; i+1 < len(syms); i++ {
			k := pairKey(syms[i], syms[i+1])
			tr.pairs[k] += counts[w]
			tr.where[k] = append(tr.where[k], int32(wi))
		}
	}
	tr.seen = make([]int, len(tr.words))
	for k, c := range tr.pairs {
		tr.queue = append(tr.queue, pairCount{key: k, count: c})
	}
	heap.Init(&tr.queue)
	return tr
}

// mergeBest merges the most frequent pair everywhere; false when none is left.
func (tr *trainer) mergeBest() bool {
	for tr.queue.Len() > 0 {
		top := heap.Pop(&tr.queue).(pairCount)
		cur := tr.pairs[top.key]
		if cur != top.count { // stale: counts only fall for old pairs, so requeue
			if cur > 0 {
				heap.Push(&tr.queue, pairCount{key: top.key, count: cur})
			}
			continue
		}
		tr.merge(int32(top.key>>32), int32(uint32(top.key)))
		return true
	}
	return false
}

func (tr *trainer) merge(a, b int32) {
	key := pairKey(a, b)
	raw := tr.raw[a] + tr.raw[b]
	id, ok := tr.index[raw]
	if !ok { // (a different split of the same bytes may have made it already)
		id = int32(len(tr.raw))
		tr.raw = append(tr.raw, raw)
		tr.index[raw] = id
		tr.added++
	}
	tr.merges = append(tr.merges, [2]int32{a, b})
	stamp := len(tr.merges)
	var touched []uint64
	for _, wi := range tr.where[key] {
		if tr.seen[wi] == stamp {
			continue
		}
		tr.seen[wi] = stamp
		w := &tr.words[wi]
		s := w.syms
		holds := false
		for i := 0; i+1 < len(s); i++ {
			if s[i] == a && s[i+1] == b {
				holds = true
				break
			}
		}
		if !holds {
			continue
		}
		// Take the word's pairs out, merge left to right, put them back: words are
		// short, so this is simpler than patching neighbours and as fast.
		for i := 0; i+1 < len(s); i++ {
			tr.pairs[pairKey(s[i], s[i+1])] -= w.count
		}
		j := 0
		for i := 0; i < len(s); j++ {
			if i+1 < len(s) && s[i] == a && s[i+1] == b {
				s[j] = id
				i += 2
			} else {
				s[j] = s[i]
				i++
			}
		}
		s = s[:j]
		w.syms = s
		for i := 0; i+1 < len(s); i++ {
			k := pairKey(s[i], s[i+1])
			tr.pairs[k] += w.count
			if s[i] == id || s[i+1] == id {
				tr.where[k] = append(tr.where[k], int32(wi))
				touched = append(touched, k)
			}
		}
	}
	delete(tr.where, key)
	delete(tr.pairs, key)
	// Only pairs with the new token can have grown; queue them at their new count
	// (duplicates are harmless: a popped entry whose count is stale is skipped).
	for _, k := range touched {
		if c := tr.pairs[k]; c > 0 {
			heap.Push(&tr.queue, pairCount{key: k, count: c})
		}
	}
}

// tokenizer turns the merges into a Tokenizer with the specials after them.
func (tr *trainer) tokenizer(specials []specialToken) (*Tokenizer, error) {
	vocab := make(map[string]int64, len(tr.raw)+len(specials))
	visible := make([]string, len(tr.raw))
	for id, raw := range tr.raw {
		visible[id] = bytesToVisible([]byte(raw))
		vocab[visible[id]] = int64(id)
	}
	added := make([]addedSpec, len(specials))
	for i, sp := range specials {
		if _, clash := vocab[sp.content]; clash {
			return nil, fmt.Errorf("%w: special token %q is spelled like a learned token", ErrTrain, sp.content)
		}
		id := int64(len(tr.raw) + i)
		vocab[sp.content] = id
		added[i] = addedSpec{content: sp.content, id: id, where: "special token"}
	}
	merges := make([]mergeSpec, len(tr.merges))
	for i, m := range tr.merges {
		merges[i] = mergeSpec{a: visible[m[0]], b: visible[m[1]], where: "trained merge"}
	}
	t, err := build("trained tokenizer", vocab, merges, added, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTrain, err) // a bug here, not bad input
	}
	return t, nil
}

type pairCount struct {
	key   uint64
	count int64
}

// pairHeap pops the highest count first, the lowest pair key on a tie.
type pairHeap []pairCount

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].count != h[j].count {
		return h[i].count > h[j].count
	}
	return h[i].key < h[j].key
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairCount)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
