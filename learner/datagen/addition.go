package datagen

import (
	"math/rand/v2"
	"strconv"
)

// AdditionConfig sizes the addition dataset.
type AdditionConfig struct {
	Digits int    // operands are drawn uniformly from [0, 10^Digits), e.g. 3
	Train  int    // training problems, e.g. 20000
	Val    int    // held-out problems (none of them, in either order, is a training problem), e.g. 1000
	Pairs  int    // preference pairs per problem (different wrong answers, kinds alternating), e.g. 1
	Seed   uint64 // the same seed gives the same files
}

// DefaultAdditionConfig is 3-digit addition, 20000 training and 1000 held-out problems.
func DefaultAdditionConfig() AdditionConfig {
	return AdditionConfig{Digits: 3, Train: 20000, Val: 1000, Pairs: 1, Seed: 1}
}

// Addition makes the addition dataset: for every problem a+b,
//
//   - SFT: {"prompt": "123+456=", "response": "579"};
//   - Pairs preference pairs: chosen the right sum, rejected either the sum with one
//     digit changed (kind "digit"; never a leading zero) or the sum off by 1 to
//     10 (kind "offset"; never negative), the kinds alternating;
//   - an RL prompt {"prompt": "123+456=", "answer": "579"}.
//
// Problems are distinct as unordered pairs, so a held-out b+a is never trained as a+b.
func Addition(cfg AdditionConfig) (*Dataset, error) {
	if cfg.Digits < 1 || cfg.Digits > 9 {
		return nil, configErr("digits must be in [1, 9], got %d", cfg.Digits)
	}
	if cfg.Pairs == 0 {
		cfg.Pairs = 1
	}
	if cfg.Pairs < 1 || cfg.Pairs > 16 {
		return nil, configErr("pairs must be in [1, 16], got %d", cfg.Pairs)
	}
	if cfg.Train < 1 || cfg.Val < 1 {
		return nil, configErr("train and val must be >= 1, got %d and %d", cfg.Train, cfg.Val)
	}
	n := int64(1)
	for range cfg.Digits {
		n *= 10
	}
	// Distinct unordered pairs: n(n+1)/2. Ask for at most half of them, so the
	// rejection sampling below stays quick.
	if distinct := n * (n + 1) / 2; int64(cfg.Train+cfg.Val) > distinct/2 {
		return nil, configErr("%d problems asked for, but %d-digit addition has only %d distinct ones (at most half may be used)",
			cfg.Train+cfg.Val, cfg.Digits, distinct)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x616464)) // "add"
	seen := make(map[[2]int64]bool, cfg.Train+cfg.Val)
	next := func() (int64, int64) {
		for {
			a, b := rng.Int64N(n), rng.Int64N(n)
			key := [2]int64{min(a, b), max(a, b)}
			if !seen[key] {
				seen[key] = true
				return a, b
			}
		}
	}
	d := &Dataset{}
	for i := range cfg.Train + cfg.Val {
		a, b := next()
		prompt := strconv.FormatInt(a, 10) + "+" + strconv.FormatInt(b, 10) + "="
		sum := strconv.FormatInt(a+b, 10)
		sft := SFTExample{Prompt: prompt, Response: sum}
		var pairs []PrefExample
		for p := range cfg.Pairs {
			pair := PrefExample{Prompt: prompt, Chosen: sum, Task: "addition"}
			if (i+p)%2 == 0 {
				pair.Kind, pair.Rejected = "digit", wrongDigit(rng, sum)
			} else {
				pair.Kind, pair.Rejected = "offset", offBy(rng, a+b)
			}
			pairs = append(pairs, pair)
		}
		rl := RLPrompt{Prompt: prompt, Answer: sum}
		if i < cfg.Train {
			d.SFTTrain, d.PrefTrain, d.RLTrain = append(d.SFTTrain, sft), append(d.PrefTrain, pairs...), append(d.RLTrain, rl)
		} else {
			d.SFTVal, d.PrefVal, d.RLVal = append(d.SFTVal, sft), append(d.PrefVal, pairs...), append(d.RLVal, rl)
		}
	}
	return d, nil
}

// wrongDigit returns s with one digit replaced by another, the first digit of a
// multi-digit number never by 0.
func wrongDigit(rng *rand.Rand, s string) string {
	b := []byte(s)
	p := rng.IntN(len(b))
	lo := 0
	if p == 0 && len(b) > 1 {
		lo = 1
	}
	for {
		c := byte('0' + lo + rng.IntN(10-lo))
		if c != b[p] {
			b[p] = c
			return string(b)
		}
	}
}

// offBy returns sum ± k for k in [1, 10], never negative.
func offBy(rng *rand.Rand, sum int64) string {
	k := int64(1 + rng.IntN(10))
	if rng.IntN(2) == 0 && sum-k >= 0 {
		return strconv.FormatInt(sum-k, 10)
	}
	return strconv.FormatInt(sum+k, 10)
}
