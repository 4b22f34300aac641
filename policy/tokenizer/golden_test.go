package tokenizer

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// The goldens come from OpenAI's tiktoken (see scripts/tokenizer_golden.mjs); these
// tests only read the JSON.

const (
	gpt2Dir    = "../../data/gpt2"
	goldenPath = "../../testdata/tokenizer/gpt2_golden.json"
	kjvPath    = "../../data/kjv.txt"
)

type golden struct {
	Oracle string `json:"oracle"`
	Cases  []struct {
		Name     string  `json:"name"`
		Text     string  `json:"text"`
		IDs      []int32 `json:"ids"`
		Ordinary []int32 `json:"ordinary"`
	} `json:"cases"`
	Decode []struct {
		IDs  []int32 `json:"ids"`
		Text string  `json:"text"`
	} `json:"decode"`
	Files []struct {
		Path       string `json:"path"`
		Bytes      int    `json:"bytes"`
		SHA256File string `json:"sha256_file"`
		Tokens     int    `json:"tokens"`
		SHA256IDs  string `json:"sha256_ids_int32le"`
	} `json:"files"`
}

var (
	gpt2Once sync.Once
	gpt2Tok  *Tokenizer
	gpt2Err  error
	gold     golden
	goldErr  error
)

func loadGPT2(t testing.TB) (*Tokenizer, *golden) {
	t.Helper()
	gpt2Once.Do(func() {
		gpt2Tok, gpt2Err = Load(gpt2Dir)
		data, err := os.ReadFile(goldenPath)
		if err != nil {
			goldErr = err
			return
		}
		goldErr = json.Unmarshal(data, &gold)
	})
	if gpt2Err != nil {
		t.Fatalf("Load(%s): %v", gpt2Dir, gpt2Err)
	}
	if goldErr != nil {
		t.Fatalf("reading goldens: %v", goldErr)
	}
	return gpt2Tok, &gold
}

func TestGPT2Shape(t *testing.T) {
	tok, _ := loadGPT2(t)
	if got := tok.VocabSize(); got != 50257 {
		t.Fatalf("VocabSize() = %d, want 50257", got)
	}
	if got := tok.EOT(); got != 50256 {
		t.Fatalf("EOT() = %d, want 50256", got)
	}
	for _, c := range []struct {
		s  string
		id int32
	}{{"<|endoftext|>", 50256}, {"!", 0}, {"Ġthe", 262}, {"Hello", 15496}} {
		if id, ok := tok.TokenID(c.s); !ok || id != c.id {
			t.Fatalf("TokenID(%q) = %d, %v; want %d, true", c.s, id, ok, c.id)
		}
	}
	if _, ok := tok.TokenID(" the"); ok {
		t.Fatalf("TokenID(\" the\") found; want the vocab.json spelling only")
	}
}

func TestGoldenEncode(t *testing.T) {
	tok, g := loadGPT2(t)
	if len(g.Cases) < 300 {
		t.Fatalf("only %d golden cases", len(g.Cases))
	}
	for _, c := range g.Cases {
		if got := tok.Encode(c.Text); !slices.Equal(got, c.IDs) {
			t.Errorf("%s: Encode(%q)\n got %v\nwant %v (%s)", c.Name, c.Text, got, c.IDs, g.Oracle)
		}
		if got := tok.EncodeOrdinary(c.Text); !slices.Equal(got, c.Ordinary) {
			t.Errorf("%s: EncodeOrdinary(%q)\n got %v\nwant %v (%s)", c.Name, c.Text, got, c.Ordinary, g.Oracle)
		}
		if got := tok.Decode(c.IDs); got != c.Text {
			t.Errorf("%s: Decode(Encode(%q)) = %q", c.Name, c.Text, got)
		}
		if got := tok.Decode(c.Ordinary); got != c.Text {
			t.Errorf("%s: Decode(EncodeOrdinary(%q)) = %q", c.Name, c.Text, got)
		}
	}
}

func TestGoldenDecodeInvalidUTF8(t *testing.T) {
	tok, g := loadGPT2(t)
	if len(g.Decode) == 0 {
		t.Fatal("no decode goldens")
	}
	for _, c := range g.Decode {
		if got := tok.Decode(c.IDs); got != c.Text {
			t.Errorf("Decode(%v) = %q, want %q", c.IDs, got, c.Text)
		}
	}
	if got, want := tok.Decode([]int32{15496, -1, 50257, 995}), "Hello\uFFFD\uFFFD world"; got != want {
		t.Errorf("Decode with out-of-range ids = %q, want %q", got, want)
	}
}

// TestGoldenKJV encodes all 4 MB of the KJV and compares a hash of the ids with
// tiktoken's; it also reports the speed.
func TestGoldenKJV(t *testing.T) {
	tok, g := loadGPT2(t)
	for _, f := range g.Files {
		data, err := os.ReadFile(filepath.Join("../..", f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f.SHA256File {
			t.Fatalf("%s changed since the goldens were made; rerun scripts/tokenizer_golden.mjs", f.Path)
		}
		tok.cache.mu.Lock()
		tok.cache.m = nil // time a cold cache
		tok.cache.mu.Unlock()
		start := time.Now()
		ids := tok.EncodeOrdinary(string(data))
		el := time.Since(start)
		t.Logf("%s: %d bytes -> %d tokens in %v (%.1f MB/s, cold cache)", f.Path, len(data), len(ids), el, float64(len(data))/1e6/el.Seconds())
		if len(ids) != f.Tokens {
			t.Fatalf("%s: %d tokens, want %d", f.Path, len(ids), f.Tokens)
		}
		if got := hashIDs(ids); got != f.SHA256IDs {
			t.Fatalf("%s: ids hash %s, want %s", f.Path, got, f.SHA256IDs)
		}
		if got := tok.Decode(ids); got != string(data) {
			t.Fatalf("%s: Decode(Encode(text)) differs from text", f.Path)
		}
	}
}

func hashIDs(ids []int32) string {
	buf := make([]byte, 4*len(ids))
	for i, id := range ids {
		binary.LittleEndian.PutUint32(buf[4*i:], uint32(id))
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:])
}

func BenchmarkEncodeKJV(b *testing.B) {
	tok, _ := loadGPT2(b)
	data, err := os.ReadFile(kjvPath)
	if err != nil {
		b.Fatal(err)
	}
	text := string(data)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.EncodeOrdinary(text)
	}
}

func BenchmarkDecodeKJV(b *testing.B) {
	tok, _ := loadGPT2(b)
	data, err := os.ReadFile(kjvPath)
	if err != nil {
		b.Fatal(err)
	}
	ids := tok.EncodeOrdinary(string(data))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		tok.Decode(ids)
	}
}
