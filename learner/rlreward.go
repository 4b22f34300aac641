package learner

import (
	"fmt"
	"regexp"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/reward"
)

// BuildScorer returns the reward of an RL run's `reward` section: the reward
// model at rc.Model (a checkpoint directory; the CLI resolves run directories
// before this) weighted by rc.ModelWeight, plus each rule weighted by its
// Weight (0 = 1), as one reward.Sum whose parts are named rm, exact_match,
// length, format (a second rule of a type is "format#2"), wrapped with the
// missing-EOS penalty when rc.MissingEOSPenalty != 0. The model is loaded on
// dev. Errors wrap ErrConfig and name the field.
func BuildScorer(rc RewardConfig, dev kernels.Device) (reward.Scorer, error) {
	if err := rc.Validate("reward"); err != nil {
		return nil, err
	}
	var comps []reward.Component
	if rc.Model != "" {
		m, err := reward.Load(rc.Model, dev)
		if err != nil {
			return nil, fmt.Errorf("%w: reward.model: %s: %w", ErrConfig, rc.Model, err)
		}
		comps = append(comps, reward.Component{Name: reward.PartRM, Weight: rc.ModelWeight, Scorer: reward.NewRMScorer(m)})
	}
	for i, r := range rc.Rules {
		w := r.Weight
		if w == 0 {
			w = 1
		}
		c := reward.Component{Name: r.Type, Weight: w}
		switch r.Type {
		case "exact_match":
			c.Name, c.Scorer = reward.PartExactMatch, reward.ExactMatch{}
		case "length":
			c.Name, c.Scorer = reward.PartLength, reward.Length{}
		case "format":
			re, err := regexp.Compile(r.Pattern)
			if err != nil {
				return nil, fmt.Errorf("%w: reward.rules[%d].pattern: %w", ErrConfig, i, err)
			}
			c.Name, c.Scorer = reward.PartFormat, reward.Format{Pattern: re}
		default: // Validate allows only RuleTypes
			return nil, fieldErr(fmt.Sprintf("reward.rules[%d].type", i), "%q has no scorer", r.Type)
		}
		comps = append(comps, c)
	}
	var sc reward.Scorer = reward.NewSum(comps...)
	if rc.MissingEOSPenalty != 0 {
		sc = reward.MissingEOS{Inner: sc, Penalty: rc.MissingEOSPenalty}
	}
	return sc, nil
}
