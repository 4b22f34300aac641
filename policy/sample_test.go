package policy

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// sampleConfig: odd widths, a context short enough to hit n_positions.
var sampleConfig = Config{VocabSize: 53, MaxSeqLen: 40, NumLayers: 2, NumHeads: 3, Channels: 24, LayerNormEps: 1e-5}

func samplePrompts(rng *rand.Rand, V int, lens ...int) [][]int32 {
	out := make([][]int32, len(lens))
	for i, n := range lens {
		out[i] = randomTokens(rng, n, V)
	}
	return out
}

// fullLogits returns the logits (len(seq), V) of one sequence without the cache.
func fullLogits(m *Model, seq []int32) []float32 {
	return download(m, m.Forward(seq, 1, len(seq)))
}

// allowed is the brute-force top-k/top-p set of one row of logits.
func allowed(logits []float32, temp float32, k int, p float32) map[int32]bool {
	V := len(logits)
	ids := make([]int, V)
	z := make([]float64, V)
	mx := slices.Max(logits)
	for i := range ids {
		ids[i] = i
		z[i] = math.Exp(float64(logits[i]-mx) / float64(temp))
	}
	sort.SliceStable(ids, func(a, b int) bool { return z[ids[a]] > z[ids[b]] })
	if k > 0 && k < V {
		ids = ids[:k]
	}
	if p > 0 && p < 1 {
		var mass, cum float64
		for _, i := range ids {
			mass += z[i]
		}
		for j, i := range ids {
			cum += z[i]
			if cum >= float64(p)*mass {
				ids = ids[:j+1]
				break
			}
		}
	}
	out := map[int32]bool{}
	for _, i := range ids {
		out[int32(i)] = true
	}
	return out
}

// TestGenerateMatchesFullForward: with the KV cache, every sampled token's
// log-prob equals the one recomputed on the full sequence (LogProbs at T=1,
// the full forward's logits otherwise), and truncated sampling stays inside the
// top-k/top-p set.
func TestGenerateMatchesFullForward(t *testing.T) {
	cfg := sampleConfig
	m := randomModel(t, cfg, 11, 0.25)
	prompts := samplePrompts(rand.New(rand.NewPCG(1, 1)), cfg.VocabSize, 1, 5, 9, 3, 16)
	for _, opt := range []SampleOptions{
		{MaxNewTokens: 12},
		{MaxNewTokens: 12, Temperature: 1, Seed: 3},
		{MaxNewTokens: 12, Temperature: 0.7, TopK: 5, Seed: 4},
		{MaxNewTokens: 12, Temperature: 1.3, TopP: 0.6, Seed: 5},
		{MaxNewTokens: 12, Temperature: 0.9, TopK: 9, TopP: 0.8, Seed: 6},
	} {
		samples, err := m.Generate(prompts, opt)
		if err != nil {
			t.Fatal(err)
		}
		seqs := make([][]int32, len(prompts))
		for i, s := range samples {
			if len(s.Tokens) != opt.MaxNewTokens || len(s.LogProbs) != len(s.Tokens) || s.Stopped {
				t.Fatalf("%+v prompt %d: %d tokens, %d log-probs, stopped %v", opt, i, len(s.Tokens), len(s.LogProbs), s.Stopped)
			}
			seqs[i] = append(slices.Clone(prompts[i]), s.Tokens...)
		}
		lps, err := m.LogProbs(seqs)
		if err != nil {
			t.Fatal(err)
		}
		temp := opt.Temperature
		if temp == 0 {
			temp = 1
		}
		worst := 0.0
		V := cfg.VocabSize
		for i, s := range samples {
			P := len(prompts[i])
			logits := fullLogits(m, seqs[i])
			for j, tok := range s.Tokens {
				row := logits[(P-1+j)*V : (P+j)*V]
				mx := slices.Max(row)
				var sum float64
				for _, l := range row {
					sum += math.Exp(float64(l-mx) / float64(temp))
				}
				want := float64(row[tok]-mx)/float64(temp) - math.Log(sum)
				worst = max(worst, math.Abs(float64(s.LogProbs[j])-want))
				if d := math.Abs(float64(s.LogProbs[j]) - want); d > 1e-4 {
					t.Errorf("%+v prompt %d token %d: log-prob %v, full forward %v", opt, i, j, s.LogProbs[j], want)
				}
				if temp == 1 {
					if d := math.Abs(float64(s.LogProbs[j] - lps[i][P-1+j])); d > 1e-4 {
						t.Errorf("%+v prompt %d token %d: log-prob %v, LogProbs %v", opt, i, j, s.LogProbs[j], lps[i][P-1+j])
					}
				}
				if opt.Temperature == 0 {
					if int(tok) != slices.Index(row, mx) {
						t.Errorf("greedy prompt %d token %d: %d is not the argmax %d", i, j, tok, slices.Index(row, mx))
					}
				} else if !allowed(row, temp, opt.TopK, opt.TopP)[tok] {
					t.Errorf("%+v prompt %d token %d: %d outside the top-k/top-p set", opt, i, j, tok)
				}
			}
		}
		t.Logf("%+v: max |Δ| log-prob %.3g", opt, worst)
	}
}

// TestGenerateBatching: a ragged batch gives what each prompt gives alone; the
// same seed repeats; another seed differs; top-k 1 is greedy.
func TestGenerateBatching(t *testing.T) {
	cfg := sampleConfig
	m := randomModel(t, cfg, 12, 0.25)
	prompts := samplePrompts(rand.New(rand.NewPCG(2, 2)), cfg.VocabSize, 7, 1, 12, 4)
	opt := SampleOptions{MaxNewTokens: 10, Temperature: 1, Seed: 42}
	all, err := m.Generate(prompts, opt)
	if err != nil {
		t.Fatal(err)
	}
	// Prompt i draws from stream (Seed, i), so sampled results are compared in
	// batches of every size that keep prompt i at index i (greedy ones alone,
	// below); a tiny budget also splits the batch into KV-cache groups.
	for i := range prompts {
		part, err := m.Generate(prompts[:i+1], opt)
		if err != nil {
			t.Fatal(err)
		}
		sameSample(t, "prefix batch", part[i], all[i])
	}
	func() {
		defer func(b int) { genBudget = b }(genBudget)
		genBudget = 1
		split, err := m.Generate(prompts, opt)
		if err != nil {
			t.Fatal(err)
		}
		for i := range all {
			sameSample(t, "one prompt per group", split[i], all[i])
		}
	}()
	again, _ := m.Generate(prompts, opt)
	for i := range all {
		sameSample(t, "same seed", again[i], all[i])
	}
	opt.Seed = 43
	other, _ := m.Generate(prompts, opt)
	differ := false
	for i := range all {
		differ = differ || !slices.Equal(other[i].Tokens, all[i].Tokens)
	}
	if !differ {
		t.Errorf("seeds 42 and 43 gave the same samples")
	}

	greedy, _ := m.Generate(prompts, SampleOptions{MaxNewTokens: 10})
	top1, _ := m.Generate(prompts, SampleOptions{MaxNewTokens: 10, Temperature: 1, TopK: 1, Seed: 9})
	for i, p := range prompts {
		sameSample(t, "top-k 1", top1[i], greedy[i])
		alone, err := m.Generate([][]int32{p}, SampleOptions{MaxNewTokens: 10})
		if err != nil {
			t.Fatal(err)
		}
		sameSample(t, "greedy alone", alone[0], greedy[i])
	}
}

func sameSample(t *testing.T, what string, got, want Sample) {
	t.Helper()
	if !slices.Equal(got.Tokens, want.Tokens) || got.Stopped != want.Stopped {
		t.Fatalf("%s: tokens %v stopped %v, want %v stopped %v", what, got.Tokens, got.Stopped, want.Tokens, want.Stopped)
	}
	for j := range got.LogProbs {
		if math.Abs(float64(got.LogProbs[j]-want.LogProbs[j])) > 1e-5 {
			t.Fatalf("%s: log-probs %v, want %v", what, got.LogProbs, want.LogProbs)
		}
	}
}

// TestGenerateStops: a stop token ends its prompt (and is kept), n_positions
// bounds the sequence, and the other prompts go on.
func TestGenerateStops(t *testing.T) {
	cfg := sampleConfig
	m := randomModel(t, cfg, 13, 0.25)
	rng := rand.New(rand.NewPCG(3, 3))
	prompts := samplePrompts(rng, cfg.VocabSize, 6, cfg.MaxSeqLen-3, cfg.MaxSeqLen, 2)
	free, err := m.Generate(prompts, SampleOptions{MaxNewTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(free[1].Tokens); n != 3 || free[1].Stopped {
		t.Fatalf("prompt of n_positions-3: %d tokens (stopped %v), want 3", n, free[1].Stopped)
	}
	if n := len(free[2].Tokens); n != 0 || free[2].Stopped {
		t.Fatalf("prompt of n_positions: %d tokens (stopped %v), want 0", n, free[2].Stopped)
	}
	// Stop on prompt 0's first new token that did not occur before in its output.
	toks := free[0].Tokens
	j := 3
	for j < len(toks) && slices.Contains(toks[:j], toks[j]) {
		j++
	}
	if j == len(toks) {
		j = 0
	}
	stop := toks[j]
	got, err := m.Generate(prompts, SampleOptions{MaxNewTokens: 8, StopTokens: []int32{stop}})
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Stopped || !slices.Equal(got[0].Tokens, toks[:j+1]) {
		t.Fatalf("stop %d: got %v stopped %v, want %v stopped", stop, got[0].Tokens, got[0].Stopped, toks[:j+1])
	}
	for i := 1; i < len(prompts); i++ {
		k := slices.Index(free[i].Tokens, stop)
		want := free[i].Tokens
		if k >= 0 {
			want = want[:k+1]
		}
		if !slices.Equal(got[i].Tokens, want) || got[i].Stopped != (k >= 0) {
			t.Fatalf("prompt %d: got %v stopped %v, want %v", i, got[i].Tokens, got[i].Stopped, want)
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	m := randomModel(t, sampleConfig, 14, 0.1)
	long := make([]int32, sampleConfig.MaxSeqLen+1)
	for _, c := range []struct {
		prompts [][]int32
		opt     SampleOptions
		want    error
	}{
		{[][]int32{{1}, {}}, SampleOptions{MaxNewTokens: 1}, ErrSequence},
		{[][]int32{long}, SampleOptions{MaxNewTokens: 1}, ErrSequence},
		{[][]int32{{1, 53}}, SampleOptions{MaxNewTokens: 1}, ErrSequence},
		{[][]int32{{-1}}, SampleOptions{MaxNewTokens: 1}, ErrSequence},
		{[][]int32{{1}}, SampleOptions{MaxNewTokens: -1}, ErrOptions},
		{[][]int32{{1}}, SampleOptions{Temperature: -1}, ErrOptions},
		{[][]int32{{1}}, SampleOptions{TopK: -2}, ErrOptions},
		{[][]int32{{1}}, SampleOptions{TopP: 1.5}, ErrOptions},
		{[][]int32{{1}}, SampleOptions{TopP: float32(math.NaN())}, ErrOptions},
	} {
		if _, err := m.Generate(c.prompts, c.opt); !errors.Is(err, c.want) {
			t.Errorf("Generate(%v, %+v): error %v, want %v", c.prompts, c.opt, err, c.want)
		}
	}
	for _, seqs := range [][][]int32{{{1}, {}}, {long}, {{2, 99}}} {
		if _, err := m.LogProbs(seqs); !errors.Is(err, ErrSequence) {
			t.Errorf("LogProbs(%v): error %v, want ErrSequence", seqs, err)
		}
	}
}

// TestLogProbsChunks: a ragged batch split into many chunks gives each
// sequence's log-probs as computed alone.
func TestLogProbsChunks(t *testing.T) {
	cfg := sampleConfig
	m := randomModel(t, cfg, 15, 0.25)
	rng := rand.New(rand.NewPCG(4, 4))
	seqs := samplePrompts(rng, cfg.VocabSize, 3, 1, 40, 17, 2, 17, 9, 33, 5)
	want := make([][]float32, len(seqs))
	for i, s := range seqs {
		lp, err := m.LogProbs([][]int32{s})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = lp[0]
	}
	defer func(b int) { inferBudget = b }(inferBudget)
	for _, budget := range []int{inferBudget, 60_000, 1} {
		inferBudget = budget
		got, err := m.LogProbs(seqs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range seqs {
			if len(got[i]) != len(seqs[i])-1 {
				t.Fatalf("budget %d sequence %d: %d log-probs, want %d", budget, i, len(got[i]), len(seqs[i])-1)
			}
			for j := range got[i] {
				if math.Abs(float64(got[i][j]-want[i][j])) > 1e-5 {
					t.Fatalf("budget %d sequence %d: %v, alone %v", budget, i, got[i], want[i])
				}
			}
		}
	}
}

// TestTruncation checks selectTop and nucleus against sorting.
func TestTruncation(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for trial := 0; trial < 200; trial++ {
		V := 1 + rng.IntN(300)
		z := make([]float64, V)
		for i := range z {
			z[i] = math.Exp(3 * rng.NormFloat64())
			if rng.IntN(10) == 0 && i > 0 {
				z[i] = z[i-1] // ties
			}
		}
		mx := slices.Max(z)
		for i := range z {
			z[i] /= mx
		}
		sorted := make([]int32, V)
		for i := range sorted {
			sorted[i] = int32(i)
		}
		slices.SortFunc(sorted, func(a, b int32) int { return before(z, a, b) })
		k := 1 + rng.IntN(V)
		idx := make([]int32, V)
		for i := range idx {
			idx[i] = int32(i)
		}
		rng.Shuffle(V, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		selectTop(idx, z, k)
		top := slices.Clone(idx[:k])
		slices.Sort(top)
		want := slices.Clone(sorted[:k])
		slices.Sort(want)
		if !slices.Equal(top, want) {
			t.Fatalf("V=%d k=%d: selectTop %v, want %v", V, k, top, want)
		}
		p := float32(rng.Float64())
		nuc := nucleus(slices.Clone(sorted), z, p)
		var mass, cum float64
		for _, i := range sorted {
			mass += z[i]
		}
		n := 0
		for _, i := range sorted {
			n++
			cum += z[i]
			if cum >= float64(p)*mass {
				break
			}
		}
		if !slices.Equal(nuc, sorted[:n]) {
			t.Fatalf("V=%d p=%v: nucleus %v, want %v", V, p, nuc, sorted[:n])
		}
	}
}

// TestLogProbsTemperature: LogProbsT at T != 1 is the log-softmax of the full
// forward's logits divided by T; a negative or NaN temperature is an error.
func TestLogProbsTemperature(t *testing.T) {
	cfg := sampleConfig
	m := randomModel(t, cfg, 14, 0.25)
	seqs := samplePrompts(rand.New(rand.NewPCG(4, 4)), cfg.VocabSize, 7, 12, 2)
	V := cfg.VocabSize
	for _, temp := range []float32{0.6, 1.7} {
		lps, err := m.LogProbsT(seqs, temp)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range seqs {
			logits := fullLogits(m, s)
			for j := 0; j+1 < len(s); j++ {
				row := logits[j*V : (j+1)*V]
				mx := slices.Max(row)
				var sum float64
				for _, l := range row {
					sum += math.Exp(float64(l-mx) / float64(temp))
				}
				want := float64(row[s[j+1]]-mx)/float64(temp) - math.Log(sum)
				if d := math.Abs(float64(lps[i][j]) - want); d > 1e-4 {
					t.Fatalf("T=%g seq %d token %d: %v, want %v", temp, i, j, lps[i][j], want)
				}
			}
		}
	}
	for _, temp := range []float32{-1, float32(math.NaN()), float32(math.Inf(1))} {
		if _, err := m.LogProbsT(seqs, temp); !errors.Is(err, ErrOptions) {
			t.Errorf("temperature %g: got %v, want ErrOptions", temp, err)
		}
	}
}
