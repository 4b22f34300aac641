package learner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
)

// The files of a next-token checkpoint besides the model's own
// (policy.SaveWithTokenizer: model.safetensors, config.json, tokenizer files).
const (
	OptimizerFile    = "optimizer.safetensors" // AdamW moments "adamw.m" and "adamw.v", laid out like the parameters
	TrainerStateFile = "trainer_state.json"    // lmState; written last, so its presence marks a whole checkpoint
)

// lmState is trainer_state.json.
type lmState struct {
	Stage     string          `json:"stage"`      // "pretrain" or "sft"
	Step      int             `json:"step"`       // optimizer steps done
	AdamWStep int             `json:"adamw_step"` // AdamW's bias-correction step (equal to step)
	Data      json.RawMessage `json:"data"`       // the data position: textState or sftState
	// Config lists what an exact resume needs unchanged (the model shape, the
	// train section but eval_batches, the template, the seed, the data's
	// content hash) and ConfigHash hashes it; Restore names what differs.
	Config     map[string]string `json:"config"`
	ConfigHash string            `json:"config_hash"`
}

// resumeConfig is lmState.Config for this job.
func (j *lmJob) resumeConfig() map[string]string {
	c, tc := j.model.Config, j.tc
	return map[string]string{
		"stage":              j.stage,
		"seed":               fmt.Sprint(j.seed),
		"model":              fmt.Sprintf("vocab %d, n_positions %d, n_layer %d, n_head %d, n_embd %d, eps %g", c.VocabSize, c.MaxSeqLen, c.NumLayers, c.NumHeads, c.Channels, c.LayerNormEps),
		"data":               j.data.fingerprint(),
		"data.template":      j.dc.Template,
		"train.steps":        fmt.Sprint(tc.Steps),
		"train.batch_size":   fmt.Sprint(tc.BatchSize),
		"train.seq_len":      fmt.Sprint(tc.SeqLen),
		"train.grad_accum":   fmt.Sprint(tc.GradAccum),
		"train.lr":           fmt.Sprint(tc.LR),
		"train.min_lr":       fmt.Sprint(tc.MinLR),
		"train.warmup_steps": fmt.Sprint(tc.WarmupSteps),
		"train.weight_decay": fmt.Sprint(tc.WeightDecay),
		"train.beta1":        fmt.Sprint(tc.Beta1),
		"train.beta2":        fmt.Sprint(tc.Beta2),
		"train.grad_clip":    fmt.Sprint(tc.GradClip),
	}
}

// hashConfig hashes a resume config in key order.
func hashConfig(c map[string]string) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%s\x00", k, c[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SaveCheckpoint writes the model with its tokenizer, the AdamW moments and
// trainer_state.json into dir, each file atomically, trainer_state.json last.
func (j *lmJob) SaveCheckpoint(dir string) error {
	if err := policy.SaveWithTokenizer(j.model, j.tok, dir); err != nil {
		return err
	}
	n := j.model.Layout.Total
	mom := make([]float32, 2*n)
	j.model.Dev.Download(mom[:n], j.opt.M)
	j.model.Dev.Download(mom[n:], j.opt.V)
	err := policy.WriteSafetensors(filepath.Join(dir, OptimizerFile), []policy.SafeTensor{
		{Name: "adamw.m", DType: "F32", Shape: []int{n}, Data: mom[:n]},
		{Name: "adamw.v", DType: "F32", Shape: []int{n}, Data: mom[n:]},
	}, map[string]string{"step": fmt.Sprint(j.opt.Step)})
	if err != nil {
		return err
	}
	data, err := j.data.marshalState()
	if err != nil {
		return err
	}
	cfg := j.resumeConfig()
	st := lmState{Stage: j.stage, Step: j.opt.Step, AdamWStep: j.opt.Step, Data: data, Config: cfg, ConfigHash: hashConfig(cfg)}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return policy.WriteFileAtomic(filepath.Join(dir, TrainerStateFile), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// Restore loads a checkpoint that SaveCheckpoint wrote for the same config.
// Everything is read and checked before anything changes: a missing, corrupt
// or mismatched checkpoint is refused with ErrCheckpoint and the reason, and
// leaves the job as it was.
func (j *lmJob) Restore(dir string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrCheckpoint, dir, fmt.Sprintf(format, args...))
	}
	b, err := os.ReadFile(filepath.Join(dir, TrainerStateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return bad("no %s (not a checkpoint, or one cut short)", TrainerStateFile)
		}
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	var st lmState
	if err := json.Unmarshal(b, &st); err != nil {
		return bad("%s: %v", TrainerStateFile, err)
	}
	if st.Stage != j.stage {
		return bad("a %q checkpoint, not a %s one", st.Stage, j.stage)
	}
	want := j.resumeConfig()
	if st.ConfigHash != hashConfig(st.Config) {
		return bad("%s: config_hash does not match its config", TrainerStateFile)
	}
	if st.ConfigHash != hashConfig(want) {
		var diffs []string
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if got, ok := st.Config[k]; !ok || got != want[k] {
				diffs = append(diffs, fmt.Sprintf("%s was %q, now %q", k, got, want[k]))
			}
		}
		return bad("written for another config: %s", strings.Join(diffs, "; "))
	}
	if st.Step < 0 || st.Step > j.tc.Steps || st.AdamWStep != st.Step {
		return bad("step %d (adamw_step %d) out of range [0, %d]", st.Step, st.AdamWStep, j.tc.Steps)
	}
	applyData, err := j.data.unmarshalState(st.Data)
	if err != nil {
		return bad("%s: data: %v", TrainerStateFile, err)
	}
	saved, err := policy.Load(dir, kernels.NewCPU(1))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if saved.Config != j.model.Config {
		return bad("model shape %+v, this job's is %+v", saved.Config, j.model.Config)
	}
	ts, err := policy.ReadSafetensors(filepath.Join(dir, OptimizerFile))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	var mom [2][]float32
	for i, name := range []string{"adamw.m", "adamw.v"} {
		t, ok := ts[name]
		if !ok || len(t.Data) != j.model.Layout.Total {
			return bad("%s: tensor %s missing or not %d values", OptimizerFile, name, j.model.Layout.Total)
		}
		mom[i] = t.Data
	}
	j.model.Dev.Upload(j.model.Params, saved.Params.F)
	j.model.Dev.Upload(j.opt.M, mom[0])
	j.model.Dev.Upload(j.opt.V, mom[1])
	j.opt.Step = st.AdamWStep
	applyData()
	return nil
}
