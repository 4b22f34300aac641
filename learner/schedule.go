package learner

import "math"

// LRAt is the learning rate of optimizer step `step` (1-based: the first update
// is step 1): a linear warm-up from lr/WarmupSteps to LR over the first
// WarmupSteps steps, then a cosine decay from LR to MinLR that reaches MinLR
// at step Steps (and stays there should a run go past it).
func LRAt(tc TrainConfig, step int) float64 {
	if step < 1 {
		step = 1
	}
	if step <= tc.WarmupSteps {
		return tc.LR * float64(step) / float64(tc.WarmupSteps)
	}
	span := tc.Steps - tc.WarmupSteps
	if span <= 0 {
		return tc.LR
	}
	p := math.Min(1, float64(step-tc.WarmupSteps)/float64(span))
	return tc.MinLR + 0.5*(1+math.Cos(math.Pi*p))*(tc.LR-tc.MinLR)
}
