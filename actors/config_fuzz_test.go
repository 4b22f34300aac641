package actors

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/actors/examples"
)

// FuzzParseRunConfig parses arbitrary bytes as a run config: the result is an
// error naming the file, or a config that passes Validate and comes back the
// same through SaveRunConfig and LoadRunConfig; never a panic. The seeds are
// the example configs and broken variants of them; `make fuzz` explores past
// them, and writes a failure to testdata/fuzz/FuzzParseRunConfig/ (commit it
// with the fix).
func FuzzParseRunConfig(f *testing.F) {
	for _, stage := range examples.Stages {
		b, err := examples.FS.ReadFile(stage + ".yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2]) // cut mid-way
	}
	for _, s := range []string{
		"",
		"---\n",
		minimalConfig,
		minimalConfig + "---\nstage: sft\n",
		"stage: pretrain\ndata: {train: corpus.txt}\ntrain: {lr: .nan, steps: 1e3}\n",
		"stage: ppo\nmodel: {n_layer: 99999999999999999999}\ndata: {train: [a]}\n",
		"stage: sft\nmodel: &m {init: x}\nreward: *m\n",
		"stage: [pretrain]\n",
		"stage: pretrain\ndata:\n  train:\n    - {a: b}\n",
		"stage: pretrain\n\tdata: x\n",
		"0: [:]\n",
		"? [a, b]\n: c\n",
		"!!binary stage: pretrain\n",
		"stage: !!int pretrain\n",
		"stage: pretrain\nunknown_key: 1\n",
		"stage: pretrain\ndata: {train: [x], val_fraction: -0.0}\nevaluator: {prompts: \"2+2=\", temperature: 1e309}\n",
		"stage: ppo\ndata: {train: [p.jsonl]}\nnats: {url: 'nats://a:1,nats://b:2', password: hunter2}\ncluster: {enabled: true, members: ['127.0.0.1:7701']}\n",
		strings.Repeat("[", 500) + strings.Repeat("]", 500),
		strings.Repeat("a: ", 200) + "b\n",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, src []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "f.yaml")
		cfg, err := ParseRunConfig(path, src)
		if err != nil {
			if !strings.Contains(err.Error(), "f.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseRunConfig accepted a config that Validate refuses: %v", err)
		}
		saved := filepath.Join(dir, "config.yaml")
		if err := SaveRunConfig(saved, cfg, "fuzz"); err != nil {
			t.Fatalf("SaveRunConfig: %v", err)
		}
		back, err := LoadRunConfig(saved)
		if err != nil {
			t.Fatalf("the saved config does not load: %v", err)
		}
		cfg.NATS = cfg.NATS.withoutSecrets()
		if !reflect.DeepEqual(back, cfg) {
			t.Fatalf("saved and loaded back, the config differs:\n%+v\nwant\n%+v", back, cfg)
		}
	})
}
