package policy

// The safetensors format (https://github.com/huggingface/safetensors) is an
// 8-byte little-endian header length N, N bytes of JSON naming each tensor's
// dtype, shape and byte range, then the raw little-endian data. It is read and
// written here by hand rather than through a Go module: the whole format is
// about a hundred lines, and the Go libraries for it are unmaintained, so a
// dependency would cost more than it saves.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
)

// SafeTensor is one tensor of a safetensors file. In memory the values are
// always float32, whatever the file stores.
type SafeTensor struct {
	Name  string    // e.g. "transformer.h.0.attn.c_attn.weight"
	DType string    // in the file: "F32", "F16" or "BF16" on read; "F32" (or "") on write
	Shape []int     // e.g. [768, 2304]
	Data  []float32 // product of Shape values, row-major
}

const (
	// maxHeaderLen refuses absurd headers before allocating them: the real
	// header of a 124M GPT-2 is about 15 kB, the reference implementation's
	// limit is 100 MB.
	maxHeaderLen = 100 << 20
	// chunkFloats is how many values are converted per read or write call.
	chunkFloats = 1 << 16
)

// dtypeSize is the byte size of each safetensors dtype. Only the float types
// can be converted to float32; the others are listed so that a file holding
// them (say a uint8 attention mask buffer) can still be checked and skipped.
var dtypeSize = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// floatDType reports whether values of dtype d can be read as float32.
func floatDType(d string) bool { return d == "F32" || d == "F16" || d == "BF16" }

// stEntry is one tensor as the header describes it.
type stEntry struct {
	name       string
	dtype      string
	shape      []int
	begin, end int64 // byte range within the data buffer
}

// stFile is an open safetensors file whose header has been fully checked.
type stFile struct {
	path     string
	f        *os.File
	entries  []stEntry // header order
	metadata map[string]string
	start    int64 // file offset of the data buffer
}

// badFile is a refusal of the file at path: it wraps ErrBadCheckpoint and
// names the file.
func badFile(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadCheckpoint, path, fmt.Sprintf(format, args...))
}

// openSafetensors opens path and checks its header: length, JSON, every
// entry's dtype, shape and offsets, and that the tensors tile the data buffer
// exactly (no overlap, no gap, nothing after the last one).
func openSafetensors(path string) (*stFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	s, err := parseSafetensors(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func parseSafetensors(path string, f *os.File) (*stFile, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	size := fi.Size()
	if size < 8 {
		return nil, badFile(path, "file is %d bytes, too short for the 8-byte header length (truncated?)", size)
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		return nil, badFile(path, "reading header length: %v", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	switch {
	case n > maxHeaderLen:
		return nil, badFile(path, "header length %d is over the %d-byte limit (not a safetensors file?)", n, maxHeaderLen)
	case int64(n) > size-8:
		return nil, badFile(path, "header length %d runs past the end of the file (%d bytes; truncated?)", n, size)
	case n < 2:
		return nil, badFile(path, "header length %d is too short for a JSON object", n)
	}
	hdr := make([]byte, n)
	if _, err := f.ReadAt(hdr, 8); err != nil {
		return nil, badFile(path, "reading header: %v", err)
	}
	s := &stFile{path: path, f: f, start: 8 + int64(n)}
	if err := s.parseHeader(hdr, size-s.start); err != nil {
		return nil, err
	}
	return s, nil
}

// parseHeader decodes the JSON header with a token reader, which keeps the
// file's tensor order and catches duplicate names that a map would hide.
func (s *stFile) parseHeader(hdr []byte, bufLen int64) error {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return badFile(s.path, "invalid JSON header: want an object, got %s", describeToken(tok, err))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badFile(s.path, "invalid JSON header: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return badFile(s.path, "invalid JSON header: want a tensor name, got %s", describeToken(tok, nil))
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return badFile(s.path, "invalid JSON header at %q: %v", name, err)
		}
		if seen[name] {
			return badFile(s.path, "header names %q twice", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			if err := json.Unmarshal(raw, &s.metadata); err != nil {
				return badFile(s.path, "__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		e, err := parseEntry(name, raw, bufLen)
		if err != nil {
			return badFile(s.path, "%v", err)
		}
		s.entries = append(s.entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return badFile(s.path, "invalid JSON header: %v", err)
	}
	// Only the space padding may follow.
	if tok, err := dec.Token(); err != io.EOF {
		return badFile(s.path, "invalid JSON header: %s after the object", describeToken(tok, err))
	}
	return s.checkTiling(bufLen)
}

// describeToken renders a JSON token (or the error reading it) for a message.
func describeToken(tok json.Token, err error) string {
	switch {
	case err == io.EOF:
		return "end of header"
	case err != nil:
		return err.Error()
	case tok == nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

// parseEntry checks one tensor's description against a data buffer of bufLen bytes.
func parseEntry(name string, raw json.RawMessage, bufLen int64) (stEntry, error) {
	var v struct {
		DType       *string  `json:"dtype"`
		Shape       *[]int   `json:"shape"`
		DataOffsets *[]int64 `json:"data_offsets"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return stEntry{}, fmt.Errorf("tensor %s: invalid header entry: %v", name, err)
	}
	switch {
	case v.DType == nil:
		return stEntry{}, fmt.Errorf("tensor %s has no dtype", name)
	case v.Shape == nil:
		return stEntry{}, fmt.Errorf("tensor %s has no shape", name)
	case v.DataOffsets == nil:
		return stEntry{}, fmt.Errorf("tensor %s has no data_offsets", name)
	}
	e := stEntry{name: name, dtype: *v.DType, shape: *v.Shape}
	elem, ok := dtypeSize[e.dtype]
	if !ok {
		return e, fmt.Errorf("tensor %s has unknown dtype %q", name, e.dtype)
	}
	// Multiply with an overflow guard: nothing larger than the buffer can fit.
	nbytes := elem
	for _, d := range e.shape {
		if d < 0 {
			return e, fmt.Errorf("tensor %s has negative dimension in shape %s", name, fmtShape(e.shape))
		}
		if d != 0 && nbytes > math.MaxInt64/int64(d) {
			return e, fmt.Errorf("tensor %s shape %s is too large", name, fmtShape(e.shape))
		}
		nbytes *= int64(d)
	}
	off := *v.DataOffsets
	if len(off) != 2 {
		return e, fmt.Errorf("tensor %s: data_offsets must be [begin, end], got %v", name, off)
	}
	e.begin, e.end = off[0], off[1]
	switch {
	case e.begin < 0 || e.end < e.begin:
		return e, fmt.Errorf("tensor %s has invalid data_offsets [%d, %d]", name, e.begin, e.end)
	case e.end > bufLen:
		return e, fmt.Errorf("tensor %s data_offsets [%d, %d] run past the end of the %d-byte data buffer (truncated?)", name, e.begin, e.end, bufLen)
	case e.end-e.begin != nbytes:
		return e, fmt.Errorf("tensor %s data_offsets [%d, %d] hold %d bytes, but %s shape %s needs %d", name, e.begin, e.end, e.end-e.begin, e.dtype, fmtShape(e.shape), nbytes)
	}
	return e, nil
}

// checkTiling requires the tensors to cover the data buffer exactly once, as
// the reference implementation does: a gap or an overlap means a corrupt or
// hand-edited file, and trailing bytes mean one that was cut or appended to.
func (s *stFile) checkTiling(bufLen int64) error {
	order := make([]int, len(s.entries))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ea, eb := s.entries[a], s.entries[b]
		if ea.begin != eb.begin {
			return int(min(max(ea.begin-eb.begin, -1), 1))
		}
		return int(min(max(ea.end-eb.end, -1), 1))
	})
	var pos int64
	prev := -1
	for _, i := range order {
		e := s.entries[i]
		if e.begin < pos {
			p := s.entries[prev]
			return badFile(s.path, "tensors %s [%d, %d] and %s [%d, %d] overlap", p.name, p.begin, p.end, e.name, e.begin, e.end)
		}
		if e.begin > pos {
			return badFile(s.path, "bytes [%d, %d) of the data buffer belong to no tensor (before %s)", pos, e.begin, e.name)
		}
		pos = e.end
		prev = i
	}
	if pos != bufLen {
		return badFile(s.path, "data buffer is %d bytes but the tensors cover %d (file has trailing bytes)", bufLen, pos)
	}
	return nil
}

func (s *stFile) Close() error { return s.f.Close() }

// fmtShape writes a shape as PyTorch users read it: [768, 2304].
func fmtShape(shape []int) string {
	s := make([]string, len(shape))
	for i, d := range shape {
		s[i] = strconv.Itoa(d)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// numel is the number of values of e.
func (e stEntry) numel() int {
	n := 1
	for _, d := range e.shape {
		n *= d
	}
	return n
}

// each converts e's values to float32 a chunk at a time and calls fn with the
// index of the chunk's first value. The slice is reused between calls.
func (s *stFile) each(e stEntry, fn func(off int, vals []float32) error) error {
	if !floatDType(e.dtype) {
		return badFile(s.path, "tensor %s has dtype %s; only F32, F16 and BF16 can be read", e.name, e.dtype)
	}
	elem := int(dtypeSize[e.dtype])
	n := e.numel()
	// Buffers no larger than the tensor: a header listing thousands of empty
	// tensors must not cost a full chunk each.
	raw := make([]byte, min(chunkFloats, n)*elem)
	vals := make([]float32, min(chunkFloats, n))
	for off := 0; off < n; off += chunkFloats {
		k := min(chunkFloats, n-off)
		b := raw[:k*elem]
		got, err := s.f.ReadAt(b, s.start+e.begin+int64(off*elem))
		if got < len(b) {
			return badFile(s.path, "reading tensor %s: %v (file truncated while reading?)", e.name, err)
		}
		v := vals[:k]
		switch e.dtype {
		case "F32":
			for i := range v {
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		case "F16":
			for i := range v {
				v[i] = f16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
			}
		case "BF16":
			kernels.DecodeBF16(v, b[:2*len(v)])
		}
		if err := fn(off, v); err != nil {
			return err
		}
	}
	return nil
}

// read fills dst (numel values) with e's values as float32.
func (s *stFile) read(e stEntry, dst []float32) error {
	if len(dst) != e.numel() {
		panic(fmt.Sprintf("policy: read %s into %d values, want %d", e.name, len(dst), e.numel()))
	}
	return s.each(e, func(off int, vals []float32) error {
		copy(dst[off:], vals)
		return nil
	})
}

// f16ToF32 widens an IEEE 754 half-precision value exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN (payload kept)
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0: // zero or subnormal: mant * 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// ReadSafetensors reads every tensor of a safetensors file, converting F16 and
// BF16 to float32 (the DType field keeps what the file held). The header is
// checked in full first; every refusal wraps ErrBadCheckpoint and names the
// file. A file holding a non-float tensor is refused: callers of this reader
// want weights.
func ReadSafetensors(path string) (map[string]SafeTensor, error) {
	s, err := openSafetensors(path)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	// Refuse before allocating: a non-float tensor of n bytes would otherwise
	// cost 4n bytes of float32 first.
	for _, e := range s.entries {
		if !floatDType(e.dtype) {
			return nil, badFile(s.path, "tensor %s has dtype %s; only F32, F16 and BF16 can be read", e.name, e.dtype)
		}
	}
	out := make(map[string]SafeTensor, len(s.entries))
	for _, e := range s.entries {
		t := SafeTensor{Name: e.name, DType: e.dtype, Shape: e.shape, Data: make([]float32, e.numel())}
		if err := s.read(e, t.Data); err != nil {
			return nil, err
		}
		out[e.name] = t
	}
	return out, nil
}

// WriteSafetensors writes tensors, in the given order, as F32 to path
// atomically (see WriteFileAtomic). metadata goes to the header's
// __metadata__; "format": "pt" is added when absent because Hugging Face
// transformers refuses a file without it.
func WriteSafetensors(path string, tensors []SafeTensor, metadata map[string]string) error {
	var hdr bytes.Buffer
	meta := map[string]string{"format": "pt"}
	for k, v := range metadata {
		meta[k] = v
	}
	mj, err := json.Marshal(meta) // keys sorted
	if err != nil {
		return err
	}
	hdr.WriteString(`{"__metadata__":`)
	hdr.Write(mj)
	seen := map[string]bool{}
	var off int64
	for _, t := range tensors {
		if t.DType != "" && t.DType != "F32" {
			return fmt.Errorf("policy: safetensors: tensor %s: cannot write dtype %q, only F32", t.Name, t.DType)
		}
		if t.Name == "" || t.Name == "__metadata__" || seen[t.Name] {
			return fmt.Errorf("policy: safetensors: invalid or duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("policy: safetensors: tensor %s has negative dimension in shape %v", t.Name, t.Shape)
			}
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("policy: safetensors: tensor %s has %d values, shape %v needs %d", t.Name, len(t.Data), t.Shape, n)
		}
		nj, _ := json.Marshal(t.Name)
		shape := make([]string, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = strconv.Itoa(d)
		}
		end := off + 4*int64(n)
		fmt.Fprintf(&hdr, `,%s:{"dtype":"F32","shape":[%s],"data_offsets":[%d,%d]}`, nj, strings.Join(shape, ","), off, end)
		off = end
	}
	hdr.WriteByte('}')
	// Pad with spaces so the data starts 8-byte aligned, as the reference
	// writer does (readers that map the file can then view it in place).
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	return WriteFileAtomic(path, func(w io.Writer) error {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(hdr.Len()))
		if _, err := w.Write(lenBuf[:]); err != nil {
			return err
		}
		if _, err := w.Write(hdr.Bytes()); err != nil {
			return err
		}
		buf := make([]byte, 4*chunkFloats)
		for _, t := range tensors {
			for lo := 0; lo < len(t.Data); lo += chunkFloats {
				v := t.Data[lo:min(lo+chunkFloats, len(t.Data))]
				for i, x := range v {
					binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
				}
				if _, err := w.Write(buf[:4*len(v)]); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// CheckParamsFit refuses cfg, with an error wrapping ErrBadCheckpoint, when
// its model has more parameters than the safetensors file at path could hold
// (2 bytes a value, F16 or BF16, at the least). Checkpoint loaders call it
// before allocating the model, so that a hostile or mistyped config.json
// (n_layer: 2000000000) costs an error, not the memory.
func CheckParamsFit(path string, cfg Config) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	switch n, ok := paramCount(cfg); {
	case !ok:
		return badFile(path, "config.json describes a model of 2^53 or more parameters")
	case n > fi.Size()/2:
		return badFile(path, "config.json describes a model of %d parameters, more than the %d-byte file can hold (does config.json match the weights?)", n, fi.Size())
	}
	return nil
}

// paramCount is the number of parameters of a model of cfg (NewLayout's
// Total), computed without building the layout; ok is false when it is
// absurd (2^53 or more, or a field not positive), so that a hostile
// config.json can be checked against the file before anything is allocated.
func paramCount(cfg Config) (n int64, ok bool) {
	V, T, L, C := float64(cfg.VocabSize), float64(cfg.MaxSeqLen), float64(cfg.NumLayers), float64(cfg.Channels)
	if V <= 0 || T <= 0 || L <= 0 || C <= 0 {
		return 0, false
	}
	// Each term is an integer below the total, so float64 is exact below 2^53.
	f := V*C + T*C + L*(12*C*C+13*C) + 2*C
	if f >= 1<<53 {
		return 0, false
	}
	return int64(f), true
}
