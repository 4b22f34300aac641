package reward

import (
	"fmt"
	"regexp"
	"strings"
)

// Part names: the keys of Score.Parts, which metrics report as score_<name>.
const (
	PartRM         = "rm"          // a reward model's score
	PartExactMatch = "exact_match" // 1 if the response is the answer
	PartLength     = "length"      // response tokens
	PartFormat     = "format"      // 1 if the response matches a pattern
	PartMissingEOS = "missing_eos" // 1 if the completion was truncated
)

var (
	_ Scorer = ExactMatch{}
	_ Scorer = Length{}
	_ Scorer = Format{}
	_ Scorer = (*Sum)(nil)
	_ Scorer = MissingEOS{}
)

// one returns the Score of a single named part.
func one(name string, v float64) Score {
	return Score{Total: v, Parts: map[string]float64{name: v}}
}

func indicator(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// ExactMatch scores 1 when the response, trimmed of surrounding white space,
// equals the item's answer trimmed likewise, else 0. Every item needs an
// answer: the prompts file must have an "answer" field.
type ExactMatch struct{}

// Score implements Scorer. An item whose Answer is empty (or only white space,
// which no trimmed response but an empty one could match) is an ErrInput
// naming its index.
func (ExactMatch) Score(items []Item) ([]Score, error) {
	out := make([]Score, len(items))
	for i, it := range items {
		want := strings.TrimSpace(it.Answer)
		if want == "" {
			return nil, fmt.Errorf("%w: item %d (prompt %q) has no answer: the %s rule needs an \"answer\" field in every line of the prompts file",
				ErrInput, i, it.PromptText, PartExactMatch)
		}
		out[i] = one(PartExactMatch, indicator(strings.TrimSpace(it.ResponseText) == want))
	}
	return out, nil
}

// Length scores the response's length in tokens (end-of-text not counted);
// with a negative weight in a Sum it is a length penalty.
type Length struct{}

// Score implements Scorer.
func (Length) Score(items []Item) ([]Score, error) {
	out := make([]Score, len(items))
	for i, it := range items {
		out[i] = one(PartLength, float64(len(it.Response)))
	}
	return out, nil
}

// Format scores 1 when Pattern matches the response text, else 0. The pattern
// is unanchored, as regexp.MatchString is: write ^...$ to match the whole.
type Format struct {
	Pattern *regexp.Regexp // e.g. regexp.MustCompile(`^[0-9]+$`)
}

// Score implements Scorer.
func (f Format) Score(items []Item) ([]Score, error) {
	if f.Pattern == nil {
		return nil, fmt.Errorf("%w: the %s rule has no pattern", ErrInput, PartFormat)
	}
	out := make([]Score, len(items))
	for i, it := range items {
		out[i] = one(PartFormat, indicator(f.Pattern.MatchString(it.ResponseText)))
	}
	return out, nil
}

// Component is one term of a Sum.
type Component struct {
	Name   string  // the part's name in Score.Parts, e.g. PartRM
	Weight float64 // multiplies the component's Total in the Sum's Total
	Scorer Scorer
}

// Sum is a weighted sum of scorers: Total = Σ_k Weight_k·Total_k, and Parts
// holds every component's UNweighted Total under its name, so that metrics
// report each source on its own scale (a component's own Parts are not
// carried over: each component is one part).
type Sum struct {
	comps []Component
}

// NewSum returns the weighted sum of comps. A name used before gets a suffix
// counting its uses ("format", "format#2", ...), so two rules of one type
// keep separate parts.
func NewSum(comps ...Component) *Sum {
	s := &Sum{comps: make([]Component, len(comps))}
	seen := map[string]bool{}
	for i, c := range comps {
		name := c.Name
		for n := 2; seen[name]; n++ {
			name = fmt.Sprintf("%s#%d", c.Name, n)
		}
		seen[name] = true
		c.Name = name
		s.comps[i] = c
	}
	return s
}

// Components returns the terms, with their final (deduplicated) names.
func (s *Sum) Components() []Component { return s.comps }

// Score implements Scorer; a component's error is returned wrapped with the
// component's name.
func (s *Sum) Score(items []Item) ([]Score, error) {
	out := make([]Score, len(items))
	for i := range out {
		out[i].Parts = make(map[string]float64, len(s.comps)+1)
	}
	for _, c := range s.comps {
		sc, err := c.Scorer.Score(items)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		if len(sc) != len(items) {
			return nil, fmt.Errorf("%w: %s returned %d scores for %d items", ErrInput, c.Name, len(sc), len(items))
		}
		for i, v := range sc {
			out[i].Total += c.Weight * v.Total
			out[i].Parts[c.Name] = v.Total
		}
	}
	return out, nil
}

// MissingEOS wraps a scorer: an item that did not end with end-of-text
// (Stopped false: it ran into max_new_tokens) gets Penalty added to its Total,
// e.g. -1. Parts[PartMissingEOS] is 1 for such an item and 0 otherwise.
type MissingEOS struct {
	Inner   Scorer
	Penalty float64 // added to Total when truncated, e.g. -1
}

// Score implements Scorer.
func (m MissingEOS) Score(items []Item) ([]Score, error) {
	out, err := m.Inner.Score(items)
	if err != nil {
		return nil, err
	}
	if len(out) != len(items) {
		return nil, fmt.Errorf("%w: the scorer returned %d scores for %d items", ErrInput, len(out), len(items))
	}
	for i, it := range items {
		miss := indicator(!it.Stopped)
		out[i].Total += m.Penalty * miss
		if out[i].Parts == nil {
			out[i].Parts = map[string]float64{}
		}
		out[i].Parts[PartMissingEOS] = miss
	}
	return out, nil
}
