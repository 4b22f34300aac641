package policy

import (
	"slices"
	"sync"

	"github.com/troupe-rl/troupe/kernels"
)

// On the CPU, LogProbsT splits a batch of sequences into one group per thread
// and scores each group on its own goroutine with a single-threaded device,
// instead of splitting every op of one batch over the threads. A scoring call
// of "small" at the bench shape is ~50 ops of ~1.5 ms; split per op, every op
// waits for its helper goroutine to start and for the slower half to finish.
// Scored as independent groups, the threads meet once per call: 1.05-1.13x
// tokens/s at the bench shape (BenchmarkScoreGroups, same process,
// alternating), gpt2 within noise (1.01-1.02x). Each row's
// result does not depend on its batch (every op is per row or per sequence,
// and the products sum over k in the same order whatever the rows), so the
// results are the same as one batch's (TestLogProbsGroups).

//
// With the kernels' AVX2 build (a Zen 3 without AVX-512), the split per op
// measured faster instead: 1.13x at the bench shape, 1.04x on gpt2
// (BenchmarkScoreGroups and BenchmarkScoreGroupsGPT2, 2026-11-29). There each
// op's products share one packing of the weights (gemmShared), where every
// group packs all of them for itself, twice the weight traffic; and at half
// AVX-512's flops the threads' meetings cost relatively less. So groups are
// the default where the AVX2 build does not run.

// scoreGroups turns the grouped scoring on (tests and benchmarks compare).
var scoreGroups = kernels.VectorISA() != "avx2"

// scoreGroupsFor is how many groups LogProbsT splits n sequences into: the CPU
// device's threads, at most one group per sequence; 1 means no split.
func (m *Model) scoreGroupsFor(n int) int {
	c, ok := m.Dev.(*kernels.CPU)
	if !scoreGroups || !ok {
		return 1
	}
	return max(1, min(c.Threads(), n))
}

// scorer is one group's single-threaded view of m: the same parameters, its
// own device and inference workspace (kept in m.scoreActs between calls).
func (m *Model) scorer(i int) *Model {
	for len(m.scoreActs) <= i {
		m.scoreActs = append(m.scoreActs, nil)
	}
	return &Model{Config: m.Config, Layout: m.Layout, Dev: kernels.NewCPU(1), Params: m.Params, infer: m.scoreActs[i]}
}

// logProbsGroups is LogProbsT over g groups of about equal total length (the
// longest sequences first, each to the group with the fewest tokens so far).
func (m *Model) logProbsGroups(seqs [][]int32, temperature float32, g int) ([][]float32, error) {
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(seqs[b]) - len(seqs[a]) })
	members := make([][]int, g)
	load := make([]int, g)
	for _, k := range order {
		j := 0
		for i := range load {
			if load[i] < load[j] {
				j = i
			}
		}
		members[j] = append(members[j], k)
		load[j] += len(seqs[k])
	}
	out := make([][]float32, len(seqs))
	errs := make([]error, g)
	var wg sync.WaitGroup
	scorers := make([]*Model, g)
	for i := range members {
		w := m.scorer(i)
		scorers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			group := make([][]int32, len(members[i]))
			for j, k := range members[i] {
				group[j] = seqs[k]
			}
			lp, err := w.logProbsBatch(group, temperature)
			if err != nil {
				errs[i] = err
				return
			}
			for j, k := range members[i] {
				out[k] = lp[j]
			}
		}()
	}
	wg.Wait()
	for i, w := range scorers {
		m.scoreActs[i] = w.infer // the grown workspace, for the next call
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
