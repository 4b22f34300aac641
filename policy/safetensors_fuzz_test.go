package policy

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
)

// The fuzz targets' seeds run as ordinary tests under `go test`; `make fuzz`
// explores past them for a few seconds each. A failure it finds is written to
// testdata/fuzz/<target>/: commit it with the fix so that it stays a test.

// stBytes builds a safetensors file from a header and a data buffer.
func stBytes(hdr string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	return append(append(b, hdr...), data...)
}

// A reader may allocate allocSlack (the os.File, the decoders' state) plus
// allocPerByte for every byte of its input: linear in the file, with JSON
// decoding's constant (a header of many tiny entries costs about 30 bytes a
// byte).
const (
	allocSlack   = 256 << 10
	allocPerByte = 64
)

// allocated runs fn and returns the bytes it allocated (fuzz inputs run one at
// a time in a worker, so the count is fn's own).
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// FuzzReadSafetensors reads arbitrary bytes as a safetensors file: it must
// return tensors that fit the file, or an error wrapping ErrBadCheckpoint;
// never panic, and never allocate more than a small multiple of the file's
// size, whatever the header's length prefix, offsets, dtypes and shapes say.
func FuzzReadSafetensors(f *testing.F) {
	four := f32Bytes([]float32{1, 2, 3, 4})
	for _, s := range []struct{ hdr, data string }{
		{`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}`, string(four) + string(four)},
		{`{"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[4,8]}}    `, "\x00\x3c\x00\xbc\x80\x3f\x00\xc0"},
		{`{"m":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, "\x01\x02\x03\x04"},
		{`{"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"y":{"dtype":"F32","shape":[3,0,5],"data_offsets":[0,0]}}`, ""},
		{`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, string(four[:4])},
		{`{"big":{"dtype":"F32","shape":[1073741824,1073741824],"data_offsets":[0,4]}}`, string(four[:4])},
		{`{"big":{"dtype":"F64","shape":[0,9223372036854775807,9223372036854775807],"data_offsets":[0,0]}}`, ""},
		{`{"neg":{"dtype":"F32","shape":[-1,-4],"data_offsets":[0,16]}}`, string(four)},
		{`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}`, string(four) + string(four)},
		{`{"a":{"dtype":"F32","shape":[4],"data_offsets":[9223372036854775800,9223372036854775807]}}`, ""},
		{`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"extra":1}}`, string(four)},
		{`{"a":null,"b":[],"c":1}`, ""},
		{`{}`, ""},
		{`[]`, ""},
		{`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}{}`, string(four[:4])},
	} {
		f.Add(stBytes(s.hdr, []byte(s.data)))
	}
	// Length prefixes that lie: huge, past the end, shorter than the JSON.
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'})
	f.Add(append(binary.LittleEndian.AppendUint64(nil, 100<<20), "{}"...))
	f.Add(append(binary.LittleEndian.AppendUint64(nil, 1), "{}"...))
	// Many empty tensors in a small header: each once cost a full 512 KiB
	// read buffer, 100 MB for this 11 kB file.
	var many strings.Builder
	many.WriteString("{")
	for i := range 200 {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`"t` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`)
	}
	many.WriteString("}")
	f.Add(stBytes(many.String(), nil))

	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "x.safetensors")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		var ts map[string]SafeTensor
		var err error
		n := allocated(func() { ts, err = ReadSafetensors(path) })
		if limit := uint64(allocSlack + allocPerByte*len(data)); n > limit {
			t.Fatalf("reading a %d-byte file allocated %d bytes, more than %d", len(data), n, limit)
		}
		if err != nil {
			if !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error %v does not wrap ErrBadCheckpoint", err)
			}
			return
		}
		for name, st := range ts {
			numel := 1
			for _, d := range st.Shape {
				if d < 0 {
					t.Fatalf("tensor %s: negative dimension in %v", name, st.Shape)
				}
				numel *= d
			}
			if len(st.Data) != numel {
				t.Fatalf("tensor %s: %d values for shape %v", name, len(st.Data), st.Shape)
			}
			if int64(numel)*dtypeSize[st.DType] > int64(len(data)) {
				t.Fatalf("tensor %s: %d %s values do not fit a %d-byte file", name, numel, st.DType, len(data))
			}
		}
	})
}

// FuzzLoadCheckpoint loads a checkpoint directory whose config.json and
// model.safetensors are fuzzed (seeded with a valid pair): Load must return a
// model or an error wrapping ErrBadCheckpoint, and a config.json that claims
// a huge model must be refused before the model is allocated.
func FuzzLoadCheckpoint(f *testing.F) {
	m, err := New(ckptConfig, kernels.NewCPU(1))
	if err != nil {
		f.Fatal(err)
	}
	m.Init(1)
	dir := f.TempDir()
	if err := m.Save(dir); err != nil {
		f.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		f.Fatal(err)
	}
	weights, err := os.ReadFile(filepath.Join(dir, ModelFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(config, weights)
	f.Add([]byte(`{"model_type":"gpt2","n_embd":8,"n_layer":2,"n_head":2,"n_positions":7,"vocab_size":11}`), weights)
	// Models far larger than the file: Load once allocated them before
	// looking at the weights, and ran out of memory.
	for _, c := range []string{
		`{"model_type":"gpt2","n_embd":8,"n_layer":2000000000,"n_head":2,"n_positions":7,"vocab_size":11}`,
		`{"model_type":"gpt2","n_embd":1048576,"n_layer":2,"n_head":2,"n_positions":7,"vocab_size":11}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":2,"n_head":2,"n_positions":7,"vocab_size":9223372036854775807}`,
		`{"model_type":"gpt2","n_embd":4611686018427387904,"n_layer":4611686018427387904,"n_head":2,"n_positions":7,"vocab_size":11}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":2,"n_head":2,"n_positions":7,"vocab_size":12}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":-2,"n_head":0,"n_positions":7,"vocab_size":11,"layer_norm_epsilon":1e300}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":2,"n_head":2,"n_positions":7,"vocab_size":11,"n_inner":-9223372036854775808}`,
		`{"model_type":"gpt2"} {}`,
		`{"model_type":null,"n_embd":"8"}`,
		`[]`,
		``,
	} {
		f.Add([]byte(c), weights)
	}
	f.Add(config, weights[:len(weights)/2])
	f.Add(config, []byte{})

	f.Fuzz(func(t *testing.T, config, weights []byte) {
		dir := t.TempDir()
		for name, b := range map[string][]byte{ConfigFile: config, ModelFile: weights} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var m *Model
		var err error
		n := allocated(func() { m, err = Load(dir, kernels.NewCPU(1)) })
		if limit := uint64(allocSlack + allocPerByte*(len(config)+len(weights))); n > limit {
			t.Fatalf("loading %d + %d bytes allocated %d bytes, more than %d", len(config), len(weights), n, limit)
		}
		if err != nil {
			if !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error %v does not wrap ErrBadCheckpoint", err)
			}
			return
		}
		if got, ok := paramCount(m.Config); !ok || got != int64(m.Layout.Total) {
			t.Fatalf("paramCount(%+v) = %d, %v; the layout has %d", m.Config, got, ok, m.Layout.Total)
		}
	})
}
