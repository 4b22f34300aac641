package learner

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

// tinyRMConfig suits a byte tokenizer (256 bytes + <|endoftext|>).
var tinyRMConfig = policy.Config{VocabSize: 257, MaxSeqLen: 16, NumLayers: 1, NumHeads: 2, Channels: 8, LayerNormEps: 1e-5}

func rlByteTokenizer(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Train(strings.NewReader("0123456789+="), 257, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// saveTinyRM writes a fresh reward model with its tokenizer to a new
// directory and returns the model and the directory.
func saveTinyRM(t testing.TB, tok *tokenizer.Tokenizer, seed uint64) (*reward.Model, string) {
	t.Helper()
	m, err := reward.Fresh(tinyRMConfig, kernels.NewCPU(1), tok.EOT(), seed)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rm")
	if err := m.Save(dir, tok); err != nil {
		t.Fatal(err)
	}
	return m, dir
}

// TestBuildScorerConfigErrors: every bad reward section is an ErrConfig that
// names the field.
func TestBuildScorerConfigErrors(t *testing.T) {
	tok := rlByteTokenizer(t)
	lmDir := filepath.Join(t.TempDir(), "lm")
	lm, err := policy.New(tinyRMConfig, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	lm.Init(1)
	if err := policy.SaveWithTokenizer(lm, tok, lmDir); err != nil {
		t.Fatal(err)
	}
	rule := func(typ, pattern string) RuleConfig { return RuleConfig{Type: typ, Pattern: pattern} }
	cases := []struct {
		name  string
		rc    RewardConfig
		field string
		is    error // also wrapped, when not nil
	}{
		{"nothing", RewardConfig{Replicas: 1}, "reward:", nil},
		{"bad rule type", RewardConfig{Replicas: 1, Rules: []RuleConfig{rule("length", ""), rule("regex", "")}}, "reward.rules[1].type", nil},
		{"no pattern", RewardConfig{Replicas: 1, Rules: []RuleConfig{rule("format", "")}}, "reward.rules[0].pattern", nil},
		{"bad regexp", RewardConfig{Replicas: 1, Rules: []RuleConfig{rule("exact_match", ""), rule("format", "([0-9]+")}}, "reward.rules[1].pattern", nil},
		{"missing model dir", RewardConfig{Replicas: 1, ModelWeight: 1, Model: filepath.Join(t.TempDir(), "nope")}, "reward.model", reward.ErrBadCheckpoint},
		{"language model", RewardConfig{Replicas: 1, ModelWeight: 1, Model: lmDir}, "reward.model", reward.ErrNoHead},
		{"bad weight", RewardConfig{Replicas: 1, ModelWeight: math.NaN(), Rules: []RuleConfig{rule("length", "")}}, "reward.model_weight", nil},
	}
	for _, c := range cases {
		sc, err := BuildScorer(c.rc, kernels.NewCPU(1))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.field) || (c.is != nil && !errors.Is(err, c.is)) || sc != nil {
			t.Errorf("%s: got %v, %v; want ErrConfig naming %s", c.name, sc, err, c.field)
		}
	}
}

// TestBuildScorerRules: rules alone, weight 0 meaning 1, the EOS penalty, and
// no wrapper when the penalty is 0.
func TestBuildScorerRules(t *testing.T) {
	rc := DefaultRewardConfig()
	rc.Rules = []RuleConfig{
		{Type: "exact_match"},
		{Type: "length", Weight: -0.25},
		{Type: "format", Weight: 2, Pattern: `^[0-9]+$`},
		{Type: "format", Pattern: `7`},
	}
	sc, err := BuildScorer(rc, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	items := []reward.Item{
		{Response: []int32{1, 2}, ResponseText: "17", Answer: "17", Stopped: true},
		{Response: []int32{1, 2, 3, 4}, ResponseText: "1+1=", Answer: "2", Stopped: false},
	}
	got, err := sc.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	want := []reward.Score{
		{Total: 1 - 0.5 + 2 + 1, Parts: map[string]float64{"exact_match": 1, "length": 2, "format": 1, "format#2": 1, "missing_eos": 0}},
		{Total: 0 - 1 + 0 + 0 - 1, Parts: map[string]float64{"exact_match": 0, "length": 4, "format": 0, "format#2": 0, "missing_eos": 1}},
	}
	for i := range want {
		if math.Abs(got[i].Total-want[i].Total) > 1e-12 || len(got[i].Parts) != len(want[i].Parts) {
			t.Fatalf("item %d: got %+v, want %+v", i, got[i], want[i])
		}
		for k, v := range want[i].Parts {
			if got[i].Parts[k] != v {
				t.Fatalf("item %d part %s: got %v, want %v", i, k, got[i].Parts[k], v)
			}
		}
	}

	rc.MissingEOSPenalty = 0
	sc, err = BuildScorer(rc, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	got, err = sc.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got[1].Parts["missing_eos"]; ok || got[1].Total != -1 {
		t.Fatalf("penalty 0: got %+v, want no missing_eos part and total -1", got[1])
	}
	// exact_match needs answers.
	items[1].Answer = ""
	if _, err := sc.Score(items); !errors.Is(err, reward.ErrInput) || !strings.Contains(err.Error(), "item 1") {
		t.Fatalf("no answer: got %v", err)
	}
}

// TestBuildScorerFromCheckpoint: a saved reward model scores as the model
// itself does on Encode(prompt, response), weighted, with a rule and the EOS
// penalty added.
func TestBuildScorerFromCheckpoint(t *testing.T) {
	tok := rlByteTokenizer(t)
	m, dir := saveTinyRM(t, tok, 5)
	rc := DefaultRewardConfig()
	rc.Model = dir
	rc.ModelWeight = 0.5
	rc.Rules = []RuleConfig{{Type: "length", Weight: -0.1}}
	sc, err := BuildScorer(rc, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	pairs := []struct {
		prompt, response string
		stopped          bool
	}{
		{"12+34=", "46", true},
		{"9+9=", "", true},
		{"1+2+3+4+5+6+7+8=", "36", false}, // longer than n_positions: cut on the left
	}
	items := make([]reward.Item, len(pairs))
	for i, p := range pairs {
		items[i] = reward.Item{PromptText: p.prompt, Prompt: tok.EncodeOrdinary(p.prompt),
			Response: tok.EncodeOrdinary(p.response), ResponseText: p.response, Stopped: p.stopped}
	}
	got, err := sc.Score(items)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pairs {
		r, err := m.Scores([][]int32{reward.Encode(tok, p.prompt, p.response, tinyRMConfig.MaxSeqLen)})
		if err != nil {
			t.Fatal(err)
		}
		rm := float64(r[0])
		miss := 0.0
		if !p.stopped {
			miss = 1
		}
		n := float64(len(items[i].Response))
		total := 0.5*rm - 0.1*n - miss
		if math.Abs(got[i].Parts["rm"]-rm) > 1e-6*(1+math.Abs(rm)) || math.Abs(got[i].Total-total) > 1e-6*(1+math.Abs(total)) ||
			got[i].Parts["length"] != n || got[i].Parts["missing_eos"] != miss {
			t.Errorf("item %d %q: got %+v, want rm %v total %v", i, p.prompt, got[i], rm, total)
		}
	}
}
