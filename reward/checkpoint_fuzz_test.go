package reward

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
)

// FuzzLoad loads a reward checkpoint whose config.json and model.safetensors
// are fuzzed (seeded with a valid pair): Load must return a model or an error
// wrapping ErrBadCheckpoint, never panic, and never allocate more than a
// small multiple of the files' size, whatever config.json claims. The seeds
// run as ordinary tests under `go test`; `make fuzz` explores past them, and
// a failure it finds is written to testdata/fuzz/FuzzLoad/ (commit it with
// the fix).
func FuzzLoad(f *testing.F) {
	cfg := policy.Config{VocabSize: 11, MaxSeqLen: 7, NumLayers: 1, NumHeads: 2, Channels: 8, LayerNormEps: 1e-5}
	m, err := New(cfg, kernels.NewCPU(1), 3)
	if err != nil {
		f.Fatal(err)
	}
	m.Trunk.Init(1)
	m.InitHead(1)
	dir := f.TempDir()
	if err := m.Save(dir, nil); err != nil {
		f.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join(dir, policy.ConfigFile))
	if err != nil {
		f.Fatal(err)
	}
	weights, err := os.ReadFile(filepath.Join(dir, policy.ModelFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(config, weights)
	for _, c := range []string{
		`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_positions":7,"vocab_size":11,"num_labels":1,"pad_token_id":3}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_positions":7,"vocab_size":11,"num_labels":2}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_positions":7,"vocab_size":11,"id2label":{"0":"a","1":"b"}}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_positions":7,"vocab_size":11,"pad_token_id":4294967296}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_positions":7,"vocab_size":11,"pad_token_id":[1]}`,
		// Huge models that the small file cannot hold: refused before allocating.
		`{"model_type":"gpt2","n_embd":8,"n_layer":2000000000,"n_head":2,"n_positions":7,"vocab_size":11}`,
		`{"model_type":"gpt2","n_embd":1048576,"n_layer":1,"n_head":2,"n_positions":7,"vocab_size":11}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":1,"n_head":2,"n_positions":7,"vocab_size":9223372036854775807}`,
		`{"model_type":"gpt2","n_embd":8,"n_layer":2,"n_head":2,"n_positions":7,"vocab_size":11}`,
		`{"model_type":"gpt2"}`,
		``,
	} {
		f.Add([]byte(c), weights)
	}
	f.Add(config, weights[:len(weights)-4])

	f.Fuzz(func(t *testing.T, config, weights []byte) {
		dir := t.TempDir()
		for name, b := range map[string][]byte{policy.ConfigFile: config, policy.ModelFile: weights} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := Load(dir, kernels.NewCPU(1))
		runtime.ReadMemStats(&after)
		// As policy's fuzz targets: linear in the input, with JSON decoding's constant.
		if n, limit := after.TotalAlloc-before.TotalAlloc, uint64(256<<10+64*(len(config)+len(weights))); n > limit {
			t.Fatalf("loading %d + %d bytes allocated %d bytes, more than %d", len(config), len(weights), n, limit)
		}
		if err != nil && !errors.Is(err, ErrBadCheckpoint) {
			t.Fatalf("error %v does not wrap ErrBadCheckpoint", err)
		}
	})
}
