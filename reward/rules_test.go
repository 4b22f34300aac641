package reward

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
)

func TestRuleExactMatch(t *testing.T) {
	items := []Item{
		{ResponseText: "80", Answer: "80"},
		{ResponseText: " 80\n", Answer: "80 "},
		{ResponseText: "81", Answer: "80"},
		{ResponseText: "", Answer: "80"},
		{ResponseText: "8 0", Answer: "80"},
	}
	want := []float64{1, 1, 0, 0, 0}
	got, err := ExactMatch{}.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range got {
		if s.Total != want[i] || len(s.Parts) != 1 || s.Parts[PartExactMatch] != want[i] {
			t.Errorf("item %d: got %+v, want total and %s %v", i, s, PartExactMatch, want[i])
		}
	}
	for _, answer := range []string{"", " \n"} {
		_, err = ExactMatch{}.Score([]Item{{ResponseText: "1", Answer: "1"}, {ResponseText: "1", Answer: answer}})
		if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "item 1") || !strings.Contains(err.Error(), `"answer"`) {
			t.Fatalf("answer %q: got %v, want ErrInput naming item 1 and the answer field", answer, err)
		}
	}
}

func TestRuleLength(t *testing.T) {
	got, err := Length{}.Score([]Item{{Response: []int32{1, 2, 3}}, {}, {Response: []int32{7}, ResponseText: "long text"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{3, 0, 1} {
		if got[i].Total != want || got[i].Parts[PartLength] != want {
			t.Errorf("item %d: got %+v, want %v", i, got[i], want)
		}
	}
}

func TestRuleFormat(t *testing.T) {
	f := Format{Pattern: regexp.MustCompile(`^[0-9]+$`)}
	got, err := f.Score([]Item{{ResponseText: "123"}, {ResponseText: "12a"}, {ResponseText: ""}, {ResponseText: " 1"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{1, 0, 0, 0} {
		if got[i].Total != want || got[i].Parts[PartFormat] != want {
			t.Errorf("item %d: got %+v, want %v", i, got[i], want)
		}
	}
	// Unanchored patterns match anywhere, as regexp does.
	got, _ = Format{Pattern: regexp.MustCompile(`=`)}.Score([]Item{{ResponseText: "a=b"}})
	if got[0].Total != 1 {
		t.Fatalf("unanchored: got %+v", got[0])
	}
	if _, err := (Format{}).Score([]Item{{}}); !errors.Is(err, ErrInput) {
		t.Fatalf("no pattern: got %v, want ErrInput", err)
	}
}

// constScorer scores every item with one value, or fails.
type constScorer struct {
	v   float64
	n   int // scores returned, -1 = one per item
	err error
}

func (c constScorer) Score(items []Item) ([]Score, error) {
	if c.err != nil {
		return nil, c.err
	}
	n := c.n
	if n < 0 {
		n = len(items)
	}
	out := make([]Score, n)
	for i := range out {
		out[i] = Score{Total: c.v, Parts: map[string]float64{"inner": c.v}}
	}
	return out, nil
}

func TestScorerSum(t *testing.T) {
	re := regexp.MustCompile(`^[0-9]+$`)
	s := NewSum(
		Component{Name: PartRM, Weight: 0.5, Scorer: constScorer{v: 2, n: -1}},
		Component{Name: PartExactMatch, Weight: 1, Scorer: ExactMatch{}},
		Component{Name: PartLength, Weight: -0.1, Scorer: Length{}},
		Component{Name: PartFormat, Weight: 2, Scorer: Format{Pattern: re}},
		Component{Name: PartFormat, Weight: 3, Scorer: Format{Pattern: regexp.MustCompile(`1`)}},
		Component{Name: PartFormat, Weight: 0, Scorer: Format{Pattern: regexp.MustCompile(`x`)}},
	)
	var names []string
	for _, c := range s.Components() {
		names = append(names, c.Name)
	}
	if got, want := strings.Join(names, ","), "rm,exact_match,length,format,format#2,format#3"; got != want {
		t.Fatalf("names %s, want %s", got, want)
	}
	items := []Item{
		{Response: []int32{5, 6}, ResponseText: "12", Answer: "12"},
		{Response: []int32{5, 6, 7, 8}, ResponseText: "x y", Answer: "12"},
	}
	got, err := s.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	wantParts := []map[string]float64{
		{"rm": 2, "exact_match": 1, "length": 2, "format": 1, "format#2": 1, "format#3": 0},
		{"rm": 2, "exact_match": 0, "length": 4, "format": 0, "format#2": 0, "format#3": 1},
	}
	weights := []float64{0.5, 1, -0.1, 2, 3, 0}
	for i, want := range wantParts {
		var total float64
		for k, name := range names {
			total += weights[k] * want[name]
		}
		if math.Abs(got[i].Total-total) > 1e-12 || len(got[i].Parts) != len(want) {
			t.Errorf("item %d: got %+v, want total %v and parts %v", i, got[i], total, want)
		}
		for name, v := range want {
			if got[i].Parts[name] != v {
				t.Errorf("item %d part %s: got %v, want %v (unweighted)", i, name, got[i].Parts[name], v)
			}
		}
	}

	// A component's error names it; a wrong count of scores is refused.
	boom := errors.New("boom")
	if _, err := NewSum(Component{Name: "rm", Weight: 1, Scorer: constScorer{err: boom}}).Score(items); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "rm: ") {
		t.Fatalf("failing component: got %v", err)
	}
	if _, err := NewSum(Component{Name: "exact_match", Weight: 1, Scorer: ExactMatch{}}).Score([]Item{{ResponseText: "1"}}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "exact_match: ") {
		t.Fatalf("missing answer: got %v", err)
	}
	if _, err := NewSum(Component{Name: "rm", Weight: 1, Scorer: constScorer{n: 1}}).Score(items); !errors.Is(err, ErrInput) {
		t.Fatalf("short scores: got %v, want ErrInput", err)
	}
	if got, err := NewSum(Component{Name: "length", Weight: 1, Scorer: Length{}}).Score(nil); err != nil || len(got) != 0 {
		t.Fatalf("no items: got %v, %v", got, err)
	}
}

func TestScorerMissingEOS(t *testing.T) {
	inner := NewSum(Component{Name: PartLength, Weight: 1, Scorer: Length{}})
	sc := MissingEOS{Inner: inner, Penalty: -1.5}
	items := []Item{
		{Response: []int32{1, 2}, Stopped: true},
		{Response: []int32{1, 2, 3}, Stopped: false},
	}
	got, err := sc.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	want := []Score{
		{Total: 2, Parts: map[string]float64{PartLength: 2, PartMissingEOS: 0}},
		{Total: 3 - 1.5, Parts: map[string]float64{PartLength: 3, PartMissingEOS: 1}},
	}
	for i := range want {
		if got[i].Total != want[i].Total || len(got[i].Parts) != len(want[i].Parts) {
			t.Fatalf("item %d: got %+v, want %+v", i, got[i], want[i])
		}
		for k, v := range want[i].Parts {
			if got[i].Parts[k] != v {
				t.Fatalf("item %d part %s: got %v, want %v", i, k, got[i].Parts[k], v)
			}
		}
	}
	// A scorer whose scores have no Parts still gets the flag.
	got, err = MissingEOS{Inner: nilParts{}, Penalty: -1}.Score(items[1:])
	if err != nil || got[0].Total != -1 || got[0].Parts[PartMissingEOS] != 1 {
		t.Fatalf("nil parts: got %+v, %v", got, err)
	}
	boom := errors.New("boom")
	if _, err := (MissingEOS{Inner: constScorer{err: boom}, Penalty: -1}).Score(items); !errors.Is(err, boom) {
		t.Fatalf("inner error: got %v", err)
	}
}

type nilParts struct{}

func (nilParts) Score(items []Item) ([]Score, error) { return make([]Score, len(items)), nil }
