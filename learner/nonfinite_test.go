package learner

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner/datagen"
)

// setInjectNaN installs the NaN hook for the test and removes it after.
func setInjectNaN(t *testing.T, f func(step int) bool) {
	t.Helper()
	injectNaN = f
	t.Cleanup(func() { injectNaN = nil })
}

// nanAt is an injectNaN hook that poisons the first try of each given step.
func nanAt(steps ...int) func(int) bool {
	left := map[int]int{}
	for _, s := range steps {
		left[s]++
	}
	return func(step int) bool {
		if left[step] > 0 {
			left[step]--
			return true
		}
		return false
	}
}

// download copies a device tensor to the host.
func download(dev kernels.Device, t kernels.Tensor) []float32 {
	out := make([]float32, t.N)
	dev.Download(out, t)
	return out
}

// TestNonFiniteStepSkipped: a step whose gradients are NaN is refused with
// ErrNonFinite naming the step; the parameters and both AdamW moments are
// untouched and StepsDone stays; the step's data is spent, so the steps after
// it give bit-identical losses to a run that skipped that data by hand, and
// the job ends with the same weights.
func TestNonFiniteStepSkipped(t *testing.T) {
	type stage struct {
		build    func(t *testing.T) Job
		skipData func(j Job) // what the refused step consumed, done by hand
	}
	stages := map[string]stage{
		"sft": func() stage {
			var mc ModelConfig
			var dc DataConfig
			var tc TrainConfig
			return stage{
				build: func(t *testing.T) Job {
					if tc.Steps == 0 {
						mc, dc, tc = sftSetup(t)
						tc.Steps, tc.GradAccum, tc.BatchSize, tc.WarmupSteps = 6, 2, 8, 2
					}
					j, err := NewSFT(mc, dc, tc, 5, kernels.NewCPU(1))
					if err != nil {
						t.Fatal(err)
					}
					return j
				},
				skipData: func(j Job) {
					lj := j.(*lmJob)
					for range lj.tc.GradAccum {
						lj.data.next(&lj.batch)
					}
				},
			}
		}(),
		"rm": func() stage {
			var mc ModelConfig
			var dc DataConfig
			var tc TrainConfig
			return stage{
				build: func(t *testing.T) Job {
					if tc.Steps == 0 {
						train, _ := additionPairs(t, datagen.AdditionConfig{Digits: 2, Train: 60, Val: 10, Seed: 2})
						dc = DefaultDataConfig()
						dc.Train, dc.ValFraction = []string{train}, 0.2
						tc = DefaultTrainConfig()
						tc.Steps, tc.BatchSize, tc.SeqLen, tc.GradAccum, tc.WarmupSteps = 6, 4, 12, 2, 2
						mc = smallRM(byteTokenizerDir(t), 1, 2, 16, 12)
					}
					return newRMJob(t, mc, dc, tc, 3, 1)
				},
				skipData: func(j Job) {
					rj := j.(*rmJob)
					rj.consumed += int64(rj.tc.GradAccum * rj.tc.BatchSize)
				},
			}
		}(),
	}
	for name, st := range stages {
		t.Run(name, func(t *testing.T) {
			// The reference: steps 1-2, step 3's data skipped by hand, steps 3-6.
			ref := st.build(t)
			want := runSteps(t, ref, 2)
			st.skipData(ref)
			want = append(want, runSteps(t, ref, 4)...)

			setInjectNaN(t, nanAt(3))
			j := st.build(t)
			got := runSteps(t, j, 2)
			w0 := j.Weights()
			m0, v0 := moments(j)
			_, err := j.Step()
			if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "step 3:") || !strings.Contains(err.Error(), "grad norm NaN") {
				t.Fatalf("poisoned step: got %v, want ErrNonFinite naming step 3 and the NaN grad norm", err)
			}
			if j.StepsDone() != 2 {
				t.Fatalf("StepsDone %d after a refused step, want 2", j.StepsDone())
			}
			m1, v1 := moments(j)
			if !slices.Equal(j.Weights(), w0) || !slices.Equal(m1, m0) || !slices.Equal(v1, v0) {
				t.Fatalf("a refused step changed the weights or the AdamW moments")
			}
			got = append(got, runSteps(t, j, 4)...)
			for i := range want {
				if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
					t.Fatalf("loss %d: %v with the NaN step skipped, %v with its data skipped by hand", i, got[i], want[i])
				}
			}
			if !j.Done() || !slices.Equal(j.Weights(), ref.Weights()) {
				t.Fatalf("done %v, weights equal to the reference %v", j.Done(), slices.Equal(j.Weights(), ref.Weights()))
			}
		})
	}
}

// moments returns host copies of a job's AdamW moments.
func moments(j Job) (m, v []float32) {
	switch j := j.(type) {
	case *lmJob:
		return download(j.model.Dev, j.opt.M), download(j.model.Dev, j.opt.V)
	case *rmJob:
		return download(j.model.Dev, j.opt.M), download(j.model.Dev, j.opt.V)
	}
	panic("moments: unknown job")
}

// rlOnce runs one iteration with the roles in-process, returning Train's result.
func rlOnce(t *testing.T, j RLJob, gen *Generator, ref *Reference, sc *Scoring) (StepMetrics, error) {
	t.Helper()
	it := j.IterationsDone()
	if err := gen.SetWeights(j.Weights(), int64(it+1)); err != nil {
		t.Fatal(err)
	}
	rs, err := gen.Rollout(j.Prompts(it), j.RolloutSeed(it))
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.Fill(rs); err != nil {
		t.Fatal(err)
	}
	if err := sc.Fill(rs); err != nil {
		t.Fatal(err)
	}
	return j.Train(it, rs, int64(it+1))
}

// TestPPONonFiniteMinibatch: a minibatch with NaN gradients is skipped (no
// policy or critic update; counted in skipped_minibatches) and the iteration
// trains on the others; an iteration whose every minibatch is NaN returns
// ErrNonFinite with the policy, the critic and both optimizers untouched but
// the iteration counted; the next one trains normally.
func TestPPONonFiniteMinibatch(t *testing.T) {
	cfg := rlSetup(t, "ppo")
	cfg.PPO.Iterations = 4
	job, err := NewPPO(cfg, kernels.NewCPU(2))
	if err != nil {
		t.Fatal(err)
	}
	j := job.(*ppoJob)
	gen, err := j.NewGenerator("g", 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := j.NewReference(1)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := j.NewScoring(1)
	if err != nil {
		t.Fatal(err)
	}
	updates := cfg.PPO.Epochs * cfg.PPO.Minibatches // 8: no response is empty with max_new_tokens 4

	// Iteration 1: the third minibatch update is poisoned.
	setInjectNaN(t, nanAt(3))
	m, err := rlOnce(t, j, gen, ref, sc)
	if err != nil {
		t.Fatalf("one NaN minibatch: %v", err)
	}
	if m.Extra["skipped_minibatches"] != 1 || j.popt.Step != updates-1 || j.copt.Step != updates-1 {
		t.Fatalf("skipped %v, policy updates %d, critic updates %d; want 1 skipped and %d of each", m.Extra["skipped_minibatches"], j.popt.Step, j.copt.Step, updates-1)
	}
	for _, k := range []string{"policy_loss", "value_loss", "critic_grad_norm", "entropy", "approx_kl"} {
		if v := m.Extra[k]; math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("%s = %v after a skipped minibatch", k, v)
		}
	}

	// Iteration 2: every update poisoned.
	setInjectNaN(t, func(int) bool { return true })
	pw, cw := j.Weights(), j.critic.Weights()
	pm := download(j.dev, j.popt.M)
	cv := download(j.dev, j.copt.V)
	pStep, cStep := j.popt.Step, j.copt.Step
	_, err = rlOnce(t, j, gen, ref, sc)
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "iteration 2: all 8 minibatch updates skipped") || !strings.Contains(err.Error(), "policy grad norm NaN") {
		t.Fatalf("all minibatches NaN: got %v, want ErrNonFinite for all 8 of iteration 2", err)
	}
	if j.IterationsDone() != 2 {
		t.Fatalf("IterationsDone %d after a skipped iteration, want 2 (it counts)", j.IterationsDone())
	}
	if !slices.Equal(j.Weights(), pw) || !slices.Equal(j.critic.Weights(), cw) || !slices.Equal(download(j.dev, j.popt.M), pm) ||
		!slices.Equal(download(j.dev, j.copt.V), cv) || j.popt.Step != pStep || j.copt.Step != cStep {
		t.Fatalf("a skipped iteration changed the policy, the critic or an optimizer")
	}

	// Iteration 3 trains normally.
	injectNaN = nil
	m, err = rlOnce(t, j, gen, ref, sc)
	if err != nil || m.Step != 3 || m.Extra["skipped_minibatches"] != 0 || j.popt.Step != pStep+updates {
		t.Fatalf("after the skipped iteration: %v, step %d, skipped %v, policy updates %d (want %d)", err, m.Step, m.Extra["skipped_minibatches"], j.popt.Step, pStep+updates)
	}
	if slices.Equal(j.Weights(), pw) {
		t.Fatalf("iteration 3 did not change the policy")
	}
}
