package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The fuzz targets' seeds run as ordinary tests under `go test`; `make fuzz`
// explores past them for a few seconds each. A failure it finds is written to
// testdata/fuzz/<target>/: commit it with the fix so that it stays a test.

// fuzzTiny is a small trained vocabulary with a second special token, so that
// merges fire on short inputs and two specials compete in Encode.
func fuzzTiny(t testing.TB) *Tokenizer {
	t.Helper()
	text := strings.Repeat("the cat sat on the mat; 'tis the end. 12 + 30 = 42\n", 20)
	tok, err := Train(strings.NewReader(text), 300, []string{"<|pad|>"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// checkRoundTrip asserts that every id of s is in the vocabulary and that
// Decode inverts Encode and EncodeOrdinary: exactly for valid UTF-8, and up to
// the documented U+FFFD replacement otherwise.
func checkRoundTrip(t *testing.T, name string, tok *Tokenizer, s string) {
	want := s
	if !utf8.ValidString(s) {
		want = string(appendLossyUTF8(nil, []byte(s)))
	}
	for _, enc := range []struct {
		how string
		ids []int32
	}{{"Encode", tok.Encode(s)}, {"EncodeOrdinary", tok.EncodeOrdinary(s)}} {
		for _, id := range enc.ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("%s: %s(%q) gave id %d outside [0, %d)", name, enc.how, s, id, tok.VocabSize())
			}
		}
		if got := tok.Decode(enc.ids); got != want {
			t.Fatalf("%s: Decode(%s(%q)) = %q, want %q", name, enc.how, s, got, want)
		}
	}
}

func FuzzEncodeDecode(f *testing.F) {
	gpt2, _ := loadGPT2(f)
	tiny := fuzzTiny(f)
	for _, s := range []string{
		"", "a", "hello world", "Hello, World!\n", "<|endoftext|>", "a<|endoftext|>b<|endoftext|>",
		"<|endoftext", "<|pad|><|endoftext|>", "'s 't 're 've 'm 'll 'd 'S", "   leading and trailing   ",
		"\t\n\r\v\f \u00a0\u2028x", "ünïcödé ½ ٣ 日本語 👍🏽", "\xff\xfe\x80abc\xc3", "\xed\xa0\x80", "x\x00y",
		strings.Repeat(" ", 300) + "x", strings.Repeat("ab", 200), "12 + 30 = 42", "Ġ Ċ ĉ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkRoundTrip(t, "gpt2", gpt2, s)
		checkRoundTrip(t, "tiny", tiny, s)
	})
}

// FuzzLoadTokenizer feeds arbitrary vocab.json + merges.txt to LoadGPT2 and
// arbitrary tokenizer.json to LoadHF: each must load or return an error
// wrapping ErrBadTokenizer, never panic; a tokenizer that loads must encode
// and decode text holding its special tokens, and survive Save and Load.
func FuzzLoadTokenizer(f *testing.F) {
	seedDir := f.TempDir()
	if err := fuzzTiny(f).Save(seedDir); err != nil {
		f.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(seedDir, name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	vocab, merges, hf := read("vocab.json"), read("merges.txt"), read("tokenizer.json")
	f.Add(vocab, merges, hf)
	// An empty vocab entry once became a special token matching everywhere,
	// and Encode looped on it forever.
	var vm map[string]int
	var hm map[string]any
	if err := json.Unmarshal(vocab, &vm); err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(hf, &hm); err != nil {
		f.Fatal(err)
	}
	vm[""] = len(vm)
	hm["model"].(map[string]any)["vocab"] = vm
	withEmpty, _ := json.Marshal(vm)
	hfWithEmpty, _ := json.Marshal(hm)
	f.Add(withEmpty, merges, hfWithEmpty)
	f.Add(vocab, []byte("#version: 0.2\n"), []byte(`{"model":{"type":"BPE","vocab":{"a":0}}}`))
	f.Add([]byte(`{"a": 0, "b": 1, "ab": 2}`), []byte("a b\n"), []byte(`{"model":{"merges":[["a","b"]]}}`))
	f.Add([]byte(`{"": 0}`), []byte("a  b\n"), []byte(`null`))
	f.Add([]byte(`{"a": -1, "b": 2147483647}`), []byte("a b c\r\n"), []byte(`{"added_tokens":[{"id":0,"content":""}]}`))
	f.Add([]byte(`[]`), []byte{}, []byte(`{"model":{"vocab":{"a":0},"merges":"a b"},"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false}}`))

	f.Fuzz(func(t *testing.T, vocab, merges, hf []byte) {
		dir := t.TempDir()
		write := func(name string, b []byte) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		if tok, err := LoadGPT2(write("vocab.json", vocab), write("merges.txt", merges)); err != nil {
			if !errors.Is(err, ErrBadTokenizer) {
				t.Fatalf("LoadGPT2: %v does not wrap ErrBadTokenizer", err)
			}
		} else {
			exerciseLoaded(t, "LoadGPT2", tok)
		}
		if tok, err := LoadHF(write("tokenizer.json", hf)); err != nil {
			if !errors.Is(err, ErrBadTokenizer) {
				t.Fatalf("LoadHF: %v does not wrap ErrBadTokenizer", err)
			}
		} else {
			exerciseLoaded(t, "LoadHF", tok)
		}
	})
}

// exerciseLoaded encodes and decodes a text holding every special token of
// tok between ordinary words, then saves tok and loads it back, which must
// give the same ids.
func exerciseLoaded(t *testing.T, how string, tok *Tokenizer) {
	var sb strings.Builder
	sb.WriteString("the cat ")
	for _, sp := range tok.specials {
		sb.WriteString(sp.content)
		sb.WriteString(" sat\n")
	}
	text := sb.String()
	ids := tok.Encode(text)
	for _, id := range ids {
		if id < 0 || int(id) >= tok.VocabSize() {
			t.Fatalf("%s: Encode gave id %d outside [0, %d)", how, id, tok.VocabSize())
		}
	}
	tok.Decode(ids)
	tok.Decode([]int32{-1, 0, int32(tok.VocabSize()), int32(tok.VocabSize() - 1)})

	dir := t.TempDir()
	if err := tok.Save(dir); err != nil {
		return // a vocabulary merges.txt cannot spell is refused, not saved wrong
	}
	again, err := Load(dir)
	if err != nil {
		t.Fatalf("%s: the saved tokenizer does not load: %v", how, err)
	}
	if got := again.Encode(text); !slices.Equal(got, ids) {
		t.Fatalf("%s: after Save and Load, Encode(%q) = %v, want %v", how, text, got, ids)
	}
}
