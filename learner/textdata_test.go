package learner

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/policy/tokenizer"
)

func trainedTokenizer(t testing.TB, text string, vocab int) (*tokenizer.Tokenizer, string) {
	t.Helper()
	tok, err := tokenizer.Train(strings.NewReader(text), vocab, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tokenizer")
	if err := tok.Save(dir); err != nil {
		t.Fatal(err)
	}
	return tok, dir
}

// TestTokenCache: a file is tokenised once; the second load reads the cache
// file (uint16 for a small vocabulary), a damaged cache file is re-made, and a
// different tokenizer gets its own entry.
func TestTokenCache(t *testing.T) {
	text := strings.Repeat("In the beginning God created the heaven and the earth.\n", 50)
	tok, tokDir := trainedTokenizer(t, text, 300)
	h, err := tokenizerHash(tokDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "a.txt")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := tokenCache{dir: filepath.Join(dir, "cache"), tokHash: h, vocab: tok.VocabSize()}
	f1, err := tokenizeText(path, tok, cache)
	if err != nil {
		t.Fatal(err)
	}
	want := tok.Encode(text)
	if !equalIDs(f1.Tokens, want) || f1.Lines != 50 {
		t.Fatalf("tokenizeText: %d tokens, %d lines; want %d tokens, 50 lines", len(f1.Tokens), f1.Lines, len(want))
	}
	entries, _ := filepath.Glob(filepath.Join(cache.dir, "*.u16"))
	if len(entries) != 1 {
		t.Fatalf("cache holds %v, want one .u16 file", entries)
	}
	if st, _ := os.Stat(entries[0]); st.Size() != int64(2*len(want)) {
		t.Fatalf("cache file is %d bytes, want %d", st.Size(), 2*len(want))
	}
	// Served from the cache: poison it with a valid id and see it come back.
	poisoned := make([]byte, 2*len(want))
	poisoned[0] = 7
	if err := os.WriteFile(entries[0], poisoned, 0o644); err != nil {
		t.Fatal(err)
	}
	f2, _ := tokenizeText(path, tok, cache)
	if f2.Tokens[0] != 7 || f2.Tokens[1] != 0 {
		t.Fatalf("second load did not read the cache: %v", f2.Tokens[:2])
	}
	// An id outside the vocabulary (or a torn file) is re-made.
	if err := os.WriteFile(entries[0], []byte{0xff, 0xff, 1}, 0o644); err != nil {
		t.Fatal(err)
	}
	f3, _ := tokenizeText(path, tok, cache)
	if !equalIDs(f3.Tokens, want) {
		t.Fatal("a damaged cache file was used")
	}
	// Another tokenizer, another key.
	other := cache
	other.tokHash[0] ^= 1
	if other.path(f1.Sum) == cache.path(f1.Sum) {
		t.Fatal("the cache key ignores the tokenizer")
	}
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTextDataSplit: files are joined with end-of-text, the last
// val_fraction of the tokens is held out (or the val files are), the report
// counts files, lines and tokens, and the held-out batches are fixed windows.
func TestTextDataSplit(t *testing.T) {
	text := strings.Repeat("and the LORD said unto Moses\n", 40)
	tok, tokDir := trainedTokenizer(t, text, 280)
	h, _ := tokenizerHash(tokDir)
	dir := t.TempDir()
	for _, name := range []string{"a.txt", "b.txt", "v.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := len(tok.Encode(text))
	dc := DefaultDataConfig()
	dc.Train, dc.ValFraction, dc.CacheDir = []string{filepath.Join(dir, "[ab].txt")}, 0.25, ""
	tc := DefaultTrainConfig()
	tc.BatchSize, tc.SeqLen, tc.EvalBatches = 2, 8, 3
	d, rep, err := loadTextData(dc, tc, tok, h, 1)
	if err != nil {
		t.Fatal(err)
	}
	total := 2 * (n + 1)
	nv := int(math.Round(0.25 * float64(total)))
	if len(rep.Files) != 2 || rep.Lines != 80 || rep.TrainItems != total-nv || rep.ValItems != nv {
		t.Fatalf("report %+v, want 2 files, 80 lines, %d train and %d val tokens", rep, total-nv, nv)
	}
	if d.train[n] != tok.EOT() {
		t.Fatalf("token after the first file is %d, want end-of-text %d", d.train[n], tok.EOT())
	}
	if len(d.eval) != 3 || d.eval[0].Tokens[0] != d.val[0] || d.eval[0].Targets[0] != d.val[1] {
		t.Fatalf("held-out batches do not start at the held-out tokens")
	}
	last := d.eval[2]
	if got, want := last.Targets[len(last.Targets)-1], d.val[len(d.val)-1]; got != want {
		t.Fatalf("last held-out window ends with %d, want the last held-out token %d", got, want)
	}
	var b lmBatch = newLMBatch(2, 8, false)
	d.next(&b)
	for i := 0; i < 7; i++ {
		if b.Tokens[i+1] != b.Targets[i] {
			t.Fatalf("targets are not the inputs shifted by one: %v / %v", b.Tokens[:8], b.Targets[:8])
		}
	}

	dc.Val = []string{filepath.Join(dir, "v.txt")}
	_, rep, err = loadTextData(dc, tc, tok, h, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Files) != 3 || rep.TrainItems != total || rep.ValItems != n+1 {
		t.Fatalf("with val files: report %+v, want 3 files, %d train and %d val tokens", rep, total, n+1)
	}
}

func TestUnigramEntropy(t *testing.T) {
	if h := unigramEntropy([]int32{0, 1, 2, 3, 0, 1, 2, 3}, 8); math.Abs(h-math.Log(4)) > 1e-12 {
		t.Fatalf("entropy of 4 equally likely ids = %v, want ln 4", h)
	}
	if h := unigramEntropy([]int32{5, 5, 5}, 8); h != 0 {
		t.Fatalf("entropy of one id = %v, want 0", h)
	}
}
