package learner

import (
	"reflect"
	"slices"
	"testing"
)

// A worker's roles (RLRoles, built without the learner's data and critic)
// behave as the job's own: the same starting weights, the same samples for a
// seed and version, the same reference log-probs and scores.
func TestRLRolesMatchJob(t *testing.T) {
	cfg := rlSetup(t, "ppo")
	job, err := NewPPO(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	worker := cfg
	worker.Data, worker.Critic = DataConfig{}, CriticConfig{} // a worker's config need not point at the data
	roles, err := NewRLRoles(worker)
	if err != nil {
		t.Fatal(err)
	}
	if roles.Params() != len(job.Weights()) {
		t.Fatalf("%d parameters, the job's policy has %d", roles.Params(), len(job.Weights()))
	}
	jg, _ := job.NewGenerator("g", 1)
	wg, err := roles.NewGenerator("g", 1)
	if err != nil {
		t.Fatal(err)
	}
	prompts := job.Prompts(0)
	a, err := jg.Rollout(prompts, job.RolloutSeed(0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := wg.Rollout(prompts, job.RolloutSeed(0))
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if !slices.Equal(a[i].Response, b[i].Response) || !slices.Equal(a[i].LogProbs, b[i].LogProbs) {
			t.Fatalf("rollout %d: worker %v %v, job %v %v", i, b[i].Response, b[i].LogProbs, a[i].Response, a[i].LogProbs)
		}
	}
	jr, _ := job.NewReference(1)
	wr, err := roles.NewReference(1)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := job.NewScoring(1)
	ws, err := roles.NewScoring(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := jr.Fill(a); err != nil {
		t.Fatal(err)
	}
	if err := wr.Fill(b); err != nil {
		t.Fatal(err)
	}
	if err := js.Fill(a); err != nil {
		t.Fatal(err)
	}
	if err := ws.Fill(b); err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if !slices.Equal(a[i].RefLogProbs, b[i].RefLogProbs) || a[i].Score != b[i].Score || !reflect.DeepEqual(a[i].ScoreParts, b[i].ScoreParts) {
			t.Fatalf("rollout %d: worker's reference/score differ from the job's", i)
		}
	}
}
