package learner

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/policy"
)

// The data readers' fuzz targets: arbitrary file contents give records, or
// an error that wraps ErrData or ErrConfig (and names file:line when lines
// are malformed); never a panic. Their seeds run as ordinary tests under
// `go test`; `make fuzz` explores past them, and writes a failure to
// testdata/fuzz/<target>/ (commit it with the fix).

// fuzzJSONLSeeds are lines that reach every branch of the JSONL readers.
var fuzzJSONLSeeds = []string{
	`{"prompt": "1+1=", "response": "2"}`,
	`{"prompt": "", "response": "x", "chosen": "2", "rejected": "3", "kind": "digit", "task": "addition", "answer": "2"}`,
	`{"prompt": "1+2=", "chosen": "3", "rejected": "4"}`,
	`{"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}`,
	`{"messages": [{"role": "assistant", "content": "first"}]}`,
	`{"messages": [{"role": "user", "content": "u"}, {"role": "tool", "content": "t"}]}`,
	`{"messages": []}`,
	`{"messages": "hi"}`,
	`{"messages": [1, null]}`,
	`{"prompt": "1+3="}`,
	`{"prompt": "1+4=", "response": 5}`,
	`{"prompt": "x", "chosen": "same", "rejected": "same"}`,
	`{"prompt": "x", "chosen": "a", "rejected": "b", "kind": "not a metric name!"}`,
	`{"prompt": "x", "answer": null}`,
	`{"prompt": "\ud800", "response": "\u0000"}`,
	`{"prompt": "1+5=", "response": "` + strings.Repeat("long ", 40) + `"}`,
	`{"prompt": "dup", "prompt": 1, "response": "r"}`,
	`["prompt", "response"]`,
	`{"prompt": "1+2="`,
	`{} {}`,
	`null`,
	"\t \r",
	"\xff\xfe",
}

// fuzzJSONLFiles adds seeds made of the lines above: each alone, all of them,
// and the good ones with a val file.
func fuzzJSONLFiles(f *testing.F) {
	for _, l := range fuzzJSONLSeeds {
		f.Add([]byte(l), []byte{}, uint8(0))
	}
	all := []byte(strings.Join(fuzzJSONLSeeds, "\n"))
	f.Add(all, []byte{}, uint8(4))
	f.Add(all, []byte{}, uint8(2))
	good := []byte(strings.Join(fuzzJSONLSeeds[:4], "\r\n") + "\n\n")
	f.Add(good, good, uint8(0))
	f.Add(good, []byte("\n \n"), uint8(1))
	f.Add([]byte{}, []byte{}, uint8(4))
	// Every line bad, and max_bad_fraction 1 allowing it: the SFT split once
	// sliced all[:-1].
	f.Add([]byte("null\n{}"), []byte{}, uint8(4))
}

// fuzzDataConfig writes train (and val, when not empty) into a temp dir and
// returns a DataConfig reading them, with max_bad_fraction k/4 (k mod 5).
func fuzzDataConfig(t *testing.T, train, val []byte, k uint8) (DataConfig, []string) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dc := DataConfig{Train: []string{write("train.jsonl", train)}, ValFraction: 0.25,
		MaxBadFraction: float64(k%5) / 4, Template: "Q: {prompt}\nA:"}
	files := slices.Clone(dc.Train)
	if len(val) > 0 {
		dc.Val = []string{write("val.jsonl", val)}
		files = append(files, dc.Val...)
	}
	return dc, files
}

// checkReport checks a load's report against the files: every data line
// counted, every bad one listed as file:line within the file, and the good
// ones all kept as items.
func checkReport(t *testing.T, rep DataReport, contents map[string][]byte, items int) {
	lines, nonBlank := map[string]int{}, 0
	for path, b := range contents {
		parts := bytes.Split(b, []byte("\n"))
		lines[path] = len(parts)
		for _, l := range parts {
			if len(bytes.TrimSpace(l)) > 0 {
				nonBlank++
			}
		}
	}
	if rep.Lines != nonBlank {
		t.Fatalf("report counts %d lines, the files have %d data lines", rep.Lines, nonBlank)
	}
	if rep.Bad < len(rep.BadLines) || rep.Bad > rep.Lines || len(rep.BadLines) > maxBadListed {
		t.Fatalf("report: %d lines, %d bad, %d listed", rep.Lines, rep.Bad, len(rep.BadLines))
	}
	if items != rep.Lines-rep.Bad {
		t.Fatalf("%d items from %d good lines", items, rep.Lines-rep.Bad)
	}
	for _, e := range rep.BadLines {
		var le *LineError
		if !errors.As(e, &le) || !errors.Is(e, ErrData) {
			t.Fatalf("bad line %v is not a *LineError wrapping ErrData", e)
		}
		if n, ok := lines[le.File]; !ok || le.Line < 1 || le.Line > n {
			t.Fatalf("bad line %v is not a line of %s (%d lines)", e, le.File, n)
		}
	}
}

// checkLoadErr requires a refusal to wrap ErrData or ErrConfig, and one that
// is about malformed lines to name the first of them as file:line.
func checkLoadErr(t *testing.T, err error, files []string) {
	if !errors.Is(err, ErrData) && !errors.Is(err, ErrConfig) {
		t.Fatalf("error %v wraps neither ErrData nor ErrConfig", err)
	}
	if strings.Contains(err.Error(), "malformed") && !slices.ContainsFunc(files, func(p string) bool { return strings.Contains(err.Error(), p+":") }) {
		t.Fatalf("error %q does not name a file:line", err)
	}
}

func readAll(t *testing.T, files []string) map[string][]byte {
	m := map[string][]byte{}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = b
	}
	return m
}

func FuzzLoadSFTData(f *testing.F) {
	tok := byteTok(f)
	fuzzJSONLFiles(f)
	f.Fuzz(func(t *testing.T, train, val []byte, k uint8) {
		dc, files := fuzzDataConfig(t, train, val, k)
		tc := TrainConfig{SeqLen: 24, BatchSize: 2, EvalBatches: 2}
		d, rep, err := loadSFTData(dc, tc, tok, 1)
		if err != nil {
			checkLoadErr(t, err, files)
			return
		}
		checkReport(t, rep, readAll(t, files), len(d.train)+len(d.val))
		for _, ex := range slices.Concat(d.train, d.val) {
			L := len(ex.Tokens)
			if L != len(ex.Loss) || L < 2 || L > tc.SeqLen+1 || ex.Loss[0] || !slices.Contains(ex.Loss, true) {
				t.Fatalf("example of %d tokens, %d mask values, mask %v (seq_len %d)", L, len(ex.Loss), ex.Loss, tc.SeqLen)
			}
		}
		b := newLMBatch(tc.BatchSize, tc.SeqLen, true)
		d.next(&b)
	})
}

func FuzzLoadPrefData(f *testing.F) {
	tok := byteTok(f)
	fuzzJSONLFiles(f)
	f.Fuzz(func(t *testing.T, train, val []byte, k uint8) {
		dc, files := fuzzDataConfig(t, train, val, k)
		enc := prefEncoder{tok: tok, template: dc.Template, seqLen: 24}
		tr, va, rep, _, err := loadPrefData(dc, enc)
		if err != nil {
			checkLoadErr(t, err, files)
			return
		}
		checkReport(t, rep, readAll(t, files), len(tr)+len(va))
		for _, p := range slices.Concat(tr, va) {
			if len(p.Chosen) == 0 || len(p.Chosen) > enc.seqLen || len(p.Rejected) == 0 || len(p.Rejected) > enc.seqLen {
				t.Fatalf("pair of %d and %d tokens (seq_len %d)", len(p.Chosen), len(p.Rejected), enc.seqLen)
			}
			if !validKind(p.Kind) || !validKind(p.Task) {
				t.Fatalf("pair kind %q, task %q", p.Kind, p.Task)
			}
		}
	})
}

// FuzzLoadPrompts reads RL prompt files through ppoJob.loadPrompts, on a job
// that holds only what that reads (the data config, the tokenizer, the
// policy's context length and max_new_tokens).
func FuzzLoadPrompts(f *testing.F) {
	tok := byteTok(f)
	fuzzJSONLFiles(f)
	f.Fuzz(func(t *testing.T, train, val []byte, k uint8) {
		dc, files := fuzzDataConfig(t, train, val, k)
		j := &ppoJob{cfg: RLConfig{Data: dc}, pc: PPOConfig{MaxNewTokens: 8}, tok: tok, eos: tok.EOT(),
			policy: &policy.Model{Config: policy.Config{MaxSeqLen: 32}}}
		if err := j.loadPrompts(); err != nil {
			checkLoadErr(t, err, files)
			return
		}
		if len(j.report.BadLines) <= maxBadListed { // loadPrompts does not cap the merged list
			checkReport(t, j.report, readAll(t, files), len(j.train)+len(j.val))
		}
		for _, p := range slices.Concat(j.train, j.val) {
			if len(p.Tokens) == 0 || len(p.Tokens) > 32-8 {
				t.Fatalf("prompt %q of %d tokens", p.Text, len(p.Tokens))
			}
		}
	})
}

// FuzzLoadTextData tokenises arbitrary text for pretraining with a token
// cache whose file for that text holds arbitrary bytes, as a corrupt or
// hostile cache would: the cache is used only when it holds whole ids of the
// vocabulary, and every token is one.
func FuzzLoadTextData(f *testing.F) {
	tok := byteTok(f)
	f.Add([]byte("In the beginning God created the heaven and the earth.\n"), []byte{})
	f.Add([]byte("short"), []byte{1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10, 0, 11, 0, 12, 0})
	f.Add([]byte(strings.Repeat("abc <|endoftext|> def\n", 8)), []byte{0xff, 0xff, 0, 0})
	f.Add([]byte(strings.Repeat("x", 40)), []byte{1, 2, 3})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, text, cached []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "corpus.txt")
		if err := os.WriteFile(path, text, 0o644); err != nil {
			t.Fatal(err)
		}
		var tokHash [32]byte
		cache := tokenCache{dir: filepath.Join(dir, "cache"), tokHash: tokHash, vocab: tok.VocabSize()}
		if err := os.MkdirAll(cache.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cache.path(sha256.Sum256(text)), cached, 0o644); err != nil {
			t.Fatal(err)
		}
		dc := DataConfig{Train: []string{path}, ValFraction: 0.3, CacheDir: cache.dir, Template: "{prompt}"}
		tc := TrainConfig{SeqLen: 4, BatchSize: 2, EvalBatches: 2}
		d, _, err := loadTextData(dc, tc, tok, tokHash, 1)
		if err != nil {
			checkLoadErr(t, err, []string{path})
			return
		}
		for _, id := range slices.Concat(d.train, d.val) {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("token %d outside the vocabulary of %d", id, tok.VocabSize())
			}
		}
		b := newLMBatch(tc.BatchSize, tc.SeqLen, false)
		d.next(&b)
	})
}
