package reward

import (
	"fmt"
	"slices"
)

var _ Scorer = (*RMScorer)(nil)

// RMScorer scores completions with a reward model: r(prompt tokens followed
// by response tokens), the sequence Encode builds from their texts, and
// Parts[PartRM] = r.
type RMScorer struct {
	Model *Model

	buf []int32 // the batch's sequences, end to end, reused between calls
}

// NewRMScorer returns a scorer for m. The scorer uses m's activations, so m
// must not be trained or scored by anyone else meanwhile.
func NewRMScorer(m *Model) *RMScorer { return &RMScorer{Model: m} }

// Score implements Scorer: it scores all items in one Model.Scores call.
//
// What Scores needs is made explicit here, item by item:
//   - no pad id: Hugging Face scores the last token that is not the pad
//     (end-of-text) id. Trailing pad ids (an end-of-text the caller left on)
//     are dropped, which every transformers version agrees on; a pad id
//     anywhere else is an error (versions differ on it, and Encode never makes
//     one: it means the policy's and the reward model's tokenizers differ).
//   - at most n_positions tokens: a longer sequence keeps its last MaxSeqLen
//     tokens, as Encode does, so the response's end is what gets scored.
//   - non-empty: an empty response scores the prompt alone; an item with
//     neither prompt nor response is an error.
//
// Ids outside the model's vocabulary are refused by Scores ("sequence i" is
// item i).
func (s *RMScorer) Score(items []Item) ([]Score, error) {
	m := s.Model
	maxLen := m.Trunk.Config.MaxSeqLen
	n := 0
	for _, it := range items {
		n += len(it.Prompt) + len(it.Response)
	}
	// One allocation for the batch, so that the appends below never move
	// the sequences already cut from it.
	s.buf = slices.Grow(s.buf[:0], n)
	seqs := make([][]int32, len(items))
	for i, it := range items {
		lo := len(s.buf)
		s.buf = append(append(s.buf, it.Prompt...), it.Response...)
		seq := s.buf[lo:]
		for m.PadID >= 0 && len(seq) > 0 && seq[len(seq)-1] == m.PadID {
			seq = seq[:len(seq)-1]
		}
		if len(seq) > maxLen {
			seq = seq[len(seq)-maxLen:]
		}
		if len(seq) == 0 {
			return nil, fmt.Errorf("%w: item %d has no tokens to score (its prompt and response are empty, end-of-text aside)", ErrInput, i)
		}
		if m.PadID >= 0 {
			if j := slices.Index(seq, m.PadID); j >= 0 {
				return nil, fmt.Errorf("%w: item %d holds the reward model's pad (end-of-text) id %d inside its last %d tokens, at %d: "+
					"the reward model scores the last token that is not one; do the policy and the reward model share a tokenizer?",
					ErrInput, i, m.PadID, len(seq), j)
			}
		}
		seqs[i] = seq
	}
	r, err := m.Scores(seqs)
	if err != nil {
		return nil, err
	}
	out := make([]Score, len(items))
	for i, v := range r {
		out[i] = one(PartRM, float64(v))
	}
	return out, nil
}
