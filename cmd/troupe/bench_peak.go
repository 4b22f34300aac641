package main

import (
	"errors"
	"time"

	"github.com/troupe-rl/troupe/kernels"
)

// benchPeak measures the FP32 FMA peak (kernels.MeasurePeakFMA: independent
// FMA chains at the widest vector width the CPU has) on 1 thread and on
// threads, the best of 10 rounds of about 0.2 s each (other work on the cores
// only lowers a round; the median shows how much); the table states the
// model's training GFLOP/s as a fraction of the threads figure.
func benchPeak(out *benchOut, threads int) error {
	counts := []int{1}
	if threads > 1 {
		counts = append(counts, threads)
	}
	for _, n := range counts {
		log.Info().Int("threads", n).Msg("bench: FP32 FMA peak")
		p, err := kernels.MeasurePeakFMA(n, 10, 200*time.Millisecond)
		if errors.Is(err, kernels.ErrNoPeakProbe) {
			out.emit(benchResult{"bench": "peak_fma", "threads": n, "available": false, "reason": err.Error()})
			return nil
		}
		if err != nil {
			return err
		}
		out.emit(benchResult{"bench": "peak_fma", "isa": p.ISA, "threads": n, "gflops": round1(p.GFLOPs), "gflops_median": round1(p.Median), "rounds": 10,
			"gflops_per_thread": round1(p.GFLOPs / float64(n))})
	}
	return nil
}
