package tokenizer

// BPE on one pre-tokenized word: start from one token per byte and repeatedly apply
// the lowest-ranked merge among adjacent pairs, the leftmost one on a tie, until no
// adjacent pair has a merge. This is Hugging Face's order (one merge at a time, by
// (rank, position)); for merge lists learned in order, as GPT-2's, it gives the same
// result as GPT-2's encoder.py, which merges every occurrence of the best pair at once.
//
// The symbols form a linked list and candidate merges sit in a min-heap checked
// lazily when popped, so a long word (a run of 100k spaces) costs O(n log n), not
// the O(n²) of rescanning for the best pair after every merge (bpeReference in the
// tests is that simple version).

type bpeSymbol struct {
	id         int32
	prev, next int32 // indices into the symbol slice; -1 at the ends
}

type bpeCandidate struct {
	rank  int32
	pos   int32 // index of the left symbol; orders equal ranks left to right
	left  int32 // ids expected at pos and its right neighbour when popped
	right int32
	out   int32 // merged id
}

type bpeScratch struct {
	syms []bpeSymbol
	heap []bpeCandidate
}

func (c bpeCandidate) less(d bpeCandidate) bool {
	return c.rank < d.rank || (c.rank == d.rank && c.pos < d.pos)
}

func (s *bpeScratch) push(c bpeCandidate) {
	h := append(s.heap, c)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].less(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	s.heap = h
}

func (s *bpeScratch) pop() bpeCandidate {
	h := s.heap
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && h[l].less(h[m]) {
			m = l
		}
		if r < n && h[r].less(h[m]) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	s.heap = h
	return top
}

// candidate pushes the merge of symbols i and i.next, if the vocabulary has one.
func (t *Tokenizer) candidate(s *bpeScratch, i int32) {
	if i < 0 {
		return
	}
	j := s.syms[i].next
	if j < 0 {
		return
	}
	a, b := s.syms[i].id, s.syms[j].id
	m, ok := t.merges[pairKey(a, b)]
	if !ok {
		return
	}
	s.push(bpeCandidate{rank: int32(m >> 32), pos: i, left: a, right: b, out: int32(uint32(m))})
}

// bpe appends the ids of word (at least one byte) to out.
func (t *Tokenizer) bpe(out []int32, word string, s *bpeScratch) []int32 {
	n := int32(len(word))
	s.syms = s.syms[:0]
	s.heap = s.heap[:0]
	for i := int32(0); i < n; i++ {
		next := i + 1
		if next == n {
			next = -1
		}
		s.syms = append(s.syms, bpeSymbol{id: t.byteID[word[i]], prev: i - 1, next: next})
	}
	for i := int32(0); i+1 < n; i++ {
		t.candidate(s, i)
	}
	for len(s.heap) > 0 {
		c := s.pop()
		sym := &s.syms[c.pos]
		// Stale if the left symbol was merged away or changed, or its neighbour did.
		if sym.id != c.left || sym.next < 0 || s.syms[sym.next].id != c.right {
			continue
		}
		r := sym.next
		sym.id = c.out
		sym.next = s.syms[r].next
		if sym.next >= 0 {
			s.syms[sym.next].prev = c.pos
		}
		s.syms[r].id = -1 // dead
		if sym.prev >= 0 {
			t.candidate(s, sym.prev)
		}
		t.candidate(s, c.pos)
	}
	for i := int32(0); i >= 0; i = s.syms[i].next {
		out = append(out, s.syms[i].id)
	}
	return out
}
