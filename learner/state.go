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
	c := j.model.Config
	model := fmt.Sprintf("vocab %d, n_positions %d, n_layer %d, n_head %d, n_embd %d, eps %g", c.VocabSize, c.MaxSeqLen, c.NumLayers, c.NumHeads, c.Channels, c.LayerNormEps)
	return resumeKeys(j.stage, j.seed, model, j.data.fingerprint(), j.dc.Template, j.tc)
}

// resumeKeys is the resume config every stage shares: what an exact resume
// needs unchanged (stage, seed, model shape, data fingerprint, template, and
// every train.* setting), as strings for trainer_state.json.
func resumeKeys(stage string, seed uint64, model, data, template string, tc TrainConfig) map[string]string {
	return map[string]string{
		"stage":              stage,
		"seed":               fmt.Sprint(seed),
		"model":              model,
		"data":               data,
		"data.template":      template,
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
	data, err := j.data.marshalState()
	if err != nil {
		return err
	}
	return saveOptimizerAndState(dir, j.model.Dev, j.opt, j.model.Layout.Total, j.stage, data, j.resumeConfig())
}

// saveOptimizerAndState writes the AdamW moments (n values each) to
// optimizer.safetensors and then trainer_state.json for stage, data and cfg,
// each atomically, trainer_state.json last.
func saveOptimizerAndState(dir string, dev kernels.Device, opt *policy.AdamW, n int, stage string, data json.RawMessage, cfg map[string]string) error {
	if err := saveMoments(filepath.Join(dir, OptimizerFile), dev, opt, n); err != nil {
		return err
	}
	return saveState(dir, lmState{Stage: stage, Step: opt.Step, AdamWStep: opt.Step, Data: data, Config: cfg, ConfigHash: hashConfig(cfg)})
}

// saveMoments writes opt's moments (n values each) to path, atomically.
func saveMoments(path string, dev kernels.Device, opt *policy.AdamW, n int) error {
	mom := make([]float32, 2*n)
	dev.Download(mom[:n], opt.M)
	dev.Download(mom[n:], opt.V)
	return policy.WriteSafetensors(path, []policy.SafeTensor{
		{Name: "adamw.m", DType: "F32", Shape: []int{n}, Data: mom[:n]},
		{Name: "adamw.v", DType: "F32", Shape: []int{n}, Data: mom[n:]},
	}, map[string]string{"step": fmt.Sprint(opt.Step)})
}

// saveState writes dir's trainer_state.json atomically.
func saveState(dir string, st lmState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return policy.WriteFileAtomic(filepath.Join(dir, TrainerStateFile), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// badCheckpoint is ErrCheckpoint with dir and the reason.
func badCheckpoint(dir, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCheckpoint, dir, fmt.Sprintf(format, args...))
}

// readState reads and checks dir's trainer_state.json: a stage checkpoint
// (kind names it in the error, e.g. "a sft" or "an rm"), its config_hash
// matching its config and want (else the keys that differ), and its step in
// [0, steps]. Errors wrap ErrCheckpoint.
func readState(dir, stage, kind string, want map[string]string, steps int) (lmState, error) {
	var st lmState
	b, err := os.ReadFile(filepath.Join(dir, TrainerStateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return st, badCheckpoint(dir, "no %s (not a checkpoint, or one cut short)", TrainerStateFile)
		}
		return st, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, badCheckpoint(dir, "%s: %v", TrainerStateFile, err)
	}
	if st.Stage != stage {
		return st, badCheckpoint(dir, "a %q checkpoint, not %s one", st.Stage, kind)
	}
	if st.ConfigHash != hashConfig(st.Config) {
		return st, badCheckpoint(dir, "%s: config_hash does not match its config", TrainerStateFile)
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
		return st, badCheckpoint(dir, "written for another config: %s", strings.Join(diffs, "; "))
	}
	// An RL checkpoint's step counts iterations and its adamw_step the
	// minibatch updates; the other stages take one AdamW step per step.
	if st.Step < 0 || st.Step > steps || st.AdamWStep < 0 || (stage != "ppo" && st.AdamWStep != st.Step) {
		return st, badCheckpoint(dir, "step %d (adamw_step %d) out of range [0, %d]", st.Step, st.AdamWStep, steps)
	}
	return st, nil
}

// loadOptimizer reads the AdamW moments "adamw.m" and "adamw.v", n values
// each, from dir's optimizer.safetensors. Errors wrap ErrCheckpoint.
func loadOptimizer(dir string, n int) (m, v []float32, err error) {
	return loadOptimizerFile(dir, OptimizerFile, n)
}

// loadOptimizerFile is loadOptimizer for dir/name.
func loadOptimizerFile(dir, name string, n int) (m, v []float32, err error) {
	ts, err := policy.ReadSafetensors(filepath.Join(dir, name))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	var mom [2][]float32
	for i, tname := range []string{"adamw.m", "adamw.v"} {
		t, ok := ts[tname]
		if !ok || len(t.Data) != n {
			return nil, nil, badCheckpoint(dir, "%s: tensor %s missing or not %d values", name, tname, n)
		}
		mom[i] = t.Data
	}
	return mom[0], mom[1], nil
}

// Restore loads a checkpoint that SaveCheckpoint wrote for the same config.
// Everything is read and checked before anything changes: a missing, corrupt
// or mismatched checkpoint is refused with ErrCheckpoint and the reason, and
// leaves the job as it was.
func (j *lmJob) Restore(dir string) error {
	st, err := readState(dir, j.stage, "a "+j.stage, j.resumeConfig(), j.tc.Steps)
	if err != nil {
		return err
	}
	applyData, err := j.data.unmarshalState(st.Data)
	if err != nil {
		return badCheckpoint(dir, "%s: data: %v", TrainerStateFile, err)
	}
	saved, err := policy.Load(dir, kernels.NewCPU(1))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if saved.Config != j.model.Config {
		return badCheckpoint(dir, "model shape %+v, this job's is %+v", saved.Config, j.model.Config)
	}
	m, v, err := loadOptimizer(dir, j.model.Layout.Total)
	if err != nil {
		return err
	}
	j.model.Dev.Upload(j.model.Params, saved.Params.F)
	j.model.Dev.Upload(j.opt.M, m)
	j.model.Dev.Upload(j.opt.V, v)
	j.opt.Step = st.AdamWStep
	applyData()
	return nil
}
