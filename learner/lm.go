package learner

import (
	"encoding/json"
	"fmt"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
)

// lmBatch is one micro-batch of next-token training: B rows of T positions.
// Its slices are buffers reused from batch to batch (capacity B*seq_len).
type lmBatch struct {
	B, T       int
	Tokens     []int32   // (B*T) input ids
	Targets    []int32   // (B*T) next-token ids, valid ids even where Mask is 0
	Mask       []float32 // (B*T) 1 = a loss position, 0 = prompt or padding; nil = every position
	Real       int       // positions that are not padding
	LossTokens int       // positions with Mask 1 (B*T when Mask is nil)

	scratch []sftExample // sft: the examples being packed
}

func newLMBatch(B, T int, masked bool) lmBatch {
	b := lmBatch{B: B, T: T, Tokens: make([]int32, B*T), Targets: make([]int32, B*T)}
	if masked {
		b.Mask = make([]float32, B*T)
	}
	return b
}

// lmData is where a next-token job's batches come from: the pretraining
// corpus (textData) or SFT examples (sftData).
type lmData interface {
	next(b *lmBatch)        // the next training micro-batch, into b's buffers
	evalBatches() []lmBatch // the fixed held-out batches (read-only, shared with evaluators)
	fingerprint() string    // hash of the data's content and split, checked on resume
	// marshalState is the data position for trainer_state.json; unmarshalState
	// checks one and returns the function that applies it.
	marshalState() (json.RawMessage, error)
	unmarshalState(raw json.RawMessage) (apply func(), err error)
}

// lmJob is next-token training: pretraining or SFT. See NewPretrain, NewSFT.
type lmJob struct {
	stage string
	mc    ModelConfig
	dc    DataConfig
	tc    TrainConfig
	seed  uint64

	model *policy.Model
	tok   *tokenizer.Tokenizer
	opt   *policy.AdamW

	data   lmData
	report DataReport
	batch  lmBatch // the micro-batch buffers, reused every step
}

var _ Job = (*lmJob)(nil)

// NewPretrain builds the pretraining stage: a model from BuildModel (fresh,
// or continued from mc.Init), plain-text data tokenised once and cached in
// dc.CacheDir, B×T windows drawn at random offsets of the training tokens
// (the sampler's state is checkpointed), and held-out loss on fixed windows
// spread evenly over the held-out tokens. dev runs the training (e.g.
// kernels.NewCPU(0), every core; nil means that).
func NewPretrain(mc ModelConfig, dc DataConfig, tc TrainConfig, seed uint64, dev kernels.Device) (Job, error) {
	return newLMJob("pretrain", mc, dc, tc, seed, dev)
}

// NewSFT builds the supervised fine-tuning stage: the model from mc.Init (a
// pretrained checkpoint) or fresh, JSONL examples (see sftEncoder for the two
// forms, the template, truncation and the loss mask), batches of B examples
// right-padded to the longest, drawn in a fresh permutation every epoch. The
// loss of a micro-batch is the mean over its response tokens.
func NewSFT(mc ModelConfig, dc DataConfig, tc TrainConfig, seed uint64, dev kernels.Device) (Job, error) {
	return newLMJob("sft", mc, dc, tc, seed, dev)
}

func newLMJob(stage string, mc ModelConfig, dc DataConfig, tc TrainConfig, seed uint64, dev kernels.Device) (*lmJob, error) {
	if err := mc.Validate("model"); err != nil {
		return nil, err
	}
	if err := dc.Validate("data"); err != nil {
		return nil, err
	}
	if err := tc.Validate("train"); err != nil {
		return nil, err
	}
	if dev == nil {
		dev = kernels.NewCPU(0)
	}
	j := &lmJob{stage: stage, mc: mc, dc: dc, tc: tc, seed: seed}
	var err error
	if j.model, j.tok, err = BuildModel(mc, dev, seed); err != nil {
		return nil, err
	}
	if n := j.model.Config.MaxSeqLen; tc.SeqLen > n {
		return nil, fieldErr("train.seq_len", "%d is longer than the model's n_positions %d", tc.SeqLen, n)
	}
	switch stage {
	case "pretrain":
		h, err := tokenizerHash(tokenizerDir(mc))
		if err != nil {
			return nil, fmt.Errorf("%w: model.tokenizer: %w", ErrConfig, err)
		}
		d, rep, err := loadTextData(dc, tc, j.tok, h, seed)
		if err != nil {
			return nil, err
		}
		j.data, j.report = d, rep
	case "sft":
		d, rep, err := loadSFTData(dc, tc, j.tok, seed)
		if err != nil {
			return nil, err
		}
		j.data, j.report = d, rep
	default:
		panic("learner: unknown lm stage " + stage)
	}
	j.batch = newLMBatch(tc.BatchSize, tc.SeqLen, stage == "sft")
	j.opt = policy.NewAdamW(j.model, policy.AdamWConfig{
		LR: float32(tc.LR), Beta1: float32(tc.Beta1), Beta2: float32(tc.Beta2),
		WeightDecay: float32(tc.WeightDecay), GradClip: float32(tc.GradClip),
	})
	return j, nil
}

func (j *lmJob) Stage() string          { return j.stage }
func (j *lmJob) Done() bool             { return j.opt.Step >= j.tc.Steps }
func (j *lmJob) StepsDone() int         { return j.opt.Step }
func (j *lmJob) TotalSteps() int        { return j.tc.Steps }
func (j *lmJob) DataReport() DataReport { return j.report }

// Weights returns a host copy of the parameters (policy.Model.Params).
func (j *lmJob) Weights() []float32 {
	w := make([]float32, j.model.Layout.Total)
	j.model.Dev.Download(w, j.model.Params)
	return w
}

// Step takes one optimizer step: GradAccum micro-batches of forward and
// backward whose gradients add up, scaled by 1/GradAccum so the step follows
// the mean loss; then clipping and AdamW at the scheduled rate. A non-finite
// loss or gradient norm skips the update (see Job.Step).
func (j *lmJob) Step() (StepMetrics, error) {
	m, b := j.model, &j.batch
	step := j.opt.Step + 1
	lr := LRAt(j.tc, step)
	var loss float64
	tokens, lossTokens := 0, 0
	m.ZeroGrad()
	for range j.tc.GradAccum {
		j.data.next(b)
		loss += float64(m.LossAndBackward(b.Tokens, b.Targets, b.Mask, b.B, b.T))
		tokens += b.Real
		lossTokens += b.LossTokens
	}
	k := float64(j.tc.GradAccum)
	if j.tc.GradAccum > 1 {
		m.Dev.Scale(m.Grads, float32(1/k))
	}
	maybePoison(m, step)
	// The batches stay consumed (the data position moved on) whether or not
	// the update is applied.
	norm := policy.GradNorm(m)
	if err := checkFinite(fmt.Sprintf("step %d", step), figure{"loss", loss / k}, figure{"grad norm", norm}); err != nil {
		return StepMetrics{}, err
	}
	gn := j.opt.UpdateWithNorm(m, float32(lr), norm)
	sm := StepMetrics{Step: j.opt.Step, Loss: loss / k, LR: lr, GradNorm: float64(gn), Tokens: tokens}
	if j.stage == "sft" {
		sm.Extra = map[string]float64{"loss_tokens": float64(lossTokens)}
	}
	return sm, nil
}
