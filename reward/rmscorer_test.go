package reward

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/policy"
)

// rmConfig fits the byte tokenizer (256 bytes + <|endoftext|>) with a short
// context, so that some items are cut.
var rmConfig = policy.Config{VocabSize: 257, MaxSeqLen: 8, NumLayers: 1, NumHeads: 2, Channels: 8, LayerNormEps: 1e-5}

// TestRMScorerMatchesEncode: the scorer, given the prompt's and the
// response's tokens, gives what Model.Scores gives for Encode of their texts,
// item by item, including cut sequences and an empty response.
func TestRMScorerMatchesEncode(t *testing.T) {
	tok := byteTokenizer(t)
	m := randomModel(t, rmConfig, 11, 0.3)
	m.PadID = tok.EOT()
	pairs := [][2]string{
		{"ab+", "ba"},
		{"12+34=", "46"},         // exactly MaxSeqLen
		{"aaaa+bbbb=", "ab"},     // prompt cut from the left
		{"p", "abcdefghij"},      // only the response's end is scored
		{"a=", ""},               // empty response: the prompt alone
		{"q:", "x<|endoftext|>"}, // the special token's text is text
		{"<|endoftext|>", "z"},   // in the prompt too
	}
	items := make([]Item, len(pairs))
	for i, p := range pairs {
		items[i] = Item{PromptText: p[0], Prompt: tok.EncodeOrdinary(p[0]), Response: tok.EncodeOrdinary(p[1]), ResponseText: p[1], Stopped: true}
	}
	sc := NewRMScorer(m)
	got, err := sc.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pairs {
		want, err := m.Scores([][]int32{Encode(tok, p[0], p[1], rmConfig.MaxSeqLen)})
		if err != nil {
			t.Fatal(err)
		}
		w := float64(want[0])
		if math.Abs(got[i].Total-w) > 1e-5*(1+math.Abs(w)) || got[i].Parts[PartRM] != got[i].Total || len(got[i].Parts) != 1 {
			t.Errorf("item %d %q: got %+v, want %s %v", i, p, got[i], PartRM, w)
		}
	}
	// A second call reuses the buffer and gives the same scores.
	again, err := sc.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if again[i].Total != got[i].Total {
			t.Fatalf("item %d: second call %v, first %v", i, again[i].Total, got[i].Total)
		}
	}
}

// TestRMScorerInputs: the pad id and the empty sequence are handled before
// Scores sees them.
func TestRMScorerInputs(t *testing.T) {
	tok := byteTokenizer(t)
	eot := tok.EOT()
	m := randomModel(t, rmConfig, 12, 0.3)
	m.PadID = eot
	sc := NewRMScorer(m)
	prompt, resp := tok.EncodeOrdinary("ab="), tok.EncodeOrdinary("ba")

	// A trailing end-of-text is dropped: the same score as without.
	got, err := sc.Score([]Item{
		{Prompt: prompt, Response: resp},
		{Prompt: prompt, Response: append(append([]int32{}, resp...), eot)},
		{Prompt: prompt, Response: []int32{eot}},
		{Prompt: prompt},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Total != got[1].Total || got[2].Total != got[3].Total {
		t.Fatalf("trailing pad changed the score: %v vs %v, %v vs %v", got[0].Total, got[1].Total, got[2].Total, got[3].Total)
	}

	// A pad inside the scored tokens is refused, naming the item; one in the
	// part cut off on the left does not matter.
	bad := []Item{{Prompt: prompt, Response: resp}, {Prompt: prompt, Response: []int32{eot, resp[0]}}}
	if _, err := sc.Score(bad); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "item 1") || !strings.Contains(err.Error(), "pad") {
		t.Fatalf("inner pad: got %v, want ErrInput naming item 1 and the pad", err)
	}
	long := append([]int32{eot}, tok.EncodeOrdinary("abababab")...)
	if _, err := sc.Score([]Item{{Prompt: long, Response: resp}}); err != nil {
		t.Fatalf("pad cut off on the left: %v", err)
	}

	// Nothing to score, and ids outside the vocabulary, are errors.
	if _, err := sc.Score([]Item{{Prompt: prompt}, {}}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "item 1") {
		t.Fatalf("empty item: got %v, want ErrInput naming item 1", err)
	}
	if _, err := sc.Score([]Item{{Prompt: prompt}, {Prompt: prompt}, {Prompt: prompt, Response: []int32{300}}}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "sequence 2") {
		t.Fatalf("bad id: got %v, want ErrInput naming sequence 2", err)
	}
	if got, err := sc.Score(nil); err != nil || len(got) != 0 {
		t.Fatalf("no items: got %v, %v", got, err)
	}

	// Without a known pad id the end-of-text id is an ordinary token.
	m.PadID = -1
	if _, err := sc.Score(bad); err != nil {
		t.Fatalf("no pad id: %v", err)
	}
}
