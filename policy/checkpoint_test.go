package policy

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// ckptConfig is small enough that every test writes and reads a whole checkpoint.
var ckptConfig = Config{VocabSize: 11, MaxSeqLen: 7, NumLayers: 2, NumHeads: 2, Channels: 8, LayerNormEps: 1e-5}

func newTestModel(t *testing.T, seed uint64) *Model {
	t.Helper()
	m, err := New(ckptConfig, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	m.Init(seed)
	return m
}

// hostParams returns a copy of m's parameters on the host.
func hostParams(m *Model) []float32 {
	h := make([]float32, m.Layout.Total)
	m.Dev.Download(h, m.Params)
	return h
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestSaveLoadRoundTrip(t *testing.T) {
	m := newTestModel(t, 42)
	// Make the biases and LayerNorm weights non-trivial too.
	p := hostParams(m)
	for i := range p {
		p[i] += float32(i%13) * 1e-3
	}
	m.Dev.Upload(m.Params, p)
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Config != m.Config {
		t.Fatalf("config: got %+v, want %+v", got.Config, m.Config)
	}
	if !sameBits(hostParams(got), p) {
		t.Fatalf("parameters differ after a round trip")
	}
	// Saving again over the checkpoint replaces it and leaves no temporary file.
	if err := got.Save(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{ConfigFile, ModelFile}; !slices.Equal(names, want) {
		t.Fatalf("files: got %v, want %v", names, want)
	}
}

func TestSavedFileLayout(t *testing.T) {
	m := newTestModel(t, 1)
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 {
		t.Fatalf("header length %d is not a multiple of 8", n)
	}
	if want := 8 + int(n) + 4*m.Layout.Total; len(b) != want {
		t.Fatalf("file size: got %d, want %d", len(b), want)
	}
	hdr := string(b[8 : 8+n])
	if strings.TrimRight(hdr, " ") != strings.TrimSpace(hdr) || !strings.HasSuffix(strings.TrimRight(hdr, " "), "}") {
		t.Fatalf("header is not a JSON object padded with spaces: %q", hdr)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal([]byte(hdr), &h); err != nil {
		t.Fatal(err)
	}
	if string(h["__metadata__"]) != `{"format":"pt"}` {
		t.Fatalf("__metadata__: got %s, want {\"format\":\"pt\"}", h["__metadata__"])
	}
	if _, ok := h["lm_head.weight"]; ok {
		t.Fatalf("lm_head.weight was written; it is tied to wte")
	}
	// Tensors in Layout order, names and [in,out] shapes exactly the Layout's.
	last := -1
	for _, s := range m.Layout.Specs {
		raw, ok := h[s.Name]
		if !ok {
			t.Fatalf("tensor %s not in header", s.Name)
		}
		var e struct {
			DType       string  `json:"dtype"`
			Shape       []int   `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		if e.DType != "F32" || !slices.Equal(e.Shape, s.Shape) || e.DataOffsets[0] != int64(4*s.Offset) || e.DataOffsets[1] != int64(4*(s.Offset+s.Size)) {
			t.Fatalf("tensor %s: got %+v, want F32 %v at [%d, %d]", s.Name, e, s.Shape, 4*s.Offset, 4*(s.Offset+s.Size))
		}
		pos := strings.Index(hdr, `"`+s.Name+`"`)
		if pos < last {
			t.Fatalf("tensor %s is out of Layout order in the header", s.Name)
		}
		last = pos
	}
	if want := `"transformer.h.0.attn.c_attn.weight":{"dtype":"F32","shape":[8,24]`; !strings.Contains(hdr, want) {
		t.Fatalf("header lacks %s", want)
	}
}

func TestConfigJSON(t *testing.T) {
	m := newTestModel(t, 1)
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"model_type": "gpt2", "activation_function": "gelu_new", "n_embd": 8.0, "n_layer": 2.0,
		"n_head": 2.0, "n_positions": 7.0, "n_ctx": 7.0, "vocab_size": 11.0, "torch_dtype": "float32",
		"tie_word_embeddings": true, "resid_pdrop": 0.1, "n_inner": nil,
	}
	for k, v := range want {
		if got, ok := h[k]; !ok || got != v {
			t.Errorf("config.json %s: got %v, want %v", k, got, v)
		}
	}
	if a, _ := h["architectures"].([]any); len(a) != 1 || a[0] != "GPT2LMHeadModel" {
		t.Errorf("architectures: got %v, want [GPT2LMHeadModel]", h["architectures"])
	}
	if !strings.Contains(string(b), `"layer_norm_epsilon": 1e-05`) {
		t.Errorf("layer_norm_epsilon not written as 1e-05:\n%s", b)
	}
	cfg, err := LoadConfig(dir)
	if err != nil || cfg != m.Config {
		t.Fatalf("LoadConfig: got %+v, %v; want %+v", cfg, err, m.Config)
	}
}

// writeConfigJSON writes a config.json for ckptConfig with the given changes
// (a nil value deletes the key).
func writeConfigJSON(t *testing.T, dir string, change map[string]any) {
	t.Helper()
	h := map[string]any{
		"model_type": "gpt2", "activation_function": "gelu_new", "n_embd": 8, "n_layer": 2,
		"n_head": 2, "n_positions": 7, "n_ctx": 7, "vocab_size": 11, "layer_norm_epsilon": 1e-5,
	}
	for k, v := range change {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	b, _ := json.Marshal(h)
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change map[string]any
		raw    string // whole file instead of change
		want   string
	}{
		{name: "model type", change: map[string]any{"model_type": "llama"}, want: `model_type is "llama", want "gpt2"`},
		{name: "no model type", change: map[string]any{"model_type": nil}, want: "model_type is missing"},
		{name: "activation", change: map[string]any{"activation_function": "relu"}, want: `activation_function is "relu"`},
		{name: "string width", change: map[string]any{"n_embd": "8"}, want: "key n_embd: want int, got a JSON string"},
		{name: "missing heads", change: map[string]any{"n_head": nil}, want: "n_head is missing"},
		{name: "zero layers", change: map[string]any{"n_layer": 0}, want: "n_layer must be > 0"},
		{name: "width not multiple", change: map[string]any{"n_embd": 9}, want: "n_embd must be a positive multiple of n_head"},
		{name: "n_inner", change: map[string]any{"n_inner": 16}, want: "n_inner is 16, want null or 4*n_embd = 32"},
		{name: "untied", change: map[string]any{"tie_word_embeddings": false}, want: "tie_word_embeddings is false"},
		{name: "eps", change: map[string]any{"layer_norm_epsilon": -1}, want: "layer_norm_epsilon must be > 0"},
		{name: "bad json", raw: `{"model_type": "gpt2",`, want: "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.raw != "" {
				os.WriteFile(filepath.Join(dir, ConfigFile), []byte(tc.raw), 0o644)
			} else {
				writeConfigJSON(t, dir, tc.change)
			}
			_, err := LoadConfig(dir)
			t.Log(err)
			if err == nil || !errors.Is(err, ErrBadCheckpoint) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "config.json") {
				t.Fatalf("got %v, want an ErrBadCheckpoint naming config.json and containing %q", err, tc.want)
			}
		})
	}
	// Accepted variants: the other tanh GELU spelling, n_inner spelled out, no epsilon.
	dir := t.TempDir()
	writeConfigJSON(t, dir, map[string]any{"activation_function": "gelu_pytorch_tanh", "n_inner": 32, "layer_norm_epsilon": nil, "bos_token_id": 3})
	if cfg, err := LoadConfig(dir); err != nil || cfg != ckptConfig {
		t.Fatalf("got %+v, %v; want %+v", cfg, err, ckptConfig)
	}
	if _, err := LoadConfig(t.TempDir()); !errors.Is(err, ErrBadCheckpoint) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing config.json: got %v, want ErrBadCheckpoint wrapping ErrNotExist", err)
	}
}

// modelTensors returns m's parameters as SafeTensors in Layout order.
func modelTensors(m *Model) []SafeTensor {
	p := hostParams(m)
	var ts []SafeTensor
	for _, s := range m.Layout.Specs {
		ts = append(ts, SafeTensor{Name: s.Name, DType: "F32", Shape: s.Shape, Data: p[s.Offset : s.Offset+s.Size]})
	}
	return ts
}

// checkpointWith writes config.json for ckptConfig and model.safetensors holding ts.
func checkpointWith(t *testing.T, ts []SafeTensor) string {
	t.Helper()
	dir := t.TempDir()
	writeConfigJSON(t, dir, nil)
	if err := WriteSafetensors(filepath.Join(dir, ModelFile), ts, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func wantBad(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil || !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("got %v, want ErrBadCheckpoint", err)
	}
	t.Log(err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not contain %q", err, w)
		}
	}
}

func TestLoadRefusesWrongTensors(t *testing.T) {
	m := newTestModel(t, 3)
	edit := func(f func([]SafeTensor) []SafeTensor) string {
		return checkpointWith(t, f(modelTensors(m)))
	}
	find := func(ts []SafeTensor, name string) int {
		i := slices.IndexFunc(ts, func(s SafeTensor) bool { return s.Name == name })
		if i < 0 {
			t.Fatalf("no tensor %s", name)
		}
		return i
	}
	for _, tc := range []struct {
		name string
		edit func([]SafeTensor) []SafeTensor
		want []string
	}{
		{"shape", func(ts []SafeTensor) []SafeTensor {
			i := find(ts, "transformer.h.0.ln_1.weight")
			ts[i].Shape, ts[i].Data = []int{7}, ts[i].Data[:7]
			return ts
		}, []string{"model.safetensors: tensor transformer.h.0.ln_1.weight has shape [7], want [8]"}},
		{"transposed", func(ts []SafeTensor) []SafeTensor {
			i := find(ts, "transformer.h.1.mlp.c_fc.weight")
			ts[i].Shape = []int{32, 8}
			return ts
		}, []string{"transformer.h.1.mlp.c_fc.weight has shape [32, 8], want [8, 32]"}},
		{"missing", func(ts []SafeTensor) []SafeTensor {
			i := find(ts, "transformer.h.1.mlp.c_fc.bias")
			j := find(ts, "transformer.ln_f.bias")
			ts = slices.Delete(ts, j, j+1)
			return slices.Delete(ts, i, i+1)
		}, []string{"missing tensors transformer.h.1.mlp.c_fc.bias, transformer.ln_f.bias"}},
		{"unexpected", func(ts []SafeTensor) []SafeTensor {
			return append(ts, SafeTensor{Name: "transformer.h.2.ln_1.weight", Shape: []int{8}, Data: make([]float32, 8)},
				SafeTensor{Name: "score.weight", Shape: []int{1, 8}, Data: make([]float32, 8)})
		}, []string{"unexpected tensors transformer.h.2.ln_1.weight, score.weight"}},
		{"lm_head differs", func(ts []SafeTensor) []SafeTensor {
			w := ts[find(ts, "transformer.wte.weight")]
			head := SafeTensor{Name: "lm_head.weight", Shape: w.Shape, Data: slices.Clone(w.Data)}
			head.Data[2*8+5] += 1
			return append(ts, head)
		}, []string{"lm_head.weight differs from transformer.wte.weight at [2, 5]", "untied"}},
		{"lm_head shape", func(ts []SafeTensor) []SafeTensor {
			return append(ts, SafeTensor{Name: "lm_head.weight", Shape: []int{8}, Data: make([]float32, 8)})
		}, []string{"tensor lm_head.weight has shape [8], want [11, 8]"}},
		{"same parameter twice", func(ts []SafeTensor) []SafeTensor {
			w := ts[find(ts, "transformer.wpe.weight")]
			w.Name = "wpe.weight"
			return append(ts, w)
		}, []string{"tensors transformer.wpe.weight and wpe.weight are the same parameter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(edit(tc.edit), kernels.NewCPU(1))
			wantBad(t, err, tc.want...)
		})
	}
}

// rawTensor is one header entry for writeRaw, which writes safetensors files
// the way an independent writer might: header from a Go map (keys sorted,
// no padding, metadata last or absent), any dtype, any offsets.
type rawTensor struct {
	name, dtype string
	shape       []int
	begin, end  int
}

func writeRaw(t *testing.T, path string, ts []rawTensor, data []byte, meta map[string]string) {
	t.Helper()
	h := map[string]any{}
	for _, r := range ts {
		h[r.name] = map[string]any{"dtype": r.dtype, "shape": r.shape, "data_offsets": []int{r.begin, r.end}}
	}
	if meta != nil {
		h["__metadata__"] = meta
	}
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	writeRawHeader(t, path, uint64(len(hb)), hb, data)
}

func writeRawHeader(t *testing.T, path string, n uint64, hdr, data []byte) {
	t.Helper()
	b := binary.LittleEndian.AppendUint64(nil, n)
	b = append(b, hdr...)
	b = append(b, data...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func f32Bytes(v []float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// TestLoadIndependentWriter loads a checkpoint as the original "gpt2" upload
// stores it: no "transformer." prefix, the attention mask buffers, lm_head
// written out in full, keys in sorted order, weights in F16 and BF16.
func TestLoadIndependentWriter(t *testing.T) {
	m := newTestModel(t, 9)
	p := hostParams(m)
	// Round to values F16 and BF16 hold exactly, so the load must be bit-exact.
	for i := range p {
		p[i] = float32(math.Round(float64(p[i])*256) / 256)
	}
	dir := t.TempDir()
	writeConfigJSON(t, dir, nil)
	var ts []rawTensor
	var data []byte
	add := func(name, dtype string, shape []int, v []float32) {
		begin := len(data)
		for _, x := range v {
			switch dtype {
			case "F32":
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(x))
			case "BF16":
				data = binary.LittleEndian.AppendUint16(data, uint16(math.Float32bits(x)>>16))
			case "F16":
				data = binary.LittleEndian.AppendUint16(data, f32ToF16(t, x))
			}
		}
		ts = append(ts, rawTensor{name, dtype, shape, begin, len(data)})
	}
	dtypes := []string{"F32", "F16", "BF16"}
	for i, s := range m.Layout.Specs {
		add(strings.TrimPrefix(s.Name, "transformer."), dtypes[i%3], s.Shape, p[s.Offset:s.Offset+s.Size])
	}
	wte := m.Layout.Specs[m.Layout.Wte]
	add("lm_head.weight", "F32", wte.Shape, p[wte.Offset:wte.Offset+wte.Size])
	for l := range 2 {
		mask := make([]float32, 49)
		add("h."+string(rune('0'+l))+".attn.bias", "F32", []int{1, 1, 7, 7}, mask)
		add("h."+string(rune('0'+l))+".attn.masked_bias", "F32", []int{}, []float32{-1e4})
	}
	writeRaw(t, filepath.Join(dir, ModelFile), ts, data, map[string]string{"format": "pt"})
	got, err := Load(dir, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	if !sameBits(hostParams(got), p) {
		t.Fatalf("parameters differ from what was written")
	}
}

func TestLoadRefusesIntegerTensor(t *testing.T) {
	m := newTestModel(t, 2)
	dir := t.TempDir()
	writeConfigJSON(t, dir, nil)
	var ts []rawTensor
	var data []byte
	for _, s := range m.Layout.Specs {
		dtype := "F32"
		if s.Name == "transformer.h.1.ln_2.bias" {
			dtype = "I32"
		}
		ts = append(ts, rawTensor{s.Name, dtype, s.Shape, len(data), len(data) + 4*s.Size})
		data = append(data, make([]byte, 4*s.Size)...)
	}
	writeRaw(t, filepath.Join(dir, ModelFile), ts, data, nil)
	_, err := Load(dir, kernels.NewCPU(1))
	wantBad(t, err, "model.safetensors: tensor transformer.h.1.ln_2.bias has dtype I32, want F32")
}

// f32ToF16 narrows x, which must be exactly representable as a normal F16.
func f32ToF16(t *testing.T, x float32) uint16 {
	if x == 0 {
		return uint16(math.Float32bits(x)>>16) & 0x8000
	}
	b := math.Float32bits(x)
	exp := int(b>>23&0xff) - 127 + 15
	if exp <= 0 || exp >= 31 || b&0x1fff != 0 {
		t.Fatalf("%g is not exactly a normal F16", x)
	}
	return uint16(b>>16&0x8000) | uint16(exp)<<10 | uint16(b>>13&0x3ff)
}

func TestF16ToF32(t *testing.T) {
	for _, tc := range []struct {
		h    uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 1.0 / (1 << 24)}, {0x03ff, 1023.0 / (1 << 24)},
		{0x0400, 1.0 / (1 << 14)}, {0x3555, 0.333251953125}, {0x8000, float32(math.Copysign(0, -1))},
		{0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	} {
		if got := f16ToF32(tc.h); math.Float32bits(got) != math.Float32bits(tc.want) {
			t.Errorf("f16ToF32(%#04x): got %g, want %g", tc.h, got, tc.want)
		}
	}
	if got := f16ToF32(0x7e00); !math.IsNaN(float64(got)) {
		t.Errorf("f16ToF32(0x7e00): got %g, want NaN", got)
	}
}

func TestReadSafetensorsRefusals(t *testing.T) {
	four := f32Bytes([]float32{1, 2, 3, 4})
	eight := append(slices.Clone(four), four...)
	valid := func(t *testing.T, path string) {
		writeRaw(t, path, []rawTensor{{"a", "F32", []int{2, 2}, 0, 16}, {"b", "F32", []int{4}, 16, 32}}, eight, nil)
	}
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, path string)
		want  string
	}{
		{"empty file", func(t *testing.T, path string) { os.WriteFile(path, nil, 0o644) }, "file is 0 bytes, too short"},
		{"truncated", func(t *testing.T, path string) {
			valid(t, path)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:len(b)-5], 0o644)
		}, "tensor b data_offsets [16, 32] run past the end of the 27-byte data buffer (truncated?)"},
		{"header beyond file", func(t *testing.T, path string) {
			writeRawHeader(t, path, 1000, []byte(`{}`), nil)
		}, "header length 1000 runs past the end of the file (10 bytes"},
		{"header too long", func(t *testing.T, path string) {
			writeRawHeader(t, path, 1<<40, []byte(`{}`), nil)
		}, "header length 1099511627776 is over the"},
		{"bad json", func(t *testing.T, path string) {
			writeRawHeader(t, path, 10, []byte(`{"a": {"dt`), nil)
		}, "invalid JSON header"},
		{"not an object", func(t *testing.T, path string) {
			writeRawHeader(t, path, 2, []byte(`[]`), nil)
		}, "invalid JSON header: want an object"},
		{"trailing junk", func(t *testing.T, path string) {
			writeRawHeader(t, path, 4, []byte(`{}{}`), nil)
		}, "after the object"},
		{"duplicate", func(t *testing.T, path string) {
			h := `{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}`
			writeRawHeader(t, path, uint64(len(h)), []byte(h), eight)
		}, `header names "a" twice`},
		{"unknown dtype", func(t *testing.T, path string) {
			writeRaw(t, path, []rawTensor{{"a", "F33", []int{4}, 0, 16}}, four, nil)
		}, `tensor a has unknown dtype "F33"`},
		{"integer dtype", func(t *testing.T, path string) {
			writeRaw(t, path, []rawTensor{{"a", "I32", []int{4}, 0, 16}}, four, nil)
		}, "tensor a has dtype I32; only F32, F16 and BF16 can be read"},
		{"size mismatch", func(t *testing.T, path string) {
			writeRaw(t, path, []rawTensor{{"a", "F32", []int{3}, 0, 16}}, four, nil)
		}, "tensor a data_offsets [0, 16] hold 16 bytes, but F32 shape [3] needs 12"},
		{"overlap", func(t *testing.T, path string) {
			writeRaw(t, path, []rawTensor{{"a", "F32", []int{4}, 0, 16}, {"b", "F32", []int{4}, 8, 24}}, eight[:24], nil)
		}, "tensors a [0, 16] and b [8, 24] overlap"},
		{"gap", func(t *testing.T, path string) {
			writeRaw(t, path, []rawTensor{{"a", "F32", []int{2}, 0, 8}, {"b", "F32", []int{2}, 12, 20}}, append(slices.Clone(four), 0, 0, 0, 0), nil)
		}, "bytes [8, 12) of the data buffer belong to no tensor"},
		{"trailing bytes", func(t *testing.T, path string) {
			writeRaw(t, path, []rawTensor{{"a", "F32", []int{2}, 0, 8}}, four, nil)
		}, "data buffer is 16 bytes but the tensors cover 8"},
		{"negative offset", func(t *testing.T, path string) {
			writeRaw(t, path, []rawTensor{{"a", "F32", []int{0}, -4, -4}}, nil, nil)
		}, "invalid data_offsets [-4, -4]"},
		{"missing field", func(t *testing.T, path string) {
			h := `{"a":{"dtype":"F32","shape":[4]}}`
			writeRawHeader(t, path, uint64(len(h)), []byte(h), four)
		}, "tensor a has no data_offsets"},
		{"bad metadata", func(t *testing.T, path string) {
			h := `{"__metadata__":{"format":1}}`
			writeRawHeader(t, path, uint64(len(h)), []byte(h), nil)
		}, "__metadata__ must map strings to strings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.safetensors")
			tc.write(t, path)
			_, err := ReadSafetensors(path)
			wantBad(t, err, "x.safetensors: ", tc.want)
		})
	}
	// The valid file reads back.
	path := filepath.Join(t.TempDir(), "ok.safetensors")
	valid(t, path)
	got, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if a := got["a"]; a.DType != "F32" || !slices.Equal(a.Shape, []int{2, 2}) || !slices.Equal(a.Data, []float32{1, 2, 3, 4}) {
		t.Fatalf("a: got %+v", a)
	}
}

// TestLoadRefusesCorruptFile checks that a checkpoint refusal names the model file.
func TestLoadRefusesCorruptFile(t *testing.T) {
	m := newTestModel(t, 5)
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ModelFile)
	b, _ := os.ReadFile(path)
	os.WriteFile(path, b[:len(b)/2], 0o644)
	_, err := Load(dir, kernels.NewCPU(1))
	wantBad(t, err, path+": tensor", "run past the end")
	os.Remove(path)
	_, err = Load(dir, kernels.NewCPU(1))
	wantBad(t, err, "no such file")
}

func TestWriteReadSafetensors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.safetensors")
	in := []SafeTensor{
		{Name: "z", Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, float32(math.Inf(1)), 0, -0.25}},
		{Name: "scalar", Shape: []int{}, Data: []float32{7}},
		{Name: "empty", Shape: []int{0, 4}, Data: nil},
		{Name: `quote"d`, Shape: []int{1}, Data: []float32{9}},
	}
	if err := WriteSafetensors(path, in, map[string]string{"step": "12"}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("got %d tensors, want %d", len(got), len(in))
	}
	for _, w := range in {
		g := got[w.Name]
		if g.Name != w.Name || g.DType != "F32" || !slices.Equal(g.Shape, w.Shape) || !sameBits(g.Data, w.Data) && len(w.Data) > 0 {
			t.Errorf("%s: got %+v, want %+v", w.Name, g, w)
		}
	}
	s, err := openSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.metadata["format"] != "pt" || s.metadata["step"] != "12" {
		t.Fatalf("metadata: got %v, want format=pt step=12", s.metadata)
	}
	for _, bad := range [][]SafeTensor{
		{{Name: "a", Shape: []int{3}, Data: make([]float32, 2)}},
		{{Name: "a", DType: "F16", Shape: []int{1}, Data: make([]float32, 1)}},
		{{Name: "a", Shape: []int{1}, Data: make([]float32, 1)}, {Name: "a", Shape: []int{1}, Data: make([]float32, 1)}},
	} {
		if err := WriteSafetensors(path, bad, nil); err == nil {
			t.Errorf("WriteSafetensors(%+v) succeeded, want an error", bad)
		}
	}
}

func TestIsAttnBuffer(t *testing.T) {
	for name, want := range map[string]bool{
		"transformer.h.0.attn.bias":           true,
		"transformer.h.11.attn.masked_bias":   true,
		"transformer.h.0.attn.c_attn.bias":    false,
		"transformer.h.x.attn.bias":           false,
		"transformer.h..attn.bias":            false,
		"transformer.h.0.attn.c_proj.bias":    false,
		"transformer.h.0.crossattention.bias": false,
	} {
		if got := isAttnBuffer(name); got != want {
			t.Errorf("isAttnBuffer(%q): got %v, want %v", name, got, want)
		}
	}
}

// TestGoldenCheckpoint loads the checkpoint PyTorch and Hugging Face
// transformers wrote (scripts/gpt2_golden.py), when the fixtures are present.
func TestGoldenCheckpoint(t *testing.T) {
	dirs, _ := filepath.Glob("../testdata/golden/*/" + ModelFile)
	if len(dirs) == 0 {
		t.Skip("no PyTorch-written checkpoints under testdata/golden (scripts/gpt2_golden.py writes them)")
	}
	for _, f := range dirs {
		dir := filepath.Dir(f)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			m, err := Load(dir, kernels.NewCPU(1))
			if err != nil {
				t.Fatal(err)
			}
			// Every tensor agrees with what the generic reader sees.
			ts, err := ReadSafetensors(f)
			if err != nil {
				t.Fatal(err)
			}
			p := hostParams(m)
			for _, s := range m.Layout.Specs {
				st, ok := ts[s.Name]
				if !ok {
					st, ok = ts[strings.TrimPrefix(s.Name, "transformer.")]
				}
				if !ok || !sameBits(st.Data, p[s.Offset:s.Offset+s.Size]) {
					t.Fatalf("tensor %s differs from the file", s.Name)
				}
			}
			// And a re-save is read back identically.
			out := t.TempDir()
			if err := m.Save(out); err != nil {
				t.Fatal(err)
			}
			again, err := Load(out, kernels.NewCPU(1))
			if err != nil {
				t.Fatal(err)
			}
			if !sameBits(hostParams(again), p) {
				t.Fatalf("re-saved checkpoint differs")
			}
		})
	}
}

func TestSaveWithTokenizer(t *testing.T) {
	tok, err := tokenizer.Load("../data/gpt2")
	if err != nil {
		t.Skipf("GPT-2 tokenizer files: %v", err)
	}
	small, _ := New(ckptConfig, kernels.NewCPU(1))
	if err := SaveWithTokenizer(small, tok, t.TempDir()); err == nil || !strings.Contains(err.Error(), "the tokenizer has 50257 ids but the model's vocab_size is 11") {
		t.Fatalf("got %v, want a vocab_size refusal", err)
	}
	cfg := ckptConfig
	cfg.VocabSize = tok.VocabSize()
	m, err := New(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	m.Init(4)
	dir := t.TempDir()
	if err := SaveWithTokenizer(m, tok, dir); err != nil {
		t.Fatal(err)
	}
	var h struct {
		Bos *int `json:"bos_token_id"`
		Eos *int `json:"eos_token_id"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err := json.Unmarshal(b, &h); err != nil || h.Bos == nil || *h.Bos != 50256 || h.Eos == nil || *h.Eos != 50256 {
		t.Fatalf("bos/eos: got %v %v (%v), want 50256", h.Bos, h.Eos, err)
	}
	tok2, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	text := "Hello, world<|endoftext|> again"
	if a, b := tok.Encode(text), tok2.Encode(text); !slices.Equal(a, b) {
		t.Fatalf("reloaded tokenizer encodes %v, want %v", b, a)
	}
	got, err := Load(dir, kernels.NewCPU(1))
	if err != nil {
		t.Fatal(err)
	}
	if !sameBits(hostParams(got), hostParams(m)) {
		t.Fatalf("parameters differ")
	}
}
