package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// bpeReference is the plain version of bpe: rescan for the best pair after each
// merge, leftmost on a tie.
func (t *Tokenizer) bpeReference(word string) []int32 {
	syms := make([]int32, len(word))
	for i := 0; i < len(word); i++ {
		syms[i] = t.byteID[word[i]]
	}
	for {
		best, bestRank, bestOut := -1, uint64(1<<63), int32(0)
		for i := 0; i+1 < len(syms); i++ {
			if m, ok := t.merges[pairKey(syms[i], syms[i+1])]; ok && m>>32 < bestRank {
				best, bestRank, bestOut = i, m>>32, int32(uint32(m))
			}
		}
		if best < 0 {
			return syms
		}
		syms = append(append(syms[:best:best], bestOut), syms[best+2:]...)
	}
}

func TestBPEMatchesReference(t *testing.T) {
	tok, g := loadGPT2(t)
	var s bpeScratch
	check := func(word string) {
		t.Helper()
		got := tok.bpe(nil, word, &s)
		if want := tok.bpeReference(word); !slices.Equal(got, want) {
			t.Fatalf("bpe(%q) = %v, reference %v", word, got, want)
		}
	}
	for _, c := range g.Cases {
		for text := c.Text; len(text) > 0; {
			n := nextPiece(text)
			check(text[:n])
			text = text[n:]
		}
	}
	// Random byte strings, valid UTF-8 or not, and repetitive ones where ties abound.
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "e", "r", " ", "\xe2", "\x82", "\xac", "ab", "er", "the", "ing"}
	for i := 0; i < 2000; i++ {
		var b strings.Builder
		for j := r.IntN(40); j >= 0; j-- {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		check(b.String())
	}
	check(strings.Repeat("a", 1000))
	check(strings.Repeat("ab", 500))
}

func TestPieces(t *testing.T) {
	// A few splits spelled out, so a failure names the scanner rather than BPE.
	for _, c := range []struct {
		text string
		want []string
	}{
		{"", nil},
		{"Hello world", []string{"Hello", " world"}},
		{"it's 'S", []string{"it", "'s", " '", "S"}},
		{"'sam ''s", []string{"'s", "am", " ''", "s"}},
		{"   a", []string{"  ", " a"}},
		{"a   ", []string{"a", "   "}},
		{"\t\ta", []string{"\t", "\t", "a"}},
		{"a\n\n\nb", []string{"a", "\n\n", "\n", "b"}},
		{"x \u00a0y", []string{"x", " ", "\u00a0", "y"}},
		{" 123 ab1", []string{" 123", " ab", "1"}},
		{"a?!  ?", []string{"a", "?!", " ", " ?"}},
		{"नमस्ते", []string{"नमस", "्", "त", "े"}},
		{"\xffa\xfe", []string{"\xff", "a", "\xfe"}},
	} {
		var got []string
		for s := c.text; len(s) > 0; {
			n := nextPiece(s)
			got = append(got, s[:n])
			s = s[n:]
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("pieces(%q) = %q, want %q", c.text, got, c.want)
		}
	}
}

func TestLossyUTF8(t *testing.T) {
	// Expected values follow Unicode's "maximal subpart" practice (Python, Rust, WHATWG).
	for _, c := range []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe2\x82", "\uFFFD"},
		{"\xe2\x82\xac", "€"},
		{"\xe2\x82a", "\uFFFDa"},
		{"\xc0\xaf", "\uFFFD\uFFFD"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf0\x9f\x98\x80", "😀"},
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\x80\x80", "\uFFFD\uFFFD"},
		{"\xff", "\uFFFD"},
	} {
		if got := string(appendLossyUTF8(nil, []byte(c.in))); got != c.want {
			t.Errorf("lossy(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestInvalidUTF8Input(t *testing.T) {
	tok, _ := loadGPT2(t)
	in := "ok \xff\xfe bad \xe2\x82 cut"
	ids := tok.Encode(in)
	if got, want := tok.Decode(ids), "ok \uFFFD\uFFFD bad \uFFFD cut"; got != want {
		t.Fatalf("Decode(Encode(%q)) = %q, want %q", in, got, want)
	}
}

func TestLongRuns(t *testing.T) {
	tok, _ := loadGPT2(t)
	start := time.Now()
	for _, text := range []string{
		strings.Repeat(" ", 100000) + "x",
		strings.Repeat("a", 100000),
		strings.Repeat("ab", 50000),
		strings.Repeat("\n", 100000),
	} {
		ids := tok.Encode(text)
		if got := tok.Decode(ids); got != text {
			t.Fatalf("long run of %q...: round trip failed", text[:2])
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("long runs took %v: BPE is not O(n log n)", el)
	}
}

func TestEncodeSpecials(t *testing.T) {
	tok, _ := loadGPT2(t)
	text := "a<|endoftext|>b"
	if got, want := tok.Encode(text), []int32{64, 50256, 65}; !slices.Equal(got, want) {
		t.Fatalf("Encode(%q) = %v, want %v", text, got, want)
	}
	if got := tok.EncodeOrdinary(text); slices.Contains(got, 50256) {
		t.Fatalf("EncodeOrdinary(%q) = %v holds the special id", text, got)
	}
	// Many documents: the special finder must not rescan the text per special.
	docs := strings.Repeat("Some text here.<|endoftext|>", 20000)
	ids := tok.Encode(docs)
	n := 0
	for _, id := range ids {
		if id == 50256 {
			n++
		}
	}
	if n != 20000 || tok.Decode(ids) != docs {
		t.Fatalf("%d end-of-text ids in 20000 documents, or round trip failed", n)
	}
}

func TestEncodeConcurrent(t *testing.T) {
	tok, g := loadGPT2(t)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range g.Cases {
				if !slices.Equal(tok.Encode(c.Text), c.IDs) {
					errs <- c.Name
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for name := range errs {
		t.Errorf("concurrent Encode differs on %s", name)
	}
}

func TestCacheBounded(t *testing.T) {
	tok, _ := loadGPT2(t)
	tok.cache.mu.Lock()
	tok.cache.m = nil
	tok.cache.mu.Unlock()
	var b strings.Builder
	for i := 0; i < cacheMaxWords+10; i++ {
		b.WriteString(" w")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(strings.Repeat("q", i/7%11))
		b.WriteString(string(rune('a' + i/77%26)))
		b.WriteString(string(rune('a' + i/2002%26)))
	}
	tok.EncodeOrdinary(b.String())
	tok.cache.mu.RLock()
	n := len(tok.cache.m)
	tok.cache.mu.RUnlock()
	if n > cacheMaxWords {
		t.Fatalf("cache holds %d words, limit %d", n, cacheMaxWords)
	}
}

// sameEncodings checks that b encodes every golden text as a does.
func sameEncodings(t *testing.T, a, b *Tokenizer, texts []string) {
	t.Helper()
	if a.VocabSize() != b.VocabSize() || a.EOT() != b.EOT() {
		t.Fatalf("vocab %d eot %d, want %d, %d", b.VocabSize(), b.EOT(), a.VocabSize(), a.EOT())
	}
	for _, text := range texts {
		if x, y := a.Encode(text), b.Encode(text); !slices.Equal(x, y) {
			t.Fatalf("Encode(%q) = %v after reload, %v before", text, y, x)
		}
		if x, y := a.EncodeOrdinary(text), b.EncodeOrdinary(text); !slices.Equal(x, y) {
			t.Fatalf("EncodeOrdinary(%q) = %v after reload, %v before", text, y, x)
		}
		if ids := a.Encode(text); b.Decode(ids) != text {
			t.Fatalf("Decode after reload differs on %q", text)
		}
	}
}

func goldenTexts(g *golden) []string {
	var texts []string
	for _, c := range g.Cases {
		texts = append(texts, c.Text)
	}
	return texts
}

func TestSaveLoadGPT2(t *testing.T) {
	tok, g := loadGPT2(t)
	dir := t.TempDir()
	if err := tok.Save(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("Save wrote no %s: %v", name, err)
		}
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(tmp) > 0 {
		t.Fatalf("Save left temp files %v", tmp)
	}
	hf, err := Load(dir) // tokenizer.json
	if err != nil {
		t.Fatal(err)
	}
	gpt2, err := LoadGPT2(filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sameEncodings(t, tok, hf, goldenTexts(g))
	sameEncodings(t, tok, gpt2, goldenTexts(g))

	// merges.txt comes back byte for byte; vocab.json with the same entries.
	orig, _ := os.ReadFile(filepath.Join(gpt2Dir, "merges.txt"))
	saved, _ := os.ReadFile(filepath.Join(dir, "merges.txt"))
	if !bytes.Equal(bytes.TrimSpace(orig), bytes.TrimSpace(saved)) {
		t.Fatalf("saved merges.txt differs from %s", gpt2Dir)
	}
	var v1, v2 map[string]int
	readJSON(t, filepath.Join(gpt2Dir, "vocab.json"), &v1)
	readJSON(t, filepath.Join(dir, "vocab.json"), &v2)
	if len(v1) != len(v2) {
		t.Fatalf("saved vocab.json has %d entries, want %d", len(v2), len(v1))
	}
	for k, id := range v1 {
		if v2[k] != id {
			t.Fatalf("saved vocab.json: %q = %d, want %d", k, v2[k], id)
		}
	}
	var cfg map[string]any
	readJSON(t, filepath.Join(dir, "tokenizer_config.json"), &cfg)
	if cfg["eos_token"] != EndOfText || cfg["clean_up_tokenization_spaces"] != false || cfg["tokenizer_class"] != "GPT2Tokenizer" {
		t.Fatalf("tokenizer_config.json = %v", cfg)
	}
	var stm map[string]any
	readJSON(t, filepath.Join(dir, "special_tokens_map.json"), &stm)
	if stm["bos_token"] != EndOfText || stm["eos_token"] != EndOfText || stm["unk_token"] != EndOfText {
		t.Fatalf("special_tokens_map.json = %v", stm)
	}
	// Saving again over the files works (rename over existing).
	if err := gpt2.Save(dir); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestHFMergesAsPairs loads tokenizer.json with merges spelled as [left, right]
// pairs, as tokenizers 0.20 and later write them.
func TestHFMergesAsPairs(t *testing.T) {
	tok, g := loadGPT2(t)
	dir := t.TempDir()
	if err := tok.Save(dir); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	path := filepath.Join(dir, "tokenizer.json")
	readJSON(t, path, &doc)
	model := doc["model"].(map[string]any)
	var pairs [][]string
	for _, m := range model["merges"].([]any) {
		a, b, _ := strings.Cut(m.(string), " ")
		pairs = append(pairs, []string{a, b})
	}
	model["merges"] = pairs
	data, _ := json.Marshal(doc)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	hf, err := LoadHF(path)
	if err != nil {
		t.Fatal(err)
	}
	sameEncodings(t, tok, hf, goldenTexts(g)[:50])
}

// TestSaveLoadsInHuggingFaceJS checks the saved tokenizer.json with Hugging Face's
// own JavaScript tokenizer, where node and scripts/node_modules are installed
// (cd scripts && npm ci). It skips elsewhere: the Go tests need no node.
func TestSaveLoadsInHuggingFaceJS(t *testing.T) {
	script := "../../scripts/tokenizer_golden.mjs"
	if _, err := os.Stat("../../scripts/node_modules/@huggingface/tokenizers"); err != nil {
		t.Skip("scripts/node_modules not installed (cd scripts && npm ci)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node")
	}
	tok, g := loadGPT2(t)
	trained := trainSmall(t, 2000)
	for _, c := range []struct {
		name string
		tok  *Tokenizer
	}{{"gpt2", tok}, {"trained", trained}} {
		dir := t.TempDir()
		if err := c.tok.Save(dir); err != nil {
			t.Fatal(err)
		}
		// tokenizers.js runs the regex as a JavaScript RegExp, whose \s differs from
		// Unicode's White_Space (which Rust's tokenizers and tiktoken use) on U+0085
		// and U+FEFF, so texts with those are left out here; the goldens cover them.
		var texts []string
		for _, text := range goldenTexts(g) {
			if !strings.ContainsAny(text, "\u0085\ufeff") {
				texts = append(texts, text)
			}
		}
		in, _ := json.Marshal(texts)
		cmd := exec.Command(node, script, "--check-hf", dir)
		cmd.Stdin = bytes.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: node: %v\n%s", c.name, err, stderr.String())
		}
		var res []struct {
			IDs     []int32 `json:"ids"`
			Decoded string  `json:"decoded"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res) != len(texts) {
			t.Fatalf("%s: node output: %v (%d results)", c.name, err, len(res))
		}
		for i, text := range texts {
			if want := c.tok.Encode(text); !slices.Equal(res[i].IDs, want) {
				t.Errorf("%s: HF tokenizers.js encodes %q as %v, we %v", c.name, text, res[i].IDs, want)
			}
			if res[i].Decoded != text && utf8.ValidString(text) {
				t.Errorf("%s: HF tokenizers.js decodes %q as %q", c.name, text, res[i].Decoded)
			}
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A tiny valid vocabulary: the 256 bytes, "ab" and "<|endoftext|>".
	vocab := map[string]int{}
	for i, b := range byteOrder {
		vocab[string(byteToRune[b])] = i
	}
	vocab["ab"] = 256
	vocab[EndOfText] = 257
	vj, _ := json.Marshal(vocab)
	goodVocab := write("vocab.json", string(vj))
	goodMerges := write("merges.txt", "#version: 0.2\na b\n")
	tok, err := LoadGPT2(goodVocab, goodMerges)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("ab<|endoftext|>"); !slices.Equal(got, []int32{256, 257}) {
		t.Fatalf("tiny vocab: Encode = %v", got)
	}

	vocab["zz"] = 300
	holes, _ := json.Marshal(vocab)
	delete(vocab, "zz")
	vocab["dup"] = 5
	dup, _ := json.Marshal(vocab)
	delete(vocab, "dup")
	vocab["QQ"] = vocab["a"]
	delete(vocab, "a")
	noA, _ := json.Marshal(vocab)

	for _, c := range []struct {
		name         string
		vocab, merge string // file contents; "" for missing file
		want         []string
	}{
		{"missing vocab", "", "#version: 0.2\n", []string{"vocab.json", "no such file"}},
		{"bad json", "{", "", []string{"vocab.json", "JSON"}},
		{"bad merge line", string(vj), "#version: 0.2\na b\nabc\n", []string{"merges.txt:3", `"abc"`}},
		{"merge not in vocab", string(vj), "#version: 0.2\na b\nx q\n", []string{"merges.txt:3", "the result \"xq\" is not in the vocabulary"}},
		{"unknown merge token", string(vj), "a QQQ\n", []string{"merges.txt:1", "\"QQQ\" is not in the vocabulary"}},
		{"ids with holes", string(holes), "a b\n", []string{"ids are not 0..258", "zz"}},
		{"duplicate id", string(dup), "a b\n", []string{"id 5 is used by both"}},
		{"missing byte", string(noA), "", []string{"no token for byte 0x61"}},
	} {
		os.Remove(filepath.Join(dir, "vocab.json"))
		os.Remove(filepath.Join(dir, "merges.txt"))
		if c.vocab != "" {
			write("vocab.json", c.vocab)
		}
		write("merges.txt", c.merge)
		_, err := LoadGPT2(filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt"))
		if err == nil {
			t.Fatalf("%s: no error", c.name)
		}
		if !errors.Is(err, ErrBadTokenizer) {
			t.Fatalf("%s: %v does not wrap ErrBadTokenizer", c.name, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
	}
	if _, err := LoadGPT2(filepath.Join(dir, "nope.json"), goodMerges); !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrBadTokenizer) {
		t.Fatalf("missing file: %v should wrap ErrBadTokenizer and fs.ErrNotExist", err)
	}

	// Load names the directory and the files it looked for.
	empty := t.TempDir()
	if _, err := Load(empty); err == nil || !errors.Is(err, ErrBadTokenizer) || !strings.Contains(err.Error(), empty) ||
		!strings.Contains(err.Error(), "tokenizer.json") || !strings.Contains(err.Error(), "merges.txt") {
		t.Fatalf("Load(empty dir) = %v", err)
	}
	if _, err := Load(filepath.Join(empty, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing dir) = %v", err)
	}

	// tokenizer.json features that would change the ids are refused by name.
	gpt2, _ := loadGPT2(t)
	hfDir := t.TempDir()
	if err := gpt2.Save(hfDir); err != nil {
		t.Fatal(err)
	}
	hfPath := filepath.Join(hfDir, "tokenizer.json")
	for _, c := range []struct {
		name string
		edit func(d map[string]any)
		want string
	}{
		{"unigram", func(d map[string]any) { d["model"].(map[string]any)["type"] = "Unigram" }, "model.type"},
		{"normalizer", func(d map[string]any) { d["normalizer"] = map[string]any{"type": "NFC"} }, "normalizer"},
		{"prefix space", func(d map[string]any) { d["pre_tokenizer"].(map[string]any)["add_prefix_space"] = true }, "pre_tokenizer"},
		{"no pre-tokenizer", func(d map[string]any) { d["pre_tokenizer"] = nil }, "pre_tokenizer"},
		{"byte fallback", func(d map[string]any) { d["model"].(map[string]any)["byte_fallback"] = true }, "byte_fallback"},
		{"lstrip", func(d map[string]any) { d["added_tokens"].([]any)[0].(map[string]any)["lstrip"] = true }, "added_tokens[0]"},
		{"added id clash", func(d map[string]any) { d["added_tokens"].([]any)[0].(map[string]any)["id"] = 5 }, "added_tokens[0]"},
		{"bad merges", func(d map[string]any) { d["model"].(map[string]any)["merges"] = 7 }, "model.merges"},
	} {
		var d map[string]any
		readJSON(t, hfPath, &d) // fresh copy
		c.edit(d)
		data, _ := json.Marshal(d)
		p := filepath.Join(t.TempDir(), "tokenizer.json")
		os.WriteFile(p, data, 0o644)
		_, err := LoadHF(p)
		if err == nil || !errors.Is(err, ErrBadTokenizer) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Fatalf("%s: LoadHF = %v; want ErrBadTokenizer naming %s and %q", c.name, err, p, c.want)
		}
	}
}
