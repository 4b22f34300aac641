package actors

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/policy"
	"github.com/troupe-rl/troupe/policy/tokenizer"
	"github.com/troupe-rl/troupe/reward"
)

// rlTestJob is a real learner.RLJob for the RL topology's tests: the roles are
// the real learner.Generator, Reference and Scoring over a tiny random GPT on
// a byte-level tokenizer, with "a+b=" prompts and an exact-match reward. Its
// Train is not PPO: it records what it was given and moves the weights by a
// fixed random step, so that every version samples measurably differently and
// a test can tell which version sampled a rollout. What is under test is the
// topology, not the update.
type rlTestJob struct {
	cfg     policy.Config
	tok     *tokenizer.Tokenizer
	model   *policy.Model // the policy being "trained"
	init    []float32     // initial weights: the reference's, and generators' version 0
	total   int           // iterations
	prompts int           // per iteration
	samples int           // per prompt
	maxNew  int           // tokens per completion at most

	trainDelay time.Duration // sleep inside every Train (a slower learner)
	panicTrain map[int]int   // iteration -> panics left to inject in its Train
	nanTrain   map[int]bool  // iterations whose Train reports learner.ErrNonFinite (counted, nothing trained)

	mu        sync.Mutex
	done      int
	trained   []rlTrained
	weightsAt [][]float32 // weights after n updates, n = 0..done
}

// rlTrained is one Train call's arguments.
type rlTrained struct {
	it      int
	version int64
	rs      []learner.Rollout
}

var _ learner.RLJob = (*rlTestJob)(nil)

func newRLTestJob(t testing.TB, total, prompts, samples int) *rlTestJob {
	t.Helper()
	cfg := policy.Config{VocabSize: 257, MaxSeqLen: 32, NumLayers: 1, NumHeads: 2, Channels: 16, LayerNormEps: 1e-5}
	return newRLTestJobWith(t, cfg, total, prompts, samples, 6)
}

func newRLTestJobWith(t testing.TB, cfg policy.Config, total, prompts, samples, maxNew int) *rlTestJob {
	t.Helper()
	tok, err := tokenizer.Train(strings.NewReader("0123456789+="), 257, nil, nil)
	if err != nil {
		t.Fatalf("tokenizer: %v", err)
	}
	m, err := policy.New(cfg, kernels.NewCPU(1))
	if err != nil {
		t.Fatalf("policy.New: %v", err)
	}
	m.Init(3)
	j := &rlTestJob{cfg: cfg, tok: tok, model: m, total: total, prompts: prompts, samples: samples, maxNew: maxNew, panicTrain: map[int]int{}}
	j.init = append([]float32(nil), m.Params.F...)
	j.weightsAt = [][]float32{j.init}
	return j
}

func (j *rlTestJob) Stage() string     { return "ppo" }
func (j *rlTestJob) Algorithm() string { return "ppo" }
func (j *rlTestJob) Done() bool        { return j.IterationsDone() >= j.total }
func (j *rlTestJob) TotalIterations() int {
	return j.total
}

func (j *rlTestJob) IterationsDone() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done
}

func (j *rlTestJob) SamplesPerPrompt() int     { return j.samples }
func (j *rlTestJob) RolloutSeed(it int) uint64 { return 1000 + uint64(it) }

func (j *rlTestJob) Prompts(it int) []learner.RLPrompt {
	rng := rand.New(rand.NewPCG(uint64(it), 11))
	out := make([]learner.RLPrompt, j.prompts)
	for i := range out {
		a, b := rng.IntN(50), rng.IntN(50)
		text := fmt.Sprintf("%d+%d=", a, b)
		out[i] = learner.RLPrompt{ID: int64(it*j.prompts + i), Text: text, Tokens: j.tok.EncodeOrdinary(text), Answer: strconv.Itoa(a + b)}
	}
	return out
}

func (j *rlTestJob) Train(it int, rs []learner.Rollout, version int64) (learner.StepMetrics, error) {
	if n := j.IterationsDone(); it != n {
		return learner.StepMetrics{}, fmt.Errorf("Train(%d) after %d iterations", it, n)
	}
	if j.panicTrain[it] > 0 {
		j.panicTrain[it]--
		panic(fmt.Sprintf("injected crash in Train(%d)", it))
	}
	if j.trainDelay > 0 {
		time.Sleep(j.trainDelay)
	}
	if j.nanTrain[it] { // as the PPO job: the iteration counts, the weights stay
		j.mu.Lock()
		defer j.mu.Unlock()
		j.done++
		j.weightsAt = append(j.weightsAt, append([]float32(nil), j.model.Params.F...))
		return learner.StepMetrics{}, fmt.Errorf("%w: iteration %d: policy loss NaN", learner.ErrNonFinite, it+1)
	}
	var score float64
	tokens := 0
	for i := range rs {
		score += rs[i].Score
		tokens += len(rs[i].Prompt) + len(rs[i].Response)
	}
	rng := rand.New(rand.NewPCG(uint64(it), 5))
	for i := range j.model.Params.F {
		j.model.Params.F[i] += 0.05 * float32(rng.NormFloat64())
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.trained = append(j.trained, rlTrained{it: it, version: version, rs: append([]learner.Rollout(nil), rs...)})
	j.done++
	j.weightsAt = append(j.weightsAt, append([]float32(nil), j.model.Params.F...))
	return learner.StepMetrics{Step: j.done, Loss: -score / float64(len(rs)), Tokens: tokens, Extra: map[string]float64{"reward": score / float64(len(rs))}}, nil
}

func (j *rlTestJob) Weights() []float32 { return append([]float32(nil), j.model.Params.F...) }

// modelAt is a fresh model holding w.
func (j *rlTestJob) modelAt(w []float32, threads int) (*policy.Model, error) {
	m, err := policy.New(j.cfg, kernels.NewCPU(threads))
	if err != nil {
		return nil, err
	}
	m.Dev.Upload(m.Params, w)
	return m, nil
}

func (j *rlTestJob) NewGenerator(name string, threads int) (*learner.Generator, error) {
	m, err := j.modelAt(j.init, threads)
	if err != nil {
		return nil, err
	}
	return &learner.Generator{Model: m, Samples: j.samples, Name: name,
		Opts: policy.SampleOptions{MaxNewTokens: j.maxNew, Temperature: 1, StopTokens: []int32{j.tok.EOT()}}}, nil
}

func (j *rlTestJob) NewReference(threads int) (*learner.Reference, error) {
	m, err := j.modelAt(j.init, threads)
	if err != nil {
		return nil, err
	}
	return &learner.Reference{Model: m, Temperature: 1}, nil
}

func (j *rlTestJob) NewScoring(threads int) (*learner.Scoring, error) {
	return &learner.Scoring{Scorer: exactMatch{}, Decode: j.tok.Decode, EOS: j.tok.EOT()}, nil
}

// exactMatch: 1 when the response is the answer.
type exactMatch struct{}

func (exactMatch) Score(items []reward.Item) ([]reward.Score, error) {
	out := make([]reward.Score, len(items))
	for i, it := range items {
		v := 0.0
		if strings.TrimSpace(it.ResponseText) == it.Answer {
			v = 1
		}
		out[i] = reward.Score{Total: v, Parts: map[string]float64{"exact_match": v}}
	}
	return out, nil
}

type rlTestState struct {
	Iterations int `json:"iterations"`
}

func (j *rlTestJob) SaveCheckpoint(dir string) error {
	if err := j.model.Save(dir); err != nil {
		return err
	}
	b, _ := json.Marshal(rlTestState{Iterations: j.IterationsDone()})
	return os.WriteFile(filepath.Join(dir, "trainer_state.json"), b, 0o644)
}

func (j *rlTestJob) Restore(dir string) error {
	m, err := policy.Load(dir, j.model.Dev)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "trainer_state.json"))
	if err != nil {
		return err
	}
	var st rlTestState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%w: %v", learner.ErrCheckpoint, err)
	}
	copy(j.model.Params.F, m.Params.F)
	j.mu.Lock()
	j.done = st.Iterations
	j.mu.Unlock()
	return nil
}

func (j *rlTestJob) NewEvaluator(opts learner.EvalOptions) (learner.Evaluator, error) {
	m, err := j.modelAt(j.init, 1)
	if err != nil {
		return nil, err
	}
	return &rlTestEvaluator{job: j, model: m, opts: opts}, nil
}

func (j *rlTestJob) DataReport() learner.DataReport { return learner.DataReport{} }

// rlTestEvaluator: the log-prob of one fixed sequence, and one greedy sample.
type rlTestEvaluator struct {
	job   *rlTestJob
	model *policy.Model
	opts  learner.EvalOptions
}

func (e *rlTestEvaluator) Evaluate(w []float32) (learner.EvalResult, error) {
	if len(w) != e.model.Params.N {
		return learner.EvalResult{}, fmt.Errorf("%w: %d weights, model has %d", learner.ErrCheckpoint, len(w), e.model.Params.N)
	}
	e.model.Dev.Upload(e.model.Params, w)
	seq := e.job.tok.EncodeOrdinary("12+34=46")
	lp, err := e.model.LogProbs([][]int32{seq})
	if err != nil {
		return learner.EvalResult{}, err
	}
	var sum float64
	for _, v := range lp[0] {
		sum += float64(v)
	}
	res := learner.EvalResult{Metrics: map[string]float64{"logprob": sum}}
	if e.opts.MaxNewTokens > 0 {
		out, err := e.model.Generate([][]int32{e.job.tok.EncodeOrdinary("1+2=")}, policy.SampleOptions{MaxNewTokens: e.opts.MaxNewTokens})
		if err != nil {
			return res, err
		}
		res.Samples = []learner.Sample{{Prompt: "1+2=", Completion: e.job.tok.Decode(out[0].Tokens)}}
	}
	return res, nil
}

// snapshot returns what Train recorded and the weights after each update.
func (j *rlTestJob) snapshot() ([]rlTrained, [][]float32) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]rlTrained(nil), j.trained...), append([][]float32(nil), j.weightsAt...)
}

// behaviourGap is the largest difference between a rollout's behaviour
// log-probs and the log-probs its tokens have under weights w.
func (j *rlTestJob) behaviourGap(t testing.TB, m *policy.Model, w []float32, r *learner.Rollout) float64 {
	t.Helper()
	m.Dev.Upload(m.Params, w)
	seq := append(append([]int32(nil), r.Prompt...), r.Response...)
	lp, err := m.LogProbsT([][]int32{seq}, 1)
	if err != nil {
		t.Fatalf("LogProbsT: %v", err)
	}
	got := lp[0][len(r.Prompt)-1:]
	gap := 0.0
	for i := range r.LogProbs {
		gap = max(gap, math.Abs(float64(got[i]-r.LogProbs[i])))
	}
	return gap
}
