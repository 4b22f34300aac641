package learner

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// LineError is one malformed data line: "file:line: reason". It wraps ErrData.
type LineError struct {
	File   string
	Line   int // 1-based
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }
func (e *LineError) Unwrap() error { return ErrData }

// maxBadListed bounds DataReport.BadLines.
const maxBadListed = 100

// LoadJSONL reads JSONL files (globs expanded; field is the config path named
// in errors, e.g. "data.train") and calls parse on every non-blank line. A
// line that is not a JSON object, or that parse refuses (its error is the
// reason: a missing field, a wrong type, an empty value), is counted bad and
// listed in the report as "file:line: reason"; blank lines are not records and
// are skipped. The load fails when a glob matches nothing, a file cannot be
// read, no line is a record, or more than maxBad of the lines are bad.
func LoadJSONL(field string, patterns []string, maxBad float64, parse func(obj map[string]json.RawMessage) error) (DataReport, error) {
	rep, _, err := loadJSONL(field, patterns, maxBad, parse)
	return rep, err
}

// loadJSONL is LoadJSONL that also returns the sha256 of the files' contents
// (in order), the data half of a resume check.
func loadJSONL(field string, patterns []string, maxBad float64, parse func(obj map[string]json.RawMessage) error) (DataReport, [32]byte, error) {
	var rep DataReport
	var sum [32]byte
	paths, err := expandPaths(field, patterns)
	if err != nil {
		return rep, sum, err
	}
	all := sha256.New()
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return rep, sum, fmt.Errorf("%w: %s: %w", ErrData, field, err)
		}
		h := sha256.New()
		r := bufio.NewReaderSize(io.TeeReader(f, h), 1<<16)
		for n := 1; ; n++ {
			line, rerr := r.ReadBytes('\n')
			if rerr != nil && rerr != io.EOF {
				f.Close()
				return rep, sum, fmt.Errorf("%w: %s: %s:%d: %w", ErrData, field, path, n, rerr)
			}
			if line = bytes.TrimSpace(line); len(line) > 0 {
				rep.Lines++
				if reason := parseLine(line, parse); reason != nil {
					rep.Bad++
					if len(rep.BadLines) < maxBadListed {
						rep.BadLines = append(rep.BadLines, &LineError{File: path, Line: n, Reason: reason.Error()})
					}
				}
			}
			if rerr == io.EOF {
				break
			}
		}
		f.Close()
		all.Write(h.Sum(nil))
		rep.Files = append(rep.Files, path)
	}
	all.Sum(sum[:0])
	if rep.Lines == 0 {
		return rep, sum, fmt.Errorf("%w: %s: no data lines in %s", ErrData, field, strings.Join(paths, ", "))
	}
	if frac := float64(rep.Bad) / float64(rep.Lines); frac > maxBad {
		shown := rep.BadLines[:min(5, len(rep.BadLines))]
		msgs := make([]string, len(shown))
		for i, e := range shown {
			msgs[i] = e.Error()
		}
		more := ""
		if rep.Bad > len(shown) {
			more = fmt.Sprintf("; and %d more", rep.Bad-len(shown))
		}
		return rep, sum, fmt.Errorf("%w: %s: %d of %d lines are malformed (%.3g%%, more than data.max_bad_fraction %g): %s%s",
			ErrData, field, rep.Bad, rep.Lines, 100*frac, maxBad, strings.Join(msgs, "; "), more)
	}
	return rep, sum, nil
}

// parseLine decodes one line as a JSON object and hands it to parse.
func parseLine(line []byte, parse func(map[string]json.RawMessage) error) error {
	if !json.Valid(line) {
		var v any
		err := json.Unmarshal(line, &v)
		return fmt.Errorf("bad JSON: %v", err)
	}
	if line[0] != '{' {
		return fmt.Errorf("want a JSON object, got %s", jsonKind(line))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return fmt.Errorf("bad JSON: %v", err)
	}
	return parse(obj)
}

// jsonKind names the JSON type of a valid value, for "wrong type" reasons.
func jsonKind(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// jsonString returns obj[name] as a string. A missing field, a non-string and
// (unless allowEmpty) an empty string are errors naming the field.
func jsonString(obj map[string]json.RawMessage, name string, allowEmpty bool) (string, error) {
	raw, ok := obj[name]
	if !ok {
		return "", fmt.Errorf("missing field %q", name)
	}
	if k := jsonKind(raw); k != "a string" {
		return "", fmt.Errorf("field %q: want a string, got %s", name, k)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("field %q: %v", name, err)
	}
	if s == "" && !allowEmpty {
		return "", fmt.Errorf("field %q is empty", name)
	}
	return s, nil
}

// sftExample is one tokenised SFT example.
type sftExample struct {
	Tokens []int32 // (L) the whole sequence, L <= seq_len+1: inputs Tokens[:L-1], targets Tokens[1:]
	Loss   []bool  // (L) Loss[i]: token i is a loss target (response tokens and their end-of-text)
}

// sftEncoder turns SFT records into examples.
//
// {"prompt", "response"}: the sequence is the templated prompt's tokens, the
// response's tokens and end-of-text; the loss covers the response and the
// end-of-text.
//
// {"messages": [{"role", "content"}, ...]} (roles system, user, assistant; at
// least one assistant turn) is rendered one turn a line, "ROLE: CONTENT\n",
// then end-of-text; the loss covers each assistant turn's content and its
// newline, and the end-of-text when the last turn is the assistant's. The
// template does not apply to chats. This is troupe's own simple chat format,
// not any model family's.
//
// Text is encoded piece by piece with EncodeOrdinary (a literal
// "<|endoftext|>" in data is text, not a token). A sequence longer than
// seq_len+1 tokens loses tokens from its start (the prompt's beginning); a
// line whose loss tokens would be cut, or whose first loss token would have
// no token before it, is refused as malformed.
type sftEncoder struct {
	tok      *tokenizer.Tokenizer
	template string
	seqLen   int
}

type sftPiece struct {
	text string
	loss bool
}

func (e sftEncoder) parse(obj map[string]json.RawMessage) (sftExample, error) {
	var pieces []sftPiece
	endLoss := true
	if _, chat := obj["messages"]; chat {
		var err error
		if pieces, endLoss, err = chatPieces(obj["messages"]); err != nil {
			return sftExample{}, err
		}
	} else {
		p, err := jsonString(obj, "prompt", true)
		if err != nil {
			return sftExample{}, err
		}
		r, err := jsonString(obj, "response", false)
		if err != nil {
			return sftExample{}, err
		}
		pieces = []sftPiece{{strings.ReplaceAll(e.template, "{prompt}", p), false}, {r, true}}
	}
	var ex sftExample
	for _, p := range pieces {
		ids := e.tok.EncodeOrdinary(p.text)
		ex.Tokens = append(ex.Tokens, ids...)
		for range ids {
			ex.Loss = append(ex.Loss, p.loss)
		}
	}
	ex.Tokens = append(ex.Tokens, e.tok.EOT())
	ex.Loss = append(ex.Loss, endLoss)
	first := -1
	for i, l := range ex.Loss {
		if l {
			first = i
			break
		}
	}
	switch {
	case first < 0:
		return ex, errors.New("no tokens to learn (empty response)")
	case first == 0:
		return ex, errors.New("the prompt is empty: the first response token needs a token before it")
	}
	if L := len(ex.Tokens); L > e.seqLen+1 {
		cut := L - (e.seqLen + 1)
		if cut >= first {
			return ex, fmt.Errorf("the response and its end-of-text are %d tokens, more than seq_len-1 = %d (the prompt may be cut, the response may not)",
				L-first, e.seqLen-1)
		}
		ex.Tokens, ex.Loss = ex.Tokens[cut:], ex.Loss[cut:]
	}
	return ex, nil
}

// chatPieces renders a "messages" array (see sftEncoder).
func chatPieces(raw json.RawMessage) ([]sftPiece, bool, error) {
	if k := jsonKind(raw); k != "an array" {
		return nil, false, fmt.Errorf("field \"messages\": want an array, got %s", k)
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return nil, false, fmt.Errorf("field \"messages\": %v", err)
	}
	var pieces []sftPiece
	assistant := false
	for i, m := range msgs {
		if k := jsonKind(m); k != "an object" {
			return nil, false, fmt.Errorf("messages[%d]: want an object, got %s", i, k)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(m, &obj); err != nil {
			return nil, false, fmt.Errorf("messages[%d]: %v", i, err)
		}
		role, err := jsonString(obj, "role", false)
		if err != nil {
			return nil, false, fmt.Errorf("messages[%d]: %w", i, err)
		}
		switch role {
		case "system", "user", "assistant":
		default:
			return nil, false, fmt.Errorf("messages[%d]: role %q: allowed values: system, user, assistant", i, role)
		}
		content, err := jsonString(obj, "content", role != "assistant")
		if err != nil {
			return nil, false, fmt.Errorf("messages[%d]: %w", i, err)
		}
		assistant = role == "assistant"
		pieces = append(pieces, sftPiece{role + ": ", false}, sftPiece{content + "\n", assistant})
	}
	if len(msgs) == 0 {
		return nil, false, errors.New("field \"messages\" is empty")
	}
	return pieces, assistant, nil
}

// sftData is the SFT examples; the training order is a fresh permutation of
// the examples every epoch, drawn from (seed, epoch), so the data position is
// one counter.
type sftData struct {
	train, val []sftExample
	B          int
	pad        int32 // padding id (end-of-text): a valid target under mask 0
	seed       uint64
	consumed   int64 // training examples drawn so far
	permEp     int64 // the epoch whose order perm holds (-1: none yet)
	perm       []int
	eval       []lmBatch
	sum        string
}

var _ lmData = (*sftData)(nil)

// loadSFTData reads dc.Train (and dc.Val) into examples (see sftEncoder) and
// prepares the fixed held-out batches: the first EvalBatches*B held-out
// examples in file order (all of them when fewer).
func loadSFTData(dc DataConfig, tc TrainConfig, tok *tokenizer.Tokenizer, seed uint64) (*sftData, DataReport, error) {
	if tok.EOT() < 0 {
		return nil, DataReport{}, fmt.Errorf("%w: the tokenizer has no %s token to end a response", ErrConfig, tokenizer.EndOfText)
	}
	enc := sftEncoder{tok: tok, template: dc.Template, seqLen: tc.SeqLen}
	read := func(field string, patterns []string) ([]sftExample, DataReport, [32]byte, error) {
		return loadRecords(field, patterns, dc.MaxBadFraction, enc.parse)
	}
	d := &sftData{B: tc.BatchSize, pad: tok.EOT(), seed: seed, permEp: -1}
	all, rep, sum, err := read("data.train", dc.Train)
	if err != nil {
		return nil, rep, err
	}
	fp := sha256.New()
	fp.Write(sum[:])
	valField := "data.val"
	if len(dc.Val) > 0 {
		val, vrep, vsum, err := read("data.val", dc.Val)
		if err != nil {
			return nil, vrep, err
		}
		rep.Files = append(rep.Files, vrep.Files...)
		rep.Lines += vrep.Lines
		rep.Bad += vrep.Bad
		rep.BadLines = append(rep.BadLines, vrep.BadLines[:min(len(vrep.BadLines), maxBadListed-len(rep.BadLines))]...)
		d.train, d.val = all, val
		fp.Write(vsum[:])
	} else {
		valField = "data.val_fraction"
		nv := int(math.Round(float64(len(all)) * dc.ValFraction))
		if dc.ValFraction > 0 {
			nv = max(nv, 1)
		}
		nv = min(nv, len(all)) // none at all when every line was bad (max_bad_fraction 1)
		d.train, d.val = all[:len(all)-nv], all[len(all)-nv:]
		fmt.Fprintf(fp, "split %d", nv)
	}
	d.sum = hex.EncodeToString(fp.Sum(nil))
	if len(d.train) == 0 {
		return nil, rep, fmt.Errorf("%w: data.train: no training examples left", ErrData)
	}
	if len(d.val) == 0 {
		return nil, rep, fmt.Errorf("%w: %s: no held-out examples", ErrData, valField)
	}
	rep.TrainItems, rep.ValItems = len(d.train), len(d.val)

	n := min(len(d.val), tc.EvalBatches*d.B)
	for lo := 0; lo < n; lo += d.B {
		hi := min(n, lo+d.B)
		b := newLMBatch(hi-lo, tc.SeqLen, true)
		d.pack(&b, d.val[lo:hi])
		d.eval = append(d.eval, b)
	}
	return d, rep, nil
}

// pack lays examples out as one right-padded batch: T is the longest
// example's length less one; pads are end-of-text with mask 0.
func (d *sftData) pack(b *lmBatch, exs []sftExample) {
	T := 0
	for _, ex := range exs {
		T = max(T, len(ex.Tokens)-1)
	}
	B := len(exs)
	b.B, b.T = B, T
	b.Tokens, b.Targets, b.Mask = b.Tokens[:B*T], b.Targets[:B*T], b.Mask[:B*T]
	b.Real, b.LossTokens = 0, 0
	for r, ex := range exs {
		row := r * T
		n := len(ex.Tokens) - 1
		copy(b.Tokens[row:row+n], ex.Tokens[:n])
		copy(b.Targets[row:row+n], ex.Tokens[1:])
		for i := 0; i < n; i++ {
			b.Mask[row+i] = 0
			if ex.Loss[i+1] {
				b.Mask[row+i] = 1
				b.LossTokens++
			}
		}
		for i := n; i < T; i++ {
			b.Tokens[row+i], b.Targets[row+i], b.Mask[row+i] = d.pad, d.pad, 0
		}
		b.Real += n
	}
}

// at returns the k-th training example drawn.
func (d *sftData) at(k int64) *sftExample {
	n := int64(len(d.train))
	if ep := k / n; ep != d.permEp {
		rng := rand.New(rand.NewPCG(d.seed, 0x736674_0000+uint64(ep))) // "sft" + epoch
		d.perm = rng.Perm(len(d.train))
		d.permEp = ep
	}
	return &d.train[d.perm[k%n]]
}

// next fills b with the next B training examples.
func (d *sftData) next(b *lmBatch) {
	if cap(b.scratch) < d.B {
		b.scratch = make([]sftExample, d.B)
	}
	exs := b.scratch[:d.B]
	for i := range exs {
		exs[i] = *d.at(d.consumed)
		d.consumed++
	}
	d.pack(b, exs)
}

func (d *sftData) evalBatches() []lmBatch { return d.eval }
func (d *sftData) fingerprint() string    { return d.sum }

// sftState is the SFT data's part of trainer_state.json.
type sftState struct {
	Consumed int64 `json:"consumed"` // training examples drawn so far
}

func (d *sftData) marshalState() (json.RawMessage, error) {
	return json.Marshal(sftState{Consumed: d.consumed})
}

func (d *sftData) unmarshalState(raw json.RawMessage) (func(), error) {
	var st sftState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, err
	}
	if st.Consumed < 0 {
		return nil, fmt.Errorf("negative data position %d", st.Consumed)
	}
	return func() { d.consumed, d.permEp = st.Consumed, -1 }, nil
}

// loadRecords reads JSONL records with loadJSONL and keeps what parse makes of
// the good ones (the bad ones are in the report).
func loadRecords[T any](field string, patterns []string, maxBad float64,
	parse func(map[string]json.RawMessage) (T, error)) ([]T, DataReport, [32]byte, error) {
	var out []T
	rep, sum, err := loadJSONL(field, patterns, maxBad, func(obj map[string]json.RawMessage) error {
		v, err := parse(obj)
		if err == nil {
			out = append(out, v)
		}
		return err
	})
	return out, rep, sum, err
}
