package learner

import (
	"fmt"
	"math"
	"strings"

	"github.com/troupe-rl/troupe/policy"
)

// injectNaN, when set (by tests only; nil otherwise), is asked before every
// optimizer update with the update's number (the optimizer's Step+1: the step
// for pretrain, sft and rm, the policy's minibatch update for ppo); true
// turns that update's gradients into NaN, as a diverged backward pass would,
// so tests drive the non-finite path at chosen steps without crafting data.
var injectNaN func(step int) bool

// maybePoison applies injectNaN to m's gradients for update step.
func maybePoison(m *policy.Model, step int) {
	if injectNaN != nil && injectNaN(step) {
		m.Dev.Scale(m.Grads, float32(math.NaN()))
	}
}

// figure is one named number a non-finite check looks at.
type figure struct {
	name string // e.g. "loss", "grad norm"
	v    float64
}

// checkFinite returns nil when every figure is finite, else an ErrNonFinite
// error naming where (e.g. "step 12") and every figure, so the log shows
// whether the loss or only the gradients went bad.
func checkFinite(where string, figs ...figure) error {
	bad := false
	parts := make([]string, len(figs))
	for i, f := range figs {
		bad = bad || math.IsNaN(f.v) || math.IsInf(f.v, 0)
		parts[i] = fmt.Sprintf("%s %.6g", f.name, f.v)
	}
	if !bad {
		return nil
	}
	return fmt.Errorf("%w: %s: %s; update skipped", ErrNonFinite, where, strings.Join(parts, ", "))
}
