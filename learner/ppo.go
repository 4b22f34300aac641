package learner

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"

	"github.com/troupe-rl/troupe/critic"
	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

// RLConfig gathers the sections an RL job reads.
type RLConfig struct {
	Model  ModelConfig  // where the policy (and the reference) start: the SFT checkpoint
	Data   DataConfig   // train: RL prompts JSONL {"prompt", optional "answer"}; val: held-out prompts
	PPO    PPOConfig    // the algorithm and its hyper-parameters
	Critic CriticConfig // the value model
	Reward RewardConfig // where sequence rewards come from
	Seed   uint64
}

// rlPromptRecord is one line of an RL prompts file.
type rlPromptRecord struct {
	Prompt string
	Answer string
}

// ppoJob is the RL learner: policy + critic + their optimizers + the KL controller.
type ppoJob struct {
	cfg  RLConfig
	pc   PPOConfig
	dev  kernels.Device
	tok  *tokenizer.Tokenizer
	eos  int32
	seed uint64

	policy *policy.Model
	popt   *policy.AdamW
	critic *critic.Model
	copt   *policy.AdamW
	init   []float32 // the starting policy: the reference's weights

	train, val []RLPrompt
	trainSum   string // data fingerprint for resume
	report     DataReport

	it      int // iterations trained
	kl      klController
	scores  runningStats // for normalize_reward
	ptx     *textData    // PPO-ptx batches (nil = off)
	ptxB    lmBatch
	critOpt string // critic optimizer file name inside a checkpoint
}

var _ RLJob = (*ppoJob)(nil)

// CriticDir is where a PPO checkpoint keeps its critic.
const CriticDir = "critic"

// NewPPO builds the RL learner: the policy from cfg.Model (normally the SFT
// checkpoint), a frozen copy of its weights for the reference role, the critic
// per cfg.Critic, the prompts, and the PPO-ptx text when ptx_coef > 0. dev runs
// the learner's training (nil = every CPU core).
func NewPPO(cfg RLConfig, dev kernels.Device) (RLJob, error) {
	if dev == nil {
		dev = kernels.NewCPU(0)
	}
	pc := cfg.PPO
	if err := pc.Validate("ppo"); err != nil {
		return nil, err
	}
	if err := cfg.Critic.Validate("critic"); err != nil {
		return nil, err
	}
	if err := cfg.Reward.Validate("reward"); err != nil {
		return nil, err
	}
	if err := cfg.Data.Validate("data"); err != nil {
		return nil, err
	}
	m, tok, err := BuildModel(cfg.Model, dev, cfg.Seed)
	if err != nil {
		return nil, err
	}
	if tok.EOT() < 0 {
		return nil, fmt.Errorf("%w: model: the tokenizer has no %s token to end a completion", ErrConfig, tokenizer.EndOfText)
	}
	j := &ppoJob{cfg: cfg, pc: pc, dev: dev, tok: tok, eos: tok.EOT(), seed: cfg.Seed, policy: m, critOpt: "critic_" + OptimizerFile}
	j.init = make([]float32, m.Layout.Total)
	dev.Download(j.init, m.Params)
	j.kl = klController{Beta: pc.KLCoef, Target: pc.TargetKL, Horizon: pc.KLHorizon}
	if err := j.loadPrompts(); err != nil {
		return nil, err
	}
	if err := j.buildCritic(); err != nil {
		return nil, err
	}
	adam := func(lr, clip float64) policy.AdamWConfig {
		return policy.AdamWConfig{LR: float32(lr), Beta1: float32(pc.Beta1), Beta2: float32(pc.Beta2),
			WeightDecay: float32(pc.WeightDecay), GradClip: float32(clip)}
	}
	j.popt = policy.NewAdamW(m, adam(pc.LR, pc.GradClip))
	j.copt = policy.NewAdamW(j.critic.Optim(), adam(cfg.Critic.LR, cfg.Critic.GradClip))
	if pc.PtxCoef > 0 {
		hash, err := tokenizerHash(cfg.Model.Init)
		if err != nil {
			return nil, fmt.Errorf("%w: ppo.ptx_data: hashing the tokenizer: %w", ErrConfig, err)
		}
		dc := cfg.Data
		dc.Train, dc.Val, dc.ValFraction = pc.PtxData, nil, 0.01 // the held-out 1% is not used
		tc := TrainConfig{BatchSize: pc.PtxBatch, SeqLen: min(pc.PtxSeqLen, m.Config.MaxSeqLen)}
		d, rep, err := loadTextData(dc, tc, tok, hash, cfg.Seed^0x707478) // "ptx"
		if err != nil {
			return nil, fmt.Errorf("ppo.ptx_data: %w", err)
		}
		j.ptx = d
		j.ptxB = newLMBatch(tc.BatchSize, tc.SeqLen, false)
		j.report.Files = append(j.report.Files, rep.Files...)
	}
	return j, nil
}

// loadPrompts reads data.train and data.val (or the last val_fraction of train).
func (j *ppoJob) loadPrompts() error {
	dc := j.cfg.Data
	parse := func(obj map[string]json.RawMessage) (rlPromptRecord, error) {
		p, err := jsonString(obj, "prompt", true)
		if err != nil {
			return rlPromptRecord{}, err
		}
		var a string
		if _, ok := obj["answer"]; ok {
			if a, err = jsonString(obj, "answer", true); err != nil {
				return rlPromptRecord{}, err
			}
		}
		return rlPromptRecord{Prompt: p, Answer: a}, nil
	}
	recs, rep, sum, err := loadRecords("data.train", dc.Train, dc.MaxBadFraction, parse)
	if err != nil {
		return err
	}
	j.report = rep
	var val []rlPromptRecord
	if len(dc.Val) > 0 {
		v, vrep, _, err := loadRecords("data.val", dc.Val, dc.MaxBadFraction, parse)
		if err != nil {
			return err
		}
		val = v
		j.report.Files = append(j.report.Files, vrep.Files...)
		j.report.Lines += vrep.Lines
		j.report.Bad += vrep.Bad
		j.report.BadLines = append(j.report.BadLines, vrep.BadLines...)
		if len(j.report.BadLines) > 100 { // the first 100, as DataReport says
			j.report.BadLines = j.report.BadLines[:100]
		}
	} else {
		n := int(math.Round(float64(len(recs)) * dc.ValFraction))
		recs, val = recs[:len(recs)-n], recs[len(recs)-n:]
	}
	if len(recs) == 0 {
		return fieldErr("data.train", "no prompts in %s", strings.Join(dc.Train, ", "))
	}
	maxPrompt := j.policy.Config.MaxSeqLen - j.pc.MaxNewTokens
	enc := func(rs []rlPromptRecord, field string) ([]RLPrompt, error) {
		out := make([]RLPrompt, len(rs))
		for i, r := range rs {
			text := strings.ReplaceAll(dc.Template, "{prompt}", r.Prompt)
			toks := j.tok.EncodeOrdinary(text)
			if len(toks) == 0 {
				toks = []int32{j.eos} // an empty prompt starts from end-of-text, as GPT-2 samples unconditionally
			}
			if len(toks) > maxPrompt {
				return nil, fieldErr(field, "prompt %d has %d tokens; with ppo.max_new_tokens %d it must fit n_positions %d", i+1, len(toks), j.pc.MaxNewTokens, j.policy.Config.MaxSeqLen)
			}
			out[i] = RLPrompt{ID: int64(i), Text: text, Tokens: toks, Answer: r.Answer}
		}
		return out, nil
	}
	if j.train, err = enc(recs, "data.train"); err != nil {
		return err
	}
	if j.val, err = enc(val, "data.val"); err != nil {
		return err
	}
	j.trainSum = fmt.Sprintf("%x", sum[:8])
	j.report.TrainItems, j.report.ValItems = len(j.train), len(j.val)
	return nil
}

// buildCritic makes the value model per critic.init.
func (j *ppoJob) buildCritic() error {
	cc := j.cfg.Critic
	var err error
	switch cc.Init {
	case "policy":
		j.critic, err = critic.FromPolicy(j.policy, j.seed^0x637269) // "cri"
	case "reward":
		if j.cfg.Reward.Model == "" {
			return fieldErr("critic.init", "reward needs reward.model (a reward-model checkpoint)")
		}
		var rm *reward.Model
		if rm, err = reward.Load(j.cfg.Reward.Model, j.dev); err != nil {
			return fmt.Errorf("%w: critic.init: reward: %w", ErrConfig, err)
		}
		j.critic, err = critic.FromReward(rm)
	default:
		j.critic, err = critic.Load(cc.Init, j.dev)
	}
	if err != nil {
		return fmt.Errorf("%w: critic.init: %w", ErrConfig, err)
	}
	if j.critic.Trunk.Config.MaxSeqLen < j.policy.Config.MaxSeqLen {
		return fieldErr("critic.init", "the critic's n_positions %d is below the policy's %d", j.critic.Trunk.Config.MaxSeqLen, j.policy.Config.MaxSeqLen)
	}
	return nil
}

func (j *ppoJob) Stage() string          { return "ppo" }
func (j *ppoJob) Algorithm() string      { return j.pc.Algorithm }
func (j *ppoJob) Done() bool             { return j.it >= j.pc.Iterations }
func (j *ppoJob) IterationsDone() int    { return j.it }
func (j *ppoJob) TotalIterations() int   { return j.pc.Iterations }
func (j *ppoJob) SamplesPerPrompt() int  { return j.pc.SamplesPerPrompt }
func (j *ppoJob) DataReport() DataReport { return j.report }

// Tokenizer returns the job's tokenizer.
func (j *ppoJob) Tokenizer() *tokenizer.Tokenizer { return j.tok }

// Prompts: prompt k of iteration it is the (it*P+k)-th of an endless stream of
// seeded shuffles of the training prompts, one shuffle per pass. IDs number
// the iteration's samples: it*P*S + k.
func (j *ppoJob) Prompts(it int) []RLPrompt {
	P, n := j.pc.PromptsPerIter, len(j.train)
	out := make([]RLPrompt, P)
	ep, perm := -1, []int(nil)
	for k := range P {
		g := it*P + k
		if e := g / n; e != ep {
			ep, perm = e, rand.New(rand.NewPCG(j.seed, uint64(e)^0x70726f6d)).Perm(n) // "prom"
		}
		p := j.train[perm[g%n]]
		p.ID = int64(it*P + k)
		out[k] = p
	}
	return out
}

// RolloutSeed is the sampling seed of iteration it.
func (j *ppoJob) RolloutSeed(it int) uint64 { return j.seed*0x9e3779b97f4a7c15 + uint64(it) + 1 }

// sampleOptions are the rollouts' sampling settings.
func (j *ppoJob) sampleOptions() policy.SampleOptions {
	pc := j.pc
	return policy.SampleOptions{MaxNewTokens: pc.MaxNewTokens, Temperature: float32(pc.Temperature), TopK: pc.TopK,
		TopP: float32(pc.TopP), StopTokens: []int32{j.eos}}
}

// replica is a copy of the policy with the given weights on its own CPU device.
func (j *ppoJob) replica(w []float32, threads int) (*policy.Model, error) {
	m, err := policy.New(j.policy.Config, kernels.NewCPU(max(1, threads)))
	if err != nil {
		return nil, err
	}
	m.Dev.Upload(m.Params, w)
	return m, nil
}

// NewGenerator returns a generator holding the current policy weights as version 0.
func (j *ppoJob) NewGenerator(name string, threads int) (*Generator, error) {
	m, err := j.replica(j.Weights(), threads)
	if err != nil {
		return nil, err
	}
	return &Generator{Model: m, Opts: j.sampleOptions(), Samples: j.pc.SamplesPerPrompt, Name: name}, nil
}

// NewReference returns the frozen starting policy.
func (j *ppoJob) NewReference(threads int) (*Reference, error) {
	m, err := j.replica(j.init, threads)
	if err != nil {
		return nil, err
	}
	return &Reference{Model: m, Temperature: float32(j.pc.Temperature)}, nil
}

// NewScoring returns the configured reward on its own CPU device.
func (j *ppoJob) NewScoring(threads int) (*Scoring, error) {
	sc, err := BuildScorer(j.cfg.Reward, kernels.NewCPU(max(1, threads)))
	if err != nil {
		return nil, err
	}
	return &Scoring{Scorer: sc, Decode: j.tok.Decode, EOS: j.eos}, nil
}

// Weights is a host copy of the policy.
func (j *ppoJob) Weights() []float32 {
	w := make([]float32, j.policy.Layout.Total)
	j.dev.Download(w, j.policy.Params)
	return w
}

// lrAt is the policy (or critic) rate at iteration it (1-based) after warm-up.
func (j *ppoJob) lrAt(base float64, it int) float64 {
	if w := j.pc.WarmupIters; w > 0 && it <= w {
		return base * float64(it) / float64(w)
	}
	return base
}

// sample is one rollout prepared for training.
type sample struct {
	seq      []int32   // prompt + response
	p        int       // prompt length: response token t is predicted at row p-1+t
	old      []float64 // behaviour log-probs
	oldV     []float64 // critic values before the update
	kl       []float64 // per-token KL estimate
	rewards  []float64
	adv, ret []float64
}

// Train runs one PPO (or A2C) update on the iteration's rollouts. A
// minibatch whose losses or gradient norms are not finite is skipped (no
// policy and no critic update; counted in Extra["skipped_minibatches"]); if
// every minibatch is skipped, Train returns an ErrNonFinite error, with the
// weights and optimizers as they were but the iteration counted (see RLJob.Train).
func (j *ppoJob) Train(it int, rs []Rollout, version int64) (StepMetrics, error) {
	if it != j.it {
		return StepMetrics{}, fmt.Errorf("learner: Train(%d) after %d iterations", it, j.it)
	}
	pc := j.pc
	if want := pc.PromptsPerIter * pc.SamplesPerPrompt; len(rs) != want {
		return StepMetrics{}, fmt.Errorf("learner: iteration %d: %d rollouts, want %d", it, len(rs), want)
	}
	ss := make([]sample, len(rs))
	var respTokens, stopped, maxLag int
	scores := make([]float64, len(rs))
	for i := range rs {
		r := &rs[i]
		n := len(r.Response)
		if len(r.LogProbs) != n || len(r.RefLogProbs) != n {
			return StepMetrics{}, fmt.Errorf("learner: rollout %d (prompt %d): %d tokens, %d log-probs, %d reference log-probs", i, r.PromptID, n, len(r.LogProbs), len(r.RefLogProbs))
		}
		if math.IsNaN(r.Score) || math.IsInf(r.Score, 0) {
			return StepMetrics{}, fmt.Errorf("learner: rollout %d (prompt %d): score %g", i, r.PromptID, r.Score)
		}
		if lag := int(version - r.Version); lag > maxLag {
			maxLag = lag
		}
		if lag := int(version - r.Version); lag > pc.MaxStaleness {
			return StepMetrics{}, fmt.Errorf("learner: rollout %d sampled by version %d, %d behind the learner's %d (max_staleness %d)", i, r.Version, lag, version, pc.MaxStaleness)
		}
		s := &ss[i]
		s.seq = append(append(make([]int32, 0, len(r.Prompt)+n), r.Prompt...), r.Response...)
		s.p = len(r.Prompt)
		s.old = make([]float64, n)
		s.kl = make([]float64, n)
		for t := range n {
			s.old[t] = float64(r.LogProbs[t])
			s.kl[t] = klTerm(r.LogProbs[t], r.RefLogProbs[t], pc.KLEstimator)
		}
		respTokens += n
		if r.Stopped {
			stopped++
		}
		scores[i] = r.Score
	}
	// Score shaping: normalisation by a running std, then clipping.
	shaped := make([]float64, len(rs))
	for _, x := range scores {
		if pc.NormalizeReward {
			j.scores.add(x)
		}
	}
	for i, x := range scores {
		if pc.NormalizeReward {
			x /= j.scores.std()
		}
		if c := pc.ClipReward; c > 0 {
			x = math.Max(-c, math.Min(c, x))
		}
		shaped[i] = x
	}
	// Old values, rewards, GAE.
	j.values(ss)
	beta := j.kl.Beta
	seqKL, totalReward := make([]float64, len(ss)), make([]float64, len(ss))
	allAdv, allV, allR := make([][]float64, len(ss)), make([][]float64, len(ss)), make([][]float64, len(ss))
	for i := range ss {
		s := &ss[i]
		n := len(s.old)
		s.rewards, s.adv, s.ret = make([]float64, n), make([]float64, n), make([]float64, n)
		for t := range n {
			s.rewards[t] = -beta * s.kl[t]
			seqKL[i] += s.kl[t]
		}
		if n > 0 {
			s.rewards[n-1] += shaped[i]
		}
		totalReward[i] = shaped[i] - beta*seqKL[i]
		gae(s.rewards, s.oldV, pc.Gamma, pc.Lambda, s.adv, s.ret)
		allAdv[i], allV[i], allR[i] = s.adv, s.oldV, s.ret
	}
	ev := explainedVariance(allV, allR)
	if pc.WhitenAdvantages {
		whiten(allAdv)
	}
	// Epochs over minibatches.
	epochs := pc.Epochs
	if pc.Algorithm == "a2c" {
		epochs = 1
	}
	lr := j.lrAt(pc.LR, j.it+1)
	clr := j.lrAt(j.cfg.Critic.LR, j.it+1)
	var agg ppoAgg
	var tried, skipped int
	var firstSkip error
	rng := rand.New(rand.NewPCG(j.seed^0x6d62, uint64(it)))
	for ep := range epochs {
		order := rng.Perm(len(ss))
		M := pc.Minibatches
		for mb := range M {
			lo, hi := mb*len(order)/M, (mb+1)*len(order)/M
			batch := make([]*sample, 0, hi-lo)
			for _, k := range order[lo:hi] {
				if len(ss[k].old) > 0 {
					batch = append(batch, &ss[k])
				}
			}
			if len(batch) == 0 {
				continue
			}
			tried++
			where := fmt.Sprintf("iteration %d, epoch %d, minibatch %d", it+1, ep+1, mb+1)
			if err := j.minibatch(where, batch, lr, clr, &agg); err != nil {
				if !errors.Is(err, ErrNonFinite) {
					return StepMetrics{}, err
				}
				skipped++
				if firstSkip == nil {
					firstSkip = err
				}
			}
		}
	}
	// The iteration counts even when no update was applied: its prompts are
	// spent, as a refused step's batches are (see Job.Step), and the KL
	// controller and the score statistics take in its rollouts, which were
	// finite.
	meanKL, _ := meanStd(seqKL)
	j.kl.update(meanKL, len(ss))
	j.it++
	if skipped > 0 && skipped == tried {
		return StepMetrics{}, fmt.Errorf("iteration %d: all %d minibatch updates skipped, the first: %w", it+1, tried, firstSkip)
	}

	rMean, rStd := meanStd(totalReward)
	sMean, sStd := meanStd(scores)
	extra := map[string]float64{
		"reward_mean": rMean, "reward_std": rStd, "score_mean": sMean, "score_std": sStd,
		"kl": meanKL, "kl_coef": beta, "kl_coef_next": j.kl.Beta,
		"entropy": agg.mean(agg.entropy), "clip_frac": agg.mean(agg.clipped), "approx_kl": agg.mean(agg.approxKL),
		"policy_loss": agg.mean(agg.pgLoss), "value_loss": agg.mean(agg.vLoss), "value_clip_frac": agg.mean(agg.vClipped),
		"explained_variance": ev, "response_length": float64(respTokens) / float64(len(rs)),
		"stopped_frac": float64(stopped) / float64(len(rs)), "version_lag_max": float64(maxLag),
		"critic_grad_norm": agg.cGrad / math.Max(1, agg.updates), "lr_critic": clr,
	}
	if j.ptx != nil {
		extra["ptx_loss"] = agg.ptxLoss / math.Max(1, agg.updates)
	}
	if skipped > 0 {
		extra["skipped_minibatches"] = float64(skipped)
	}
	for name, v := range partMeans(rs) {
		extra["score_"+name] = v
	}
	tokens := 0
	for i := range ss {
		tokens += len(ss[i].seq)
	}
	return StepMetrics{Step: j.it, Loss: agg.mean(agg.pgLoss), LR: lr, GradNorm: agg.pGrad / math.Max(1, agg.updates),
		Tokens: tokens * epochs, Extra: extra}, nil
}

// partMeans averages each named score part over the rollouts.
func partMeans(rs []Rollout) map[string]float64 {
	sum, n := map[string]float64{}, map[string]float64{}
	for _, r := range rs {
		for k, v := range r.ScoreParts {
			sum[k] += v
			n[k]++
		}
	}
	for k := range sum {
		sum[k] /= n[k]
	}
	return sum
}

// ppoAgg sums per-token figures over an update.
type ppoAgg struct {
	tokens                                              float64
	entropy, clipped, approxKL, pgLoss, vLoss, vClipped float64
	pGrad, cGrad, ptxLoss, updates                      float64
}

func (a *ppoAgg) mean(x float64) float64 {
	if a.tokens == 0 {
		return 0
	}
	return x / a.tokens
}

// pack lays samples out as B rows of T = the longest sequence (right-padded):
// tokens, next-token targets, and for each sample the rows of its response.
func pack(batch []*sample) (tokens, targets []int32, B, T int) {
	B = len(batch)
	for _, s := range batch {
		T = max(T, len(s.seq))
	}
	tokens, targets = make([]int32, B*T), make([]int32, B*T)
	for b, s := range batch {
		copy(tokens[b*T:], s.seq)
		for t := 0; t+1 < len(s.seq); t++ {
			targets[b*T+t] = s.seq[t+1]
		}
	}
	return tokens, targets, B, T
}

// values sets oldV (old = true) of every sample with the critic, in chunks of
// at most a minibatch.
func (j *ppoJob) values(ss []sample) {
	chunk := max(1, (len(ss)+j.pc.Minibatches-1)/j.pc.Minibatches)
	for lo := 0; lo < len(ss); lo += chunk {
		var batch []*sample
		for k := lo; k < min(len(ss), lo+chunk); k++ {
			batch = append(batch, &ss[k])
		}
		tokens, _, B, T := pack(batch)
		v := j.critic.Values(tokens, B, T)
		for b, s := range batch {
			n := len(s.seq) - s.p
			s.oldV = make([]float64, n)
			for t := range n {
				s.oldV[t] = float64(v[b*T+s.p-1+t])
			}
		}
	}
}

// minibatch is one policy and one critic update, or neither: both backward
// passes run first (the critic reads only its own parameters, so the order
// changes no figure), then a non-finite policy loss, log-prob, PPO-ptx loss,
// value loss or gradient norm skips both updates with an ErrNonFinite error
// naming where and the figures; agg is then left as it was (the PPO-ptx batch
// stays consumed).
func (j *ppoJob) minibatch(where string, batch []*sample, lr, clr float64, agg *ppoAgg) error {
	pc := j.pc
	tokens, targets, B, T := pack(batch)
	var ntok float64
	for _, s := range batch {
		ntok += float64(len(s.old))
	}
	before := *agg
	// Policy.
	m := j.policy
	m.ZeroGrad()
	ptxLoss := 0.0
	if j.ptx != nil {
		b := &j.ptxB
		j.ptx.next(b)
		ptxLoss = float64(m.LossAndBackward(b.Tokens, b.Targets, b.Mask, b.B, b.T))
		agg.ptxLoss += ptxLoss
		m.Dev.Scale(m.Grads, float32(pc.PtxCoef))
	}
	logp, ent := m.ForwardLogProbs(tokens, targets, B, T, float32(pc.Temperature), true)
	dlogp := make([]float32, B*T)
	var dent []float32
	if pc.EntropyCoef > 0 {
		dent = make([]float32, B*T)
	}
	badLogProb := 0.0 // the first non-finite log-prob (0: none)
	pgLoss := 0.0
	for b, s := range batch {
		for t := range s.old {
			row := b*T + s.p - 1 + t
			lp := float64(logp[row])
			if (math.IsNaN(lp) || math.IsInf(lp, 0)) && badLogProb == 0 {
				badLogProb = lp
			}
			var loss, d float64
			if pc.Algorithm == "a2c" {
				loss, d = -s.adv[t]*lp, -s.adv[t]
			} else {
				var clipped bool
				loss, d, clipped = surrogate(lp, s.old[t], s.adv[t], pc.Clip)
				if clipped {
					agg.clipped++
				}
			}
			dlogp[row] = float32(d / ntok)
			if dent != nil {
				dent[row] = float32(-pc.EntropyCoef / ntok)
			}
			diff := lp - s.old[t]
			agg.approxKL += 0.5 * diff * diff
			agg.pgLoss += loss
			pgLoss += loss
			agg.entropy += float64(ent[row])
		}
	}
	m.BackwardLogProbs(dlogp, dent)
	maybePoison(m, j.popt.Step+1)
	// Critic.
	c := j.critic
	c.ZeroGrad()
	v := c.Values(tokens, B, T)
	dv := make([]float32, B*T)
	vLoss := 0.0
	for b, s := range batch {
		for t := range s.old {
			row := b*T + s.p - 1 + t
			loss, d, clipped := valueLoss(float64(v[row]), s.oldV[t], s.ret[t], pc.ValueClip)
			if clipped {
				agg.vClipped++
			}
			agg.vLoss += loss
			vLoss += loss
			dv[row] = float32(pc.VFCoef * d / ntok)
		}
	}
	c.Backward(dv)
	cm := c.Optim()
	pNorm, cNorm := policy.GradNorm(m), policy.GradNorm(cm)
	figs := []figure{{"policy loss", pgLoss / ntok}, {"policy grad norm", pNorm},
		{"value loss", vLoss / ntok}, {"critic grad norm", cNorm}}
	if j.ptx != nil {
		figs = append(figs, figure{"ptx loss", ptxLoss})
	}
	if badLogProb != 0 {
		figs = append(figs, figure{"policy log-prob", badLogProb})
	}
	if err := checkFinite(where, figs...); err != nil {
		*agg = before
		return err
	}
	agg.pGrad += float64(j.popt.UpdateWithNorm(m, float32(lr), pNorm))
	agg.cGrad += float64(j.copt.UpdateWithNorm(cm, float32(clr), cNorm))
	agg.tokens += ntok
	agg.updates++
	return nil
}

// ppoState is trainer_state.json's data for an RL checkpoint.
type ppoState struct {
	KL          klController    `json:"kl"`
	Scores      runningStats    `json:"scores"`
	CriticAdamW int             `json:"critic_adamw_step"`
	Ptx         json.RawMessage `json:"ptx,omitempty"`
}

func (j *ppoJob) resumeConfig() map[string]string {
	c := j.policy.Config
	model := fmt.Sprintf("vocab %d, n_positions %d, n_layer %d, n_head %d, n_embd %d", c.VocabSize, c.MaxSeqLen, c.NumLayers, c.NumHeads, c.Channels)
	b, _ := json.Marshal(j.pc)
	return map[string]string{"stage": "ppo", "seed": fmt.Sprint(j.seed), "model": model, "data": j.trainSum,
		"data.template": j.cfg.Data.Template, "ppo": string(b)}
}

// SaveCheckpoint writes the policy (HF layout, with its tokenizer), the
// critic in dir/critic, both optimizers and trainer_state.json (last).
func (j *ppoJob) SaveCheckpoint(dir string) error {
	if err := policy.SaveWithTokenizer(j.policy, j.tok, dir); err != nil {
		return err
	}
	if err := j.critic.Save(filepath.Join(dir, CriticDir)); err != nil {
		return err
	}
	if err := saveMoments(filepath.Join(dir, j.critOpt), j.dev, j.copt, j.critic.NumParams()); err != nil {
		return err
	}
	if err := saveMoments(filepath.Join(dir, OptimizerFile), j.dev, j.popt, j.policy.Layout.Total); err != nil {
		return err
	}
	st := ppoState{KL: j.kl, Scores: j.scores, CriticAdamW: j.copt.Step}
	if j.ptx != nil {
		raw, err := j.ptx.marshalState()
		if err != nil {
			return err
		}
		st.Ptx = raw
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	// trainer_state.json last: step = iterations, adamw_step = the policy's
	// minibatch updates.
	cfg := j.resumeConfig()
	return saveState(dir, lmState{Stage: "ppo", Step: j.it, AdamWStep: j.popt.Step, Data: data, Config: cfg, ConfigHash: hashConfig(cfg)})
}

// Restore continues from a checkpoint SaveCheckpoint wrote for the same config.
func (j *ppoJob) Restore(dir string) error {
	st, err := readState(dir, "ppo", "a ppo", j.resumeConfig(), j.pc.Iterations)
	if err != nil {
		return err
	}
	var ds ppoState
	if err := json.Unmarshal(st.Data, &ds); err != nil {
		return badCheckpoint(dir, "%s: data: %v", TrainerStateFile, err)
	}
	var applyPtx func()
	if j.ptx != nil {
		if applyPtx, err = j.ptx.unmarshalState(ds.Ptx); err != nil {
			return badCheckpoint(dir, "%s: ptx: %v", TrainerStateFile, err)
		}
	}
	pm, err := policy.Load(dir, kernels.NewCPU(1))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if pm.Config != j.policy.Config {
		return badCheckpoint(dir, "model shape %+v, this job's is %+v", pm.Config, j.policy.Config)
	}
	cm, err := critic.Load(filepath.Join(dir, CriticDir), kernels.NewCPU(1))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	if cm.NumParams() != j.critic.NumParams() {
		return badCheckpoint(dir, "critic has %d parameters, this job's has %d", cm.NumParams(), j.critic.NumParams())
	}
	pmv, pvv, err := loadOptimizer(dir, j.policy.Layout.Total)
	if err != nil {
		return err
	}
	cmv, cvv, err := loadOptimizerFile(dir, j.critOpt, j.critic.NumParams())
	if err != nil {
		return err
	}
	w := make([]float32, pm.Layout.Total)
	pm.Dev.Download(w, pm.Params)
	j.dev.Upload(j.policy.Params, w)
	if err := j.critic.SetWeights(cm.Weights()); err != nil {
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	j.dev.Upload(j.popt.M, pmv)
	j.dev.Upload(j.popt.V, pvv)
	j.popt.Step = st.AdamWStep
	j.dev.Upload(j.copt.M, cmv)
	j.dev.Upload(j.copt.V, cvv)
	j.copt.Step = ds.CriticAdamW
	j.kl, j.scores, j.it = ds.KL, ds.Scores, st.Step
	if applyPtx != nil {
		applyPtx()
	}
	return nil
}
