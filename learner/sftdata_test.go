package learner

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/policy/tokenizer"
)

func byteTok(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Train(strings.NewReader("x"), 257, nil, nil) // bytes + <|endoftext|>: one id per character
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func parseRecord(t *testing.T, enc sftEncoder, line string) (sftExample, error) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		t.Fatal(err)
	}
	return enc.parse(obj)
}

// maskString shows an example as its text with the loss tokens in [brackets]
// and end-of-text as $.
func maskString(tok *tokenizer.Tokenizer, ex sftExample) string {
	var sb strings.Builder
	in := false
	for i, id := range ex.Tokens {
		if ex.Loss[i] != in {
			sb.WriteString(map[bool]string{true: "[", false: "]"}[ex.Loss[i]])
			in = ex.Loss[i]
		}
		if id == tok.EOT() {
			sb.WriteString("$")
		} else {
			sb.WriteString(tok.Decode([]int32{id}))
		}
	}
	if in {
		sb.WriteString("]")
	}
	return sb.String()
}

// TestSFTEncoder: the loss mask covers the response and its end-of-text only;
// the template wraps the prompt; chats render one turn a line with the loss on
// the assistant's turns; long prompts lose their start; what cannot be
// learned is refused with a reason.
func TestSFTEncoder(t *testing.T) {
	tok := byteTok(t)
	enc := sftEncoder{tok: tok, template: "Q: {prompt}\nA:", seqLen: 64}
	cases := []struct {
		line, want string
	}{
		{`{"prompt": "12+34=", "response": "46"}`, "Q: 12+34=\nA:[46$]"},
		{`{"prompt": "", "response": "46", "extra": 1}`, "Q: \nA:[46$]"},
		{`{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}`,
			"system: be brief\nuser: hi\nassistant: [yo\n$]"},
		{`{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}`,
			"user: a\nassistant: [b\n]user: c\n$"},
	}
	for _, c := range cases {
		ex, err := parseRecord(t, enc, c.line)
		if err != nil {
			t.Fatalf("%s: %v", c.line, err)
		}
		if got := maskString(tok, ex); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.line, got, c.want)
		}
	}

	// Truncation: the prompt loses its start; the response may not be cut.
	short := sftEncoder{tok: tok, template: "{prompt}", seqLen: 6}
	ex, err := parseRecord(t, short, `{"prompt": "123456789=", "response": "ab"}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := maskString(tok, ex); got != "789=[ab$]" {
		t.Fatalf("truncated: got %q, want %q", got, "789=[ab$]")
	}
	bad := []struct{ line, want string }{
		{`{"prompt": "1", "response": "abcdefg"}`, "more than seq_len-1"},
		{`{"prompt": "", "response": "ab"}`, "prompt is empty"},
		{`{"prompt": "x", "response": ""}`, `field "response" is empty`},
		{`{"prompt": "x"}`, `missing field "response"`},
		{`{"prompt": 3, "response": "y"}`, `field "prompt": want a string, got a number`},
		{`{"response": "y"}`, `missing field "prompt"`},
		{`{"messages": []}`, `"messages" is empty`},
		{`{"messages": {"role": "user"}}`, "want an array, got an object"},
		{`{"messages": [{"role": "bot", "content": "x"}]}`, `role "bot": allowed values: system, user, assistant`},
		{`{"messages": [{"role": "user", "content": "x"}]}`, "no tokens to learn"},
		{`{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null}]}`, `messages[1]: field "content": want a string, got null`},
	}
	for _, c := range bad {
		if _, err := parseRecord(t, short, c.line); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.line, err, c.want)
		}
	}
}

// TestSFTBatch: examples are right-padded to the longest in the batch, pads
// have mask 0 and a valid target, and the mask follows the loss tokens.
func TestSFTBatch(t *testing.T) {
	tok := byteTok(t)
	enc := sftEncoder{tok: tok, template: "{prompt}", seqLen: 16}
	var exs []sftExample
	for _, l := range []string{`{"prompt": "1+2=", "response": "3"}`, `{"prompt": "10+20=", "response": "30"}`} {
		ex, err := parseRecord(t, enc, l)
		if err != nil {
			t.Fatal(err)
		}
		exs = append(exs, ex)
	}
	d := &sftData{B: 2, pad: tok.EOT()}
	b := newLMBatch(2, 16, true)
	d.pack(&b, exs)
	// "1+2=3$" (6 tokens, 5 positions) and "10+20=30$" (9 tokens, 8 positions).
	if b.B != 2 || b.T != 8 || b.Real != 13 || b.LossTokens != 5 {
		t.Fatalf("batch B=%d T=%d real=%d loss=%d, want 2, 8, 13, 5", b.B, b.T, b.Real, b.LossTokens)
	}
	wantMask := []float32{0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1}
	for i, m := range wantMask {
		if b.Mask[i] != m {
			t.Fatalf("mask %v, want %v", b.Mask, wantMask)
		}
	}
	for i := 5; i < 8; i++ {
		if b.Tokens[i] != tok.EOT() || b.Targets[i] != tok.EOT() {
			t.Fatalf("pad %d: token %d target %d, want end-of-text", i, b.Tokens[i], b.Targets[i])
		}
	}
	if got := tok.Decode(b.Targets[8:15]); got != "0+20=30" {
		t.Fatalf("row 2 targets %q", got)
	}
}

func writeLines(t *testing.T, dir, name string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadJSONLMalformed: every malformed line is reported as file:line:
// reason and counted; more than max_bad_fraction refuses the load; a glob
// that matches nothing is an error naming it.
func TestLoadJSONLMalformed(t *testing.T) {
	dir := t.TempDir()
	path := writeLines(t, dir, "a.jsonl",
		`{"prompt": "1+1=", "response": "2"}`,
		`{"prompt": "1+2=", "response": "3"`, // 2: bad JSON
		``,                                   // blank: not a record
		`{"prompt": "1+3="}`,                 // 4: missing response
		`{"prompt": "1+4=", "response": 5}`,  // 5: wrong type
		`["prompt", "response"]`,             // 6: not an object
		`{"prompt": "1+5=", "response": ""}`, // 7: empty
		`{"prompt": "1+6=", "response": "7"}`,
	)
	enc := sftEncoder{tok: byteTok(t), template: "{prompt}", seqLen: 32}
	parse := func(obj map[string]json.RawMessage) error { _, err := enc.parse(obj); return err }

	rep, err := LoadJSONL("data.train", []string{path}, 0.9, parse)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		path + ":2: bad JSON",
		path + `:4: missing field "response"`,
		path + `:5: field "response": want a string, got a number`,
		path + ":6: want a JSON object, got an array",
		path + `:7: field "response" is empty`,
	}
	if rep.Lines != 7 || rep.Bad != 5 || len(rep.BadLines) != 5 {
		t.Fatalf("report %+v, want 7 lines, 5 bad", rep)
	}
	for i, w := range want {
		if got := rep.BadLines[i].Error(); !strings.HasPrefix(got, w) {
			t.Errorf("bad line %d: %q, want prefix %q", i, got, w)
		}
		if !errors.Is(rep.BadLines[i], ErrData) {
			t.Errorf("bad line %d does not wrap ErrData", i)
		}
	}

	_, err = LoadJSONL("data.train", []string{path}, 0.5, parse)
	if !errors.Is(err, ErrData) || !strings.Contains(err.Error(), "5 of 7 lines are malformed") || !strings.Contains(err.Error(), path+":2:") {
		t.Fatalf("over max_bad_fraction: %v, want a refusal listing the bad lines", err)
	}
	_, err = LoadJSONL("data.val", []string{filepath.Join(dir, "*.json")}, 0, parse)
	if !errors.Is(err, ErrData) || !strings.Contains(err.Error(), `data.val: glob "`) || !strings.Contains(err.Error(), "matches no file") {
		t.Fatalf("empty glob: %v", err)
	}
	empty := writeLines(t, dir, "empty.jsonl", "", "  ")
	if _, err := LoadJSONL("data.train", []string{empty}, 0, parse); err == nil || !strings.Contains(err.Error(), "no data lines") {
		t.Fatalf("file without records: %v", err)
	}

	// Through NewSFT: the default max_bad_fraction of 0 refuses the file.
	mc, dc, tc := sftSetup(t)
	dc.Train = []string{path}
	if _, err := NewSFT(mc, dc, tc, 1, nil); !errors.Is(err, ErrData) || !strings.Contains(err.Error(), path+":2: bad JSON") {
		t.Fatalf("NewSFT on a bad file: %v", err)
	}
}

// TestSFTValFraction: without val files the last val_fraction of the
// examples is held out.
func TestSFTValFraction(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	for i := range 20 {
		lines = append(lines, `{"prompt": "`+strings.Repeat("1", i+1)+`=", "response": "x"}`)
	}
	path := writeLines(t, dir, "a.jsonl", lines...)
	dc := DefaultDataConfig()
	dc.Train, dc.ValFraction = []string{filepath.Join(dir, "*.jsonl")}, 0.1
	tc := DefaultTrainConfig()
	tc.BatchSize, tc.SeqLen, tc.EvalBatches = 4, 32, 2
	d, rep, err := loadSFTData(dc, tc, byteTok(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TrainItems != 18 || rep.ValItems != 2 || len(rep.Files) != 1 || rep.Files[0] != path {
		t.Fatalf("report %+v, want 18 train, 2 held out, files [%s]", rep, path)
	}
	if len(d.val[1].Tokens) != 23 { // 20 ones, "=", "x", end-of-text
		t.Fatalf("held-out examples are not the last ones: %d tokens", len(d.val[1].Tokens))
	}
	if len(d.eval) != 1 || d.eval[0].B != 2 {
		t.Fatalf("%d eval batches, want 1 of the 2 held-out examples", len(d.eval))
	}
}
