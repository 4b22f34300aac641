package learner

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

// rmState is trainer_state.json's "data": the data position. With the
// weights and moments it is all a resumed run needs, since each epoch's order
// is a function of (seed, epoch).
type rmState struct {
	Consumed int64 `json:"consumed"` // training pairs drawn so far
}

// rmJob trains a reward model on preference pairs with the pairwise
// Bradley–Terry loss. See NewRM.
type rmJob struct {
	mc   ModelConfig
	dc   DataConfig
	tc   TrainConfig
	seed uint64

	model *reward.Model
	tok   *tokenizer.Tokenizer
	opt   *policy.AdamW

	train, val []prefPair
	report     DataReport
	dataSum    string // hash of the data files and split, for the resume check

	consumed int64 // training pairs drawn so far; pair k is perm(seed, k/n)[k%n]
	permEp   int64 // the epoch whose order perm holds (-1: none yet)
	perm     []int
}

var _ Job = (*rmJob)(nil)

// NewRM builds the reward-modelling stage: the model is mc.Init's trunk (an SFT
// or pretrained checkpoint: policy.Load then reward.FromPolicy, the head drawn
// from seed; or a reward checkpoint, continued as it is) or a fresh model of
// mc.Shape; the data are JSONL lines {"prompt", "chosen", "rejected"} with an
// optional "kind" (the kind of rejected answer, reported per kind by the
// evaluator). tc.BatchSize is pairs per micro-batch; seq_len bounds each
// prompt+response (longer ones keep their end). The training order is a fresh
// permutation of the pairs every epoch, drawn from (seed, epoch).
func NewRM(mc ModelConfig, dc DataConfig, tc TrainConfig, seed uint64, dev kernels.Device) (Job, error) {
	if err := mc.Validate("model"); err != nil {
		return nil, err
	}
	if err := dc.Validate("data"); err != nil {
		return nil, err
	}
	if err := tc.Validate("train"); err != nil {
		return nil, err
	}
	j := &rmJob{mc: mc, dc: dc, tc: tc, seed: seed, permEp: -1}
	var err error
	if j.model, j.tok, err = rmModel(mc, dev, seed); err != nil {
		return nil, err
	}
	if n := j.model.Trunk.Config.MaxSeqLen; tc.SeqLen > n {
		return nil, fieldErr("train.seq_len", "%d is longer than the model's n_positions %d", tc.SeqLen, n)
	}
	j.model.PadID = j.tok.EOT()
	enc := prefEncoder{tok: j.tok, template: dc.Template, seqLen: tc.SeqLen}
	if j.train, j.val, j.report, j.dataSum, err = loadPrefData(dc, enc); err != nil {
		return nil, err
	}
	j.opt = policy.NewAdamW(j.model.Optim(), policy.AdamWConfig{
		LR: float32(tc.LR), Beta1: float32(tc.Beta1), Beta2: float32(tc.Beta2),
		WeightDecay: float32(tc.WeightDecay), GradClip: float32(tc.GradClip),
	})
	return j, nil
}

// rmModel builds the reward model and its tokenizer (see NewRM): a reward
// checkpoint in mc.Init is continued; anything else goes through BuildModel
// (a language-model checkpoint, or a fresh model) and reward.FromPolicy.
func rmModel(mc ModelConfig, dev kernels.Device, seed uint64) (*reward.Model, *tokenizer.Tokenizer, error) {
	if mc.Init != "" {
		m, err := reward.Load(mc.Init, dev)
		if err == nil {
			tok, err := tokenizer.Load(mc.Init)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: model.init: %s: %w", ErrConfig, mc.Init, err)
			}
			return m, tok, nil
		}
		if !errors.Is(err, reward.ErrNoHead) {
			return nil, nil, fmt.Errorf("%w: model.init: %w", ErrConfig, err)
		}
	}
	p, tok, err := BuildModel(mc, dev, seed)
	if err != nil {
		return nil, nil, err
	}
	m, err := reward.FromPolicy(p, seed)
	dev.Free(p.Params)
	return m, tok, err
}

func (j *rmJob) Stage() string          { return "rm" }
func (j *rmJob) Done() bool             { return j.opt.Step >= j.tc.Steps }
func (j *rmJob) StepsDone() int         { return j.opt.Step }
func (j *rmJob) TotalSteps() int        { return j.tc.Steps }
func (j *rmJob) Weights() []float32     { return j.model.Weights() }
func (j *rmJob) DataReport() DataReport { return j.report }

// pairAt returns the index of the k-th training pair drawn.
func (j *rmJob) pairAt(k int64) int {
	n := int64(len(j.train))
	if ep := k / n; ep != j.permEp {
		rng := rand.New(rand.NewPCG(j.seed, 0x726d00+uint64(ep))) // "rm" + epoch
		j.perm = rng.Perm(len(j.train))
		j.permEp = ep
	}
	return j.perm[k%n]
}

// Step takes one optimizer step over GradAccum micro-batches of BatchSize
// pairs. A non-finite loss or gradient norm skips the update, the pairs
// stay consumed (see Job.Step).
func (j *rmJob) Step() (StepMetrics, error) {
	step := j.opt.Step + 1
	lr := LRAt(j.tc, step)
	pos := j.consumed
	var loss, acc, margin float64
	tokens := 0
	j.model.ZeroGrad()
	for range j.tc.GradAccum {
		chosen := make([][]int32, j.tc.BatchSize)
		rejected := make([][]int32, j.tc.BatchSize)
		for b := range chosen {
			p := j.train[j.pairAt(pos)]
			pos++
			chosen[b], rejected[b] = p.Chosen, p.Rejected
			tokens += len(p.Chosen) + len(p.Rejected)
		}
		st, err := j.model.PairLossAndBackward(chosen, rejected, 1/float32(j.tc.GradAccum))
		if err != nil {
			return StepMetrics{}, err
		}
		loss += st.Loss
		acc += st.Accuracy
		margin += st.Margin
	}
	k := float64(j.tc.GradAccum)
	om := j.model.Optim()
	maybePoison(om, step)
	norm := policy.GradNorm(om)
	if err := checkFinite(fmt.Sprintf("step %d", step), figure{"loss", loss / k}, figure{"grad norm", norm}); err != nil {
		j.consumed = pos // a refused step's pairs are spent: the next try draws new ones
		return StepMetrics{}, err
	}
	gn := j.opt.UpdateWithNorm(om, float32(lr), norm)
	j.consumed = pos // committed only once the step is whole, so a retried (panicked) step redraws the same pairs
	return StepMetrics{
		Step: j.opt.Step, Loss: loss / k, LR: lr, GradNorm: float64(gn), Tokens: tokens,
		Extra: map[string]float64{"accuracy": acc / k, "margin": margin / k},
	}, nil
}

// resumeConfig is what an exact resume needs unchanged (see lmState.Config).
func (j *rmJob) resumeConfig() map[string]string {
	c := j.model.Trunk.Config
	model := fmt.Sprintf("vocab %d, n_positions %d, n_layer %d, n_head %d, n_embd %d, eps %g, score head", c.VocabSize, c.MaxSeqLen, c.NumLayers, c.NumHeads, c.Channels, c.LayerNormEps)
	return resumeKeys("rm", j.seed, model, j.dataSum, j.dc.Template, j.tc)
}

// SaveCheckpoint writes the reward model (reward.Model.Save: HF names and
// config, tokenizer files), the AdamW moments and trainer_state.json (the
// layout of the other stages', lmState), each atomically, trainer_state.json last.
func (j *rmJob) SaveCheckpoint(dir string) error {
	if err := j.model.Save(dir, j.tok); err != nil {
		return err
	}
	data, err := json.Marshal(rmState{Consumed: j.consumed})
	if err != nil {
		return err
	}
	return saveOptimizerAndState(dir, j.model.Dev, j.opt, j.model.NumParams(), "rm", data, j.resumeConfig())
}

// Restore loads a checkpoint that SaveCheckpoint wrote for the same config.
// Everything is read and checked before anything changes: a missing, corrupt
// or mismatched checkpoint is refused with ErrCheckpoint and the reason (the
// config keys that differ), and leaves the job as it was.
func (j *rmJob) Restore(dir string) error {
	st, err := readState(dir, "rm", "an rm", j.resumeConfig(), j.tc.Steps)
	if err != nil {
		return err
	}
	var ds rmState
	if err := json.Unmarshal(st.Data, &ds); err != nil || ds.Consumed < 0 {
		return badCheckpoint(dir, "%s: data: %s is not a data position", TrainerStateFile, st.Data)
	}
	m, err := reward.Load(dir, kernels.NewCPU(1))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if m.Trunk.Config != j.model.Trunk.Config {
		return badCheckpoint(dir, "model shape %+v, this job's is %+v", m.Trunk.Config, j.model.Trunk.Config)
	}
	mv, vv, err := loadOptimizer(dir, j.model.NumParams())
	if err != nil {
		return err
	}
	if err := j.model.SetWeights(m.Weights()); err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	j.model.Dev.Upload(j.opt.M, mv)
	j.model.Dev.Upload(j.opt.V, vv)
	j.opt.Step = st.AdamWStep
	j.consumed = ds.Consumed
	j.permEp = -1
	return nil
}

// NewEvaluator returns an evaluator with its own model copy on its own
// one-thread CPU device. Each Evaluate scores the same held-out pairs: the
// first EvalBatches*BatchSize of a fixed shuffle of the val set (all of it
// when smaller), so every weights version is measured on the same sample.
func (j *rmJob) NewEvaluator(EvalOptions) (Evaluator, error) {
	m, err := reward.New(j.model.Trunk.Config, kernels.NewCPU(1), j.model.PadID)
	if err != nil {
		return nil, err
	}
	order := rand.New(rand.NewPCG(j.seed, 0x76616c)).Perm(len(j.val)) // "val"
	n := min(len(j.val), j.tc.EvalBatches*j.tc.BatchSize)
	pairs := make([]prefPair, n)
	for i := range pairs {
		pairs[i] = j.val[order[i]]
	}
	return &rmEvaluator{model: m, pairs: pairs, batch: j.tc.BatchSize}, nil
}

type rmEvaluator struct {
	model *reward.Model
	pairs []prefPair
	batch int
}

// Evaluate returns val_loss, val_accuracy, val_margin, val_accuracy_<kind> for
// every kind of rejected answer and val_accuracy_<task> for every task (dataset)
// in the held-out pairs.
func (e *rmEvaluator) Evaluate(w []float32) (EvalResult, error) {
	if err := e.model.SetWeights(w); err != nil {
		return EvalResult{}, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	var loss, margin float64
	correct := 0
	kindN, kindOK := map[string]int{}, map[string]int{}
	for lo := 0; lo < len(e.pairs); lo += e.batch {
		hi := min(len(e.pairs), lo+e.batch)
		chosen := make([][]int32, 0, hi-lo)
		rejected := make([][]int32, 0, hi-lo)
		for _, p := range e.pairs[lo:hi] {
			chosen, rejected = append(chosen, p.Chosen), append(rejected, p.Rejected)
		}
		st, err := e.model.PairLoss(chosen, rejected)
		if err != nil {
			return EvalResult{}, err
		}
		n := float64(hi - lo)
		loss += st.Loss * n
		margin += st.Margin * n
		for i, p := range e.pairs[lo:hi] {
			ok := st.Chosen[i] > st.Rejected[i]
			if ok {
				correct++
			}
			for _, k := range []string{p.Kind, p.Task} {
				if k != "" {
					kindN[k]++
					if ok {
						kindOK[k]++
					}
				}
			}
		}
	}
	n := float64(len(e.pairs))
	res := EvalResult{Metrics: map[string]float64{
		"val_loss": loss / n, "val_accuracy": float64(correct) / n, "val_margin": margin / n,
	}}
	kinds := make([]string, 0, len(kindN))
	for k := range kindN {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		res.Metrics["val_accuracy_"+k] = float64(kindOK[k]) / float64(kindN[k])
	}
	return res, nil
}
