package kernels

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// PeakFMA is the machine's measured FP32 fused multiply-add throughput: the
// yardstick a model's GFLOP/s is a fraction of.
type PeakFMA struct {
	ISA     string  // "avx512" or "avx2": the widest the CPU runs
	Threads int     // OS threads, each running the kernel on its own
	GFLOPs  float64 // 2 FLOPs per FMA lane, best of the rounds
	Median  float64 // the rounds' median: far below GFLOPs when other work shared the cores
}

// ErrNoPeakProbe is what MeasurePeakFMA returns where no probe kernel is built
// (a pure-Go build, or a CPU without AVX2+FMA).
var ErrNoPeakProbe = errors.New("no FMA peak probe in this build (it needs cgo on amd64 and a CPU with AVX2+FMA or AVX-512F)")

// peakFMAProbe, set by peak_fma_cgo.go, runs iters rounds of peakChains
// independent FMA chains on one thread and returns the vector width in
// float32 lanes (16 or 8) and the ISA's name; nil where there is no probe.
var peakFMAProbe func(iters int64) (lanes int, isa string)

// peakChains is the independent accumulators per round: enough to cover an FMA's
// latency (4 cycles) on 2 pipes with room to spare, so the loop is bound by
// throughput, not by the dependency chain.
const peakChains = 12

// MeasurePeakFMA runs the probe on threads OS threads at once for about
// roundDur per round, rounds times, and returns the best round's GFLOP/s (a
// peak is what the cores can do: a round that shared them with other work
// only reads low) and the median. It is a measurement: it takes threads cores
// for rounds*roundDur.
func MeasurePeakFMA(threads, rounds int, roundDur time.Duration) (PeakFMA, error) {
	if peakFMAProbe == nil {
		return PeakFMA{}, ErrNoPeakProbe
	}
	if threads < 1 || rounds < 1 || roundDur <= 0 {
		return PeakFMA{}, fmt.Errorf("MeasurePeakFMA: threads %d and rounds %d must be >= 1 and the round time %v > 0", threads, rounds, roundDur)
	}
	// Calibrate on one thread: iterations for about roundDur.
	iters := int64(1 << 20)
	var lanes int
	var isa string
	for {
		t0 := time.Now()
		lanes, isa = peakFMAProbe(iters)
		if d := time.Since(t0); d >= roundDur/4 || iters >= 1<<40 {
			iters = max(1, int64(float64(iters)*roundDur.Seconds()/max(d.Seconds(), 1e-9)))
			break
		}
		iters *= 4
	}
	rates := make([]float64, rounds)
	for r := range rates {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // one OS thread per probe, whatever GOMAXPROCS
				defer runtime.UnlockOSThread()
				<-start
				peakFMAProbe(iters)
			}()
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		d := time.Since(t0)
		flops := 2 * float64(lanes) * peakChains * float64(iters) * float64(threads)
		rates[r] = flops / d.Seconds() / 1e9
	}
	slices.Sort(rates)
	return PeakFMA{ISA: isa, Threads: threads, GFLOPs: rates[rounds-1], Median: rates[rounds/2]}, nil
}
