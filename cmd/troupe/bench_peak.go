package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
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
		if err := benchPeakRounds(out, n, 10, "start"); err != nil {
			return err
		}
	}
	benchGemmCeiling(out, threads, "start")
	return nil
}

// benchPeakRounds measures the FMA peak on n threads, rounds rounds of about
// 0.2 s, and emits it as a peak_fma line tagged with when it ran. bench runs
// it again after each config's measurements (peakRecheckRounds): on this
// shared VM one round of the start's ten once read 171 GFLOP/s on 2 threads
// against 173 on 1, the second vCPU taken by other work for the whole
// second, which made the model's "fraction of peak" read 95%. The table takes
// the best round of the run (bench_report.go).
func benchPeakRounds(out *benchOut, n, rounds int, when string) error {
	log.Info().Int("threads", n).Str("when", when).Msg("bench: FP32 FMA peak")
	p, err := kernels.MeasurePeakFMA(n, rounds, 200*time.Millisecond)
	if errors.Is(err, kernels.ErrNoPeakProbe) {
		out.emit(benchResult{"bench": "peak_fma", "threads": n, "available": false, "reason": err.Error(), "when": when})
		return nil
	}
	if err != nil {
		return err
	}
	out.emit(benchResult{"bench": "peak_fma", "isa": p.ISA, "threads": n, "gflops": round1(p.GFLOPs), "gflops_median": round1(p.Median), "rounds": rounds,
		"gflops_per_thread": round1(p.GFLOPs / float64(n)), "when": when})
	return nil
}

// peakRecheckRounds is how many rounds the FMA peak gets again after each
// config (about a second).
const peakRecheckRounds = 5

// benchGemmCeiling times the CPU device's Gemm alone at the largest product of
// a "small" training step (2048 x 384 @ 384 x 1536, c_fc's forward) on threads
// threads, the best of about 1 s of calls: what the matrix products reach
// outside the model, to read the model's fraction of the FMA peak against.
// bench runs it again after each config, beside the FMA probe: its median
// touches memory as training does, so it shows the VM's slow stretches for
// memory-heavy work (every model step slower, PyTorch's too) that the FMA
// probe, in registers, does not (2026-11-28: PyTorch's small steps 11-20%
// slower in some runs than in others while the FMA probe read the same).
func benchGemmCeiling(out *benchOut, threads int, when string) {
	const m, k, n = 2048, 384, 1536
	log.Info().Int("threads", threads).Msg("bench: sgemm alone")
	d := kernels.NewCPU(threads)
	rng := rand.New(rand.NewPCG(5, 5))
	a, b, c := d.Alloc(m*k), d.Alloc(k*n), d.Alloc(m*n)
	for _, t := range []kernels.Tensor{a, b} {
		for i := range t.F {
			t.F[i] = float32(rng.NormFloat64())
		}
	}
	flop := 2.0 * m * n * k
	shape := fmt.Sprintf("%dx%dx%d", m, k, n)
	secs, _ := timeCalls(func() error {
		d.Gemm(false, false, m, n, k, 1, a, k, b, n, 0, c, n)
		return nil
	})
	out.emit(callRates(benchResult{"bench": "peak_gemm", "threads": threads, "shape": shape, "backend": d.Backend(), "when": when}, flop, secs))
	// The same product on OpenBLAS alone, its own pool of threads threads:
	// the machine's BLAS, which PyTorch's products run on, as a second
	// reading of what products reach here.
	line := benchResult{"bench": "peak_gemm_openblas", "threads": threads, "shape": shape, "when": when}
	secs, err := timeCalls(func() error { return kernels.GemmOpenBLAS(threads, m, n, k, a.F, b.F, c.F) })
	if err != nil {
		line["available"], line["reason"] = false, err.Error()
		out.emit(line)
		return
	}
	out.emit(callRates(line, flop, secs))
	// OpenBLAS's idle pool threads spin a while before they sleep: let them
	// stop before the next measurement.
	time.Sleep(300 * time.Millisecond)
}

// timeCalls calls f for about a second, at least 5 times, and returns each
// call's seconds, sorted; f's first error ends it.
func timeCalls(f func() error) ([]float64, error) {
	var secs []float64
	for start := time.Now(); len(secs) < 5 || time.Since(start) < time.Second; {
		t0 := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		secs = append(secs, time.Since(t0).Seconds())
	}
	slices.Sort(secs)
	return secs, nil
}

// callRates adds to line the GFLOP/s of the fastest and the median of calls
// of flop FLOPs that took secs seconds each (sorted), and their count.
func callRates(line benchResult, flop float64, secs []float64) benchResult {
	line["gflops"] = round1(flop / secs[0] / 1e9)
	line["gflops_median"] = round1(flop / secs[len(secs)/2] / 1e9)
	line["calls"] = len(secs)
	return line
}
