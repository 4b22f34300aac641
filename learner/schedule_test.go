package learner

import (
	"math"
	"testing"
)

func TestLRAt(t *testing.T) {
	tc := TrainConfig{Steps: 110, LR: 1e-3, MinLR: 1e-4, WarmupSteps: 10}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	cases := []struct {
		step int
		want float64
	}{
		{1, 1e-4},                    // warm-up starts at lr/warmup
		{5, 5e-4},                    // linear
		{10, 1e-3},                   // peak at the end of warm-up
		{60, 1e-4 + 0.5*(1e-3-1e-4)}, // half-way down the cosine
		{110, 1e-4},                  // the floor at the last step
		{200, 1e-4},                  // and after it
		{35, 1e-4 + 0.5*(1+math.Cos(math.Pi/4))*(1e-3-1e-4)},
	}
	for _, c := range cases {
		if got := LRAt(tc, c.step); !near(got, c.want) {
			t.Errorf("LRAt(step %d) = %g, want %g", c.step, got, c.want)
		}
	}
	for s := 11; s < 110; s++ {
		if LRAt(tc, s+1) > LRAt(tc, s) {
			t.Fatalf("LR rises after warm-up: step %d %g, step %d %g", s, LRAt(tc, s), s+1, LRAt(tc, s+1))
		}
	}
	// No warm-up: the first step already runs at the peak.
	tc.WarmupSteps = 0
	if got := LRAt(tc, 1); !(got < 1e-3 && got > 0.99e-3) {
		t.Errorf("LRAt without warm-up, step 1 = %g, want just under 1e-3", got)
	}
	// Warm-up as long as the run: no decay.
	tc.WarmupSteps = 110
	if got := LRAt(tc, 110); !near(got, 1e-3) {
		t.Errorf("LRAt(110) with 110 warm-up steps = %g, want 1e-3", got)
	}
}
