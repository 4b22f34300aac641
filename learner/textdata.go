package learner

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// expandPaths expands files and globs in order. A plain path that does not
// exist, a bad pattern and a glob that matches nothing are errors naming the
// field (e.g. "data.train") and the pattern; files are not deduplicated.
func expandPaths(field string, patterns []string) ([]string, error) {
	var out []string
	for _, p := range patterns {
		if !strings.ContainsAny(p, "*?[") {
			st, err := os.Stat(p)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrData, field, err)
			}
			if st.IsDir() {
				return nil, fmt.Errorf("%w: %s: %s is a directory (name files, or a glob such as %s)", ErrData, field, p, filepath.Join(p, "*.txt"))
			}
			out = append(out, p)
			continue
		}
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: pattern %q: %w", ErrData, field, p, err)
		}
		if len(m) == 0 {
			return nil, fmt.Errorf("%w: %s: glob %q matches no file", ErrData, field, p)
		}
		out = append(out, m...) // filepath.Glob sorts
	}
	return out, nil
}

// textFile is one tokenised plain-text file.
type textFile struct {
	Path   string
	Tokens []int32 // the file's tokens, without the end-of-text that follows it
	Lines  int     // lines of text
	Sum    [32]byte
}

// tokenCache keeps tokenised files in dir as raw little-endian token ids,
// uint16 when the vocabulary fits (uint32 otherwise), one file per (content,
// tokenizer) pair, named by the sha256 of both. An empty dir disables it.
type tokenCache struct {
	dir     string
	tokHash [32]byte
	vocab   int
}

func (c tokenCache) width() int {
	if c.vocab <= 1<<16 {
		return 2
	}
	return 4
}

// path is the cache file of a text whose content hashes to sum.
func (c tokenCache) path(sum [32]byte) string {
	h := sha256.New()
	h.Write([]byte("troupe tokens v1\x00"))
	h.Write(sum[:])
	h.Write(c.tokHash[:])
	return filepath.Join(c.dir, hex.EncodeToString(h.Sum(nil)[:16])+fmt.Sprintf(".u%d", 8*c.width()))
}

// load returns the cached tokens of sum, or nil when absent or unusable (a
// length that is not a whole number of ids, an id outside the vocabulary):
// such a file is simply re-made.
func (c tokenCache) load(sum [32]byte) []int32 {
	if c.dir == "" {
		return nil
	}
	b, err := os.ReadFile(c.path(sum))
	w := c.width()
	if err != nil || len(b)%w != 0 {
		return nil
	}
	out := make([]int32, len(b)/w)
	for i := range out {
		var id uint32
		if w == 2 {
			id = uint32(binary.LittleEndian.Uint16(b[2*i:]))
		} else {
			id = binary.LittleEndian.Uint32(b[4*i:])
		}
		if id >= uint32(c.vocab) {
			return nil
		}
		out[i] = int32(id)
	}
	return out
}

// store writes tokens atomically.
func (c tokenCache) store(sum [32]byte, tokens []int32) error {
	if c.dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("%w: data.cache_dir: %w", ErrConfig, err)
	}
	w := c.width()
	b := make([]byte, w*len(tokens))
	for i, t := range tokens {
		if w == 2 {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(t))
		} else {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(t))
		}
	}
	err := policy.WriteFileAtomic(c.path(sum), func(wr io.Writer) error {
		_, err := wr.Write(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: data.cache_dir: %w", ErrConfig, err)
	}
	return nil
}

// tokenizeText reads path and returns its tokens, from the cache when the same
// content was tokenised with the same tokenizer before. Special tokens in the
// text (a literal "<|endoftext|>" between documents of a dump) become their ids.
func tokenizeText(path string, tok *tokenizer.Tokenizer, cache tokenCache) (textFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return textFile{}, fmt.Errorf("%w: %w", ErrData, err)
	}
	f := textFile{Path: path, Sum: sha256.Sum256(b), Lines: bytes.Count(b, []byte{'\n'})}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		f.Lines++
	}
	if f.Tokens = cache.load(f.Sum); f.Tokens != nil || len(b) == 0 {
		return f, nil
	}
	f.Tokens = tok.Encode(string(b))
	return f, cache.store(f.Sum, f.Tokens)
}

// textData is the pretraining corpus: every file's tokens followed by
// end-of-text, concatenated; training windows are drawn at random offsets.
type textData struct {
	train, val []int32
	B, T       int
	pcg        *rand.PCG // the window sampler's state, saved in checkpoints
	rng        *rand.Rand
	eval       []lmBatch // fixed held-out batches
	sum        string    // hex sha256 of the files' hashes and the split, for the resume check
}

var _ lmData = (*textData)(nil)

// loadTextData tokenises dc.Train (and dc.Val), splits off the held-out tokens
// and prepares EvalBatches fixed held-out batches of B windows of T+1 tokens,
// evenly spaced over the held-out tokens.
func loadTextData(dc DataConfig, tc TrainConfig, tok *tokenizer.Tokenizer, tokHash [32]byte, seed uint64) (*textData, DataReport, error) {
	var rep DataReport
	eot := tok.EOT()
	if eot < 0 {
		return nil, rep, fmt.Errorf("%w: the tokenizer has no %s token to separate documents", ErrConfig, tokenizer.EndOfText)
	}
	cache := tokenCache{dir: dc.CacheDir, tokHash: tokHash, vocab: tok.VocabSize()}
	fp := sha256.New()
	read := func(field string, patterns []string) ([]int32, error) {
		paths, err := expandPaths(field, patterns)
		if err != nil {
			return nil, err
		}
		var all []int32
		for _, p := range paths {
			f, err := tokenizeText(p, tok, cache)
			if err != nil {
				return nil, err
			}
			rep.Files = append(rep.Files, p)
			rep.Lines += f.Lines
			fp.Write(f.Sum[:])
			all = append(all, f.Tokens...)
			all = append(all, eot)
		}
		return all, nil
	}
	d := &textData{B: tc.BatchSize, T: tc.SeqLen}
	all, err := read("data.train", dc.Train)
	if err != nil {
		return nil, rep, err
	}
	valField := "data.val"
	if len(dc.Val) > 0 {
		fp.Write([]byte("val"))
		if d.val, err = read("data.val", dc.Val); err != nil {
			return nil, rep, err
		}
		d.train = all
	} else {
		valField = "data.val_fraction"
		nv := int(math.Round(float64(len(all)) * dc.ValFraction))
		d.train, d.val = all[:len(all)-nv], all[len(all)-nv:]
		fmt.Fprintf(fp, "split %d", nv)
	}
	d.sum = hex.EncodeToString(fp.Sum(nil))
	if len(d.train) <= d.T {
		return nil, rep, fmt.Errorf("%w: data.train: %d training tokens, fewer than seq_len+1 = %d", ErrData, len(d.train), d.T+1)
	}
	if len(d.val) <= d.T {
		return nil, rep, fmt.Errorf("%w: %s: %d held-out tokens, fewer than seq_len+1 = %d", ErrData, valField, len(d.val), d.T+1)
	}
	rep.TrainItems, rep.ValItems = len(d.train), len(d.val)
	rep.UnigramEntropy = unigramEntropy(d.train, tok.VocabSize())

	d.pcg = rand.NewPCG(seed, 0x7072657472616e) // "pretran"
	d.rng = rand.New(d.pcg)

	// Held-out windows at evenly spaced offsets, the same for every evaluation.
	n := tc.EvalBatches * d.B
	span := len(d.val) - d.T - 1
	for k := 0; k < tc.EvalBatches; k++ {
		b := newLMBatch(d.B, d.T, false)
		for r := 0; r < d.B; r++ {
			i := k*d.B + r
			off := 0
			if n > 1 {
				off = int(int64(i) * int64(span) / int64(n-1))
			}
			copy(b.Tokens[r*d.T:(r+1)*d.T], d.val[off:off+d.T])
			copy(b.Targets[r*d.T:(r+1)*d.T], d.val[off+1:off+d.T+1])
		}
		b.Real, b.LossTokens = d.B*d.T, d.B*d.T
		d.eval = append(d.eval, b)
	}
	return d, rep, nil
}

// unigramEntropy is -Σ p log p (nats) of the tokens' frequencies.
func unigramEntropy(tokens []int32, vocab int) float64 {
	counts := make([]int, vocab)
	for _, t := range tokens {
		counts[t]++
	}
	n := float64(len(tokens))
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log(p)
		}
	}
	return h
}

// next fills b with B training windows at offsets drawn uniformly from the
// sampler.
func (d *textData) next(b *lmBatch) {
	T := d.T
	b.B, b.T = d.B, T
	b.Tokens, b.Targets, b.Mask = b.Tokens[:d.B*T], b.Targets[:d.B*T], nil
	for r := 0; r < d.B; r++ {
		off := d.rng.IntN(len(d.train) - T)
		copy(b.Tokens[r*T:(r+1)*T], d.train[off:off+T])
		copy(b.Targets[r*T:(r+1)*T], d.train[off+1:off+T+1])
	}
	b.Real, b.LossTokens = d.B*T, d.B*T
}

func (d *textData) evalBatches() []lmBatch { return d.eval }
func (d *textData) fingerprint() string    { return d.sum }

// textState is the pretraining data's part of trainer_state.json.
type textState struct {
	PCG []byte `json:"pcg"` // math/rand/v2 PCG.MarshalBinary of the window sampler
}

func (d *textData) marshalState() (json.RawMessage, error) {
	b, err := d.pcg.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(textState{PCG: b})
}

func (d *textData) unmarshalState(raw json.RawMessage) (func(), error) {
	var st textState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	var p rand.PCG
	if err := p.UnmarshalBinary(st.PCG); err != nil {
		return nil, fmt.Errorf("data sampler state: %w", err)
	}
	return func() { *d.pcg = p }, nil
}
