package tokenizer

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// kjvPrefix is the first n bytes of the KJV, cut at a newline.
func kjvPrefix(t testing.TB, n int) string {
	t.Helper()
	data, err := os.ReadFile(kjvPath)
	if err != nil {
		t.Fatal(err)
	}
	if n >= len(data) {
		return string(data)
	}
	s := string(data[:n])
	return s[:strings.LastIndexByte(s, '\n')+1]
}

// trainSmall trains on 300 KB of the KJV, with one extra special token.
func trainSmall(t testing.TB, vocab int) *Tokenizer {
	t.Helper()
	tok, err := Train(strings.NewReader(kjvPrefix(t, 300_000)), vocab, []string{"<|pad|>"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTrainSmall(t *testing.T) {
	text := kjvPrefix(t, 300_000)
	var calls, last, total int
	tok, err := Train(strings.NewReader(text), 1000, []string{"<|pad|>"}, func(done, tot int) {
		calls++
		last, total = done, tot
	})
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != 1000 {
		t.Fatalf("VocabSize() = %d, want 1000", tok.VocabSize())
	}
	if calls == 0 || last != total || total != 1000-256-2 {
		t.Fatalf("progress: %d calls, last %d/%d; want the last call %d/%d", calls, last, total, 1000-258, 1000-258)
	}
	// Specials take the last ids, end-of-text first as it was not listed.
	if tok.EOT() != 998 {
		t.Fatalf("EOT() = %d, want 998", tok.EOT())
	}
	if id, ok := tok.TokenID("<|pad|>"); !ok || id != 999 {
		t.Fatalf("TokenID(<|pad|>) = %d, %v; want 999", id, ok)
	}
	// The first 256 ids are GPT-2's byte tokens.
	gpt2, _ := loadGPT2(t)
	for id := int32(0); id < 256; id++ {
		if tok.visible[id] != gpt2.visible[id] {
			t.Fatalf("byte token %d is %q, GPT-2 has %q", id, tok.visible[id], gpt2.visible[id])
		}
	}
	// Round trip and compression, on the training text and on unseen text.
	for _, s := range []string{text, kjvPrefix(t, 2_000_000)[1_500_000:], "Unseen: naïve 漢字 👍🏽 <|pad|> x<|endoftext|>\r\n"} {
		ids := tok.Encode(s)
		if got := tok.Decode(ids); got != s {
			t.Fatalf("round trip failed on %.40q...", s)
		}
		if len(s) > 1000 && len(ids)*2 > len(s) {
			t.Fatalf("%d tokens for %d bytes: want better than 2 bytes a token", len(ids), len(s))
		}
	}
	if got := tok.Encode("a<|pad|>b<|endoftext|>"); !slices.Equal(got[1:2], []int32{999}) || got[len(got)-1] != 998 {
		t.Fatalf("Encode with specials = %v", got)
	}
}

func TestTrainDeterministic(t *testing.T) {
	a := trainSmall(t, 800)
	b := trainSmall(t, 800)
	if !slices.Equal(a.mergeList, b.mergeList) || !slices.Equal(a.visible, b.visible) {
		t.Fatal("two trainings on the same text differ")
	}
	// Chunked reading gives the same counts as one piece: a reader that returns
	// a few bytes at a time.
	c, err := Train(&trickle{r: strings.NewReader(kjvPrefix(t, 300_000)), n: 7}, 800, []string{"<|pad|>"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.mergeList, c.mergeList) {
		t.Fatal("training from a trickling reader differs")
	}
}

// TestTrainChunking trains across many chunk cuts: the text is larger than one
// read, and must give the same merges as counting it whole.
func TestTrainChunking(t *testing.T) {
	text := kjvPrefix(t, 2_500_000) + "tail without newline   "
	want := map[string]int64{}
	countText(want, text, []specialToken{{content: EndOfText}})
	got, err := countWords(strings.NewReader(text), []specialToken{{content: EndOfText}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d distinct words chunked, %d whole", len(got), len(want))
	}
	for w, n := range want {
		if got[w] != n {
			t.Fatalf("word %q counted %d times chunked, %d whole", w, got[w], n)
		}
	}
}

type trickle struct {
	r io.Reader
	n int
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(p) > t.n {
		p = p[:t.n]
	}
	return t.r.Read(p)
}

func TestTrainSaveLoad(t *testing.T) {
	tok := trainSmall(t, 1200)
	dir := t.TempDir()
	if err := tok.Save(dir); err != nil {
		t.Fatal(err)
	}
	hf, err := LoadHF(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	gpt2, err := LoadGPT2(filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	_, g := loadGPT2(t)
	texts := append(goldenTexts(g), kjvPrefix(t, 50_000), "x<|pad|>y<|endoftext|>z")
	sameEncodings(t, tok, hf, texts)
	sameEncodings(t, tok, gpt2, texts)
	if id, ok := gpt2.TokenID("<|pad|>"); !ok || !gpt2.special[id] {
		t.Fatal("<|pad|> is not special after LoadGPT2")
	}
}

func TestTrainTiny(t *testing.T) {
	// More vocabulary than the text can use: training stops when every word is one token.
	tok, err := Train(strings.NewReader("hello hello world"), 5000, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() >= 5000 || tok.EOT() != int32(tok.VocabSize()-1) {
		t.Fatalf("VocabSize %d, EOT %d", tok.VocabSize(), tok.EOT())
	}
	if got := tok.Encode("hello hello world"); len(got) != 3 {
		t.Fatalf("Encode = %v, want 3 tokens", got)
	}
	// Empty text: bytes and end-of-text only.
	tok, err = Train(strings.NewReader(""), 300, nil, nil)
	if err != nil || tok.VocabSize() != 257 {
		t.Fatalf("Train(empty) = %v, %v", tok, err)
	}
}

func TestTrainErrors(t *testing.T) {
	for _, c := range []struct {
		vocab    int
		specials []string
	}{
		{100, nil},
		{256, nil},
		{258, []string{"<|a|>", "<|b|>"}},
		{300, []string{""}},
		{300, []string{"<|a|>", "<|a|>"}},
		{300, []string{"t"}}, // spelled like the byte token "t"
	} {
		_, err := Train(strings.NewReader("the text"), c.vocab, c.specials, nil)
		if !errors.Is(err, ErrTrain) {
			t.Fatalf("Train(vocab %d, specials %q) = %v, want ErrTrain", c.vocab, c.specials, err)
		}
	}
	if _, err := Train(iotestErr{}, 300, nil, nil); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Train(failing reader) = %v", err)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("boom") }

// TestTrainKJV trains GPT-2-style on all 4 MB of the KJV to 4096 ids.
func TestTrainKJV(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on 4 MB; skipped with -short")
	}
	f, err := os.Open(kjvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	tok, err := Train(f, 4096, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	data, _ := os.ReadFile(kjvPath)
	ids := tok.EncodeOrdinary(string(data))
	t.Logf("trained 4096 ids on %d bytes in %v; %d tokens (%.2f bytes/token)", len(data), el, len(ids), float64(len(data))/float64(len(ids)))
	if tok.VocabSize() != 4096 || tok.Decode(ids) != string(data) {
		t.Fatalf("VocabSize %d or round trip failed", tok.VocabSize())
	}
	if el > time.Minute {
		t.Fatalf("training took %v, want well under a minute", el)
	}
}
