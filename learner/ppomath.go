package learner

import "math"

// The per-token arithmetic of PPO and A2C, on plain slices so that each piece
// is checked by hand in a test. Conventions follow TRL / OpenAI's
// lm-human-preferences: one value per response token (the value of the state
// before the token is emitted), terminal value 0 after the last token, the
// sequence score added to the last token's reward.

// klTerm is the per-token KL estimate between the behaviour policy (logp) and
// the reference (ref): k1 = logp − ref (unbiased, may be negative per token),
// k3 = (r − 1) − log r with r = exp(ref − logp) (unbiased, never negative;
// Schulman's "Approximating KL divergence").
func klTerm(logp, ref float32, estimator string) float64 {
	d := float64(ref) - float64(logp) // log r
	if estimator == "k3" {
		return math.Expm1(d) - d
	}
	return -d
}

// gae computes generalised advantage estimates and returns for one sequence:
// δ_t = r_t + γ V_{t+1} − V_t (V after the last token = 0),
// A_t = δ_t + γλ A_{t+1}, return_t = A_t + V_t. adv and ret have len(rewards).
func gae(rewards, values []float64, gamma, lambda float64, adv, ret []float64) {
	var next, last float64 // V_{t+1}, A_{t+1}
	for t := len(rewards) - 1; t >= 0; t-- {
		delta := rewards[t] + gamma*next - values[t]
		last = delta + gamma*lambda*last
		adv[t] = last
		ret[t] = last + values[t]
		next = values[t]
	}
}

// whiten shifts and scales xs (every token of a batch) to mean 0 and std 1 in
// place (the population std, plus 1e-8), as TRL's masked_whiten does.
func whiten(xs [][]float64) {
	var n, sum float64
	for _, x := range xs {
		for _, v := range x {
			sum += v
			n++
		}
	}
	if n < 2 {
		return
	}
	mean := sum / n
	var ss float64
	for _, x := range xs {
		for _, v := range x {
			ss += (v - mean) * (v - mean)
		}
	}
	inv := 1 / (math.Sqrt(ss/n) + 1e-8)
	for _, x := range xs {
		for i := range x {
			x[i] = (x[i] - mean) * inv
		}
	}
}

// surrogate is the clipped PPO objective of one token, as a loss to minimise:
// max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = exp(logp − old). It returns the
// loss, ∂loss/∂logp and whether the clipped branch was taken (zero gradient).
func surrogate(logp, old, adv, eps float64) (loss, dlogp float64, clipped bool) {
	ratio := math.Exp(logp - old)
	l1 := -adv * ratio
	l2 := -adv * math.Max(1-eps, math.Min(1+eps, ratio))
	if l1 >= l2 {
		return l1, -adv * ratio, false
	}
	return l2, 0, true
}

// valueLoss is the clipped value loss of one token, 0.5·max((v−R)², (v_clip−R)²)
// with v_clip = old + clip(v − old, ±eps) (eps 0 = unclipped), and ∂/∂v.
func valueLoss(v, old, ret, eps float64) (loss, dv float64, clipped bool) {
	l1 := (v - ret) * (v - ret)
	if eps <= 0 {
		return 0.5 * l1, v - ret, false
	}
	vc := old + math.Max(-eps, math.Min(eps, v-old))
	l2 := (vc - ret) * (vc - ret)
	if l1 >= l2 {
		return 0.5 * l1, v - ret, false
	}
	// vc differs from v only where v−old was clipped, where ∂vc/∂v = 0.
	if vc != v {
		return 0.5 * l2, 0, true
	}
	return 0.5 * l2, vc - ret, false
}

// klController is β of the KL penalty: fixed, or the adaptive controller of
// Ziegler et al. (2019): β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon)
// after a batch of n samples whose mean KL was KL.
type klController struct {
	Beta    float64 `json:"beta"`
	Target  float64 `json:"target"` // 0 = fixed
	Horizon int     `json:"horizon"`
}

func (c *klController) update(kl float64, n int) {
	if c.Target <= 0 {
		return
	}
	e := math.Max(-0.2, math.Min(0.2, kl/c.Target-1))
	c.Beta *= 1 + e*float64(n)/float64(c.Horizon)
}

// runningStats is Welford's mean and variance over every score seen, for
// reward normalisation.
type runningStats struct {
	N    float64 `json:"n"`
	Mean float64 `json:"mean"`
	M2   float64 `json:"m2"`
}

func (s *runningStats) add(x float64) {
	s.N++
	d := x - s.Mean
	s.Mean += d / s.N
	s.M2 += d * (x - s.Mean)
}

func (s *runningStats) std() float64 {
	if s.N < 2 {
		return 1
	}
	return math.Sqrt(s.M2 / (s.N - 1))
}

// explainedVariance is 1 − Var(returns − values)/Var(returns) over every
// token: 1 = the critic predicts the returns, 0 = no better than their mean.
func explainedVariance(values, returns [][]float64) float64 {
	var n, sr, sr2, sd, sd2 float64
	for i := range values {
		for t := range values[i] {
			r, d := returns[i][t], returns[i][t]-values[i][t]
			sr += r
			sr2 += r * r
			sd += d
			sd2 += d * d
			n++
		}
	}
	if n < 2 {
		return math.NaN()
	}
	vr := sr2/n - (sr/n)*(sr/n)
	vd := sd2/n - (sd/n)*(sd/n)
	if vr <= 0 {
		return math.NaN()
	}
	return 1 - vd/vr
}

// meanStd is the mean and population std of xs.
func meanStd(xs []float64) (mean, std float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(xs)))
}

// distinctN is the share of distinct n-grams among all n-grams of the
// sequences (Li et al. 2016's distinct-n): 1 = no n-gram repeats, near 0 =
// every sample says the same thing.
func distinctN(seqs [][]int32, n int) float64 {
	seen := map[string]struct{}{}
	total := 0
	key := make([]byte, 0, 4*n)
	for _, s := range seqs {
		for i := 0; i+n <= len(s); i++ {
			key = key[:0]
			for _, t := range s[i : i+n] {
				key = append(key, byte(t), byte(t>>8), byte(t>>16), byte(t>>24))
			}
			seen[string(key)] = struct{}{}
			total++
		}
	}
	if total == 0 {
		return 0
	}
	return float64(len(seen)) / float64(total)
}
