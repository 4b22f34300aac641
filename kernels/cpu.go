package kernels

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// CPU is the host backend: tensors are plain []float32 and every op runs on
// goroutines spread over `threads` cores. Matrix products go to OpenBLAS when the
// package is built with cgo (gemm_blas.go) and to a blocked pure-Go gemm
// otherwise (gemm_go.go).
type CPU struct {
	threads int          // goroutines an op may use, e.g. 2
	pool    workerPool   // helper goroutines kept between ops inside PoolOps (pool.go)
	scopes  atomic.Int32 // PoolOps scopes open
	// lastSched is when an op's caller last passed the scheduler (schedPoint; schedNow).
	lastSched atomic.Int64
}

var _ Device = (*CPU)(nil)

// NewCPU returns a CPU device using `threads` goroutines per op; threads <= 0
// means DefaultThreads().
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	return &CPU{threads: threads}
}

// spareThreads is the op threads SpareP set GOMAXPROCS one above (0: none).
var spareThreads atomic.Int32

// DefaultThreads is the goroutines per op of NewCPU(0): the threads given
// to SpareP, else runtime.GOMAXPROCS(0).
func DefaultThreads() int {
	if n := spareThreads.Load(); n > 0 {
		return int(n)
	}
	return runtime.GOMAXPROCS(0)
}

// SpareP sets GOMAXPROCS to threads + 1 and makes threads NewCPU(0)'s
// default (threads <= 0: DefaultThreads(), so a second call changes nothing).
// Every part of a parallel op runs in a cgo call, and Go counts a P in a cgo
// call as in a syscall: with all the Ps in calls, sysmon takes one back after
// 20 µs, starts a spinning M for it and keeps waking every 20 µs while ops
// follow one another; with a P left idle it leaves calls alone (up to 10 ms)
// and backs off. On a 2-vCPU VM those wake-ups preempt the kernels: the small
// training step had 6.8k context switches a step, 44% of them sysmon's sleeps
// and 48% timer preemptions of the sgemm kernel; with the spare P, half as
// many, and the step's median 7.7-8.5% faster (BenchmarkTrainSpareP, three
// runs). The ops' threads are unchanged, so the cores are not oversubscribed
// by troupe's own work. PoolOps gives the spare P back while it is open.
func SpareP(threads int) {
	if threads <= 0 {
		threads = DefaultThreads()
	}
	spareThreads.Store(int32(threads))
	runtime.GOMAXPROCS(threads + 1)
}

// SparePUnlessSet is SpareP(0) unless the GOMAXPROCS environment variable
// is set (the user's choice stands): what cmd/troupe does at start, and what
// the test binaries do before their benchmarks, so they time the ops as
// troupe runs them.
func SparePUnlessSet() {
	if os.Getenv("GOMAXPROCS") == "" {
		SpareP(0)
	}
}

// Name implements Device.
func (c *CPU) Name() string { return "cpu" }

// Backend says which matrix-product code runs, e.g. "openblas SkylakeX" or
// "pure Go", for logs.
func (c *CPU) Backend() string { return gemmBackendDetail() }

// Threads reports how many goroutines an op may use.
func (c *CPU) Threads() int { return c.threads }

// minChunkWork is roughly how many flops a goroutine must get before spawning it
// pays for itself (a spawn plus a WaitGroup hand-off costs a few microseconds).
const minChunkWork = 1 << 15

// parallelFor runs fn over [0,n) split into contiguous chunks, one goroutine per
// chunk, at most c.threads chunks. work is the approximate cost of one item in
// flops; small loops run inline on the caller's goroutine.
func (c *CPU) parallelFor(n, work int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	chunks := c.threads
	if work < 1 {
		work = 1
	}
	if most := n * work / minChunkWork; most < chunks {
		chunks = most
	}
	if chunks > n {
		chunks = n
	}
	if chunks <= 1 {
		fn(0, n)
		return
	}
	if c.pooled() && c.pool.do(chunks, chunks-1, func(i int) { fn(n*i/chunks, n*(i+1)/chunks) }) {
		return
	}
	c.schedPoint()
	var wg sync.WaitGroup
	for i := 1; i < chunks; i++ {
		lo, hi := n*i/chunks, n*(i+1)/chunks
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	fn(0, n/chunks) // the caller works too instead of just waiting
	wg.Wait()
}

// parallelMeet runs fn over [0,n) in blocks of g items, claimed one at a
// time by two goroutines: the caller from the front and a helper from the
// back, meeting where their speeds put them (as the shared products' chunks,
// gemm_avx512_cgo.go). On this VM one vCPU runs 1.5-2.5x slower than the
// other for stretches of hundreds of milliseconds; with parallelFor's fixed
// halves the fast one then waits at the end of every op. When both run
// alike they meet near the middle, so each keeps the rows it had (and that
// the shared products before and after it leave in its cache). Each block's
// result must not depend on which goroutine computes it. Other thread counts,
// and ops inside PoolOps, go to parallelFor.
func (c *CPU) parallelMeet(n, g, work int, fn func(lo, hi int)) {
	if !useMeet || c.threads != 2 || c.pooled() || g < 1 {
		c.parallelFor(n, work, fn)
		return
	}
	nb := (n + g - 1) / g
	if nb < 2 || n*max(work, 1)/minChunkWork < 2 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var w atomic.Uint64 // blocks taken from the front (low 32 bits) and from the back
	run := func(back bool) {
		for {
			v := w.Load()
			f, b := v&0xffffffff, v>>32
			if int(f+b) >= nb {
				return
			}
			i, nv := int(f), v+1
			if back {
				i, nv = nb-1-int(b), v+1<<32
			}
			if w.CompareAndSwap(v, nv) {
				if !back {
					c.schedPoint() // an op of long blocks (gpt2's LM head bands)
				}
				fn(i*g, min(n, (i+1)*g))
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		run(true)
	}()
	run(false)
	wg.Wait()
}

// schedPoint lets the goroutine calling a parallel op pass through the Go
// scheduler (runtime.Gosched, ~80 ns when nothing else is runnable) when
// schedEvery has passed since it last did on c. An op's parts run in cgo
// calls, and a goroutine that goes from op to op without blocking keeps its
// P's scheduling tick: after 10 ms on one tick sysmon takes the P from the
// cgo call it is in (as from a goroutine that will not yield) and, having
// taken a P, drops back to waking every 20 µs. On the 2-vCPU VM each of its
// wake-ups preempts a kernel. Without schedPoint the model's small training
// step had 2,800-3,100 context switches a step (perf: 43% timer
// preemptions of the sgemm kernels, 42% sysmon's own sleeps); with it
// 900-1,200, and the step's median 4.4-6.5% faster, gpt2's 4.1%
// (BenchmarkTrainSchedPoint, same process, alternating). Every 1 ms measured
// 0.5-2% slower than every 4 ms; products cut into ~2.5 ms cgo calls to pass
// the scheduler inside them too measured level.
func (c *CPU) schedPoint() {
	if !useSchedPoint {
		return
	}
	now := schedNow()
	if now-c.lastSched.Load() >= int64(schedEvery) {
		c.lastSched.Store(now)
		runtime.Gosched()
	}
}

// schedNow is the time for lastSched: ns since the package started, on the
// monotonic clock (a wall clock set back would stop the yields until it
// caught up).
func schedNow() int64 { return int64(time.Since(schedEpoch)) }

var schedEpoch = time.Now()

// schedEvery is how often, at most, schedPoint yields: well inside sysmon's
// 10 ms, and a few ops apart at the training shapes.
var schedEvery = 4 * time.Millisecond

// useSchedPoint turns schedPoint on (benchmarks compare).
var useSchedPoint = true

// useMeet lets parallelMeet claim blocks from both ends (benchmarks compare
// it with parallelFor's fixed halves).
var useMeet = true

// need panics with ErrShape unless t holds at least n values on the host.
func need(t Tensor, n int, what string) {
	if n < 0 || len(t.F) < n || t.N < n {
		panic(fmt.Errorf("%w: %s has %d values (N=%d), need %d", ErrShape, what, len(t.F), t.N, n))
	}
}

// Alloc implements Device: n zeroed host floats (on huge pages from 2 MB up,
// see hostFloats).
func (c *CPU) Alloc(n int) Tensor { return Tensor{F: hostFloats(n), N: n} }

// Free implements Device; the garbage collector owns host memory.
func (c *CPU) Free(t Tensor) {}

// Upload implements Device: dst = src.
func (c *CPU) Upload(dst Tensor, src []float32) {
	if len(src) != dst.N {
		panic(fmt.Errorf("%w: Upload of %d values into N=%d", ErrShape, len(src), dst.N))
	}
	copy(dst.F[:dst.N], src)
}

// Download implements Device: dst = src (len(dst) values).
func (c *CPU) Download(dst []float32, src Tensor) {
	need(src, len(dst), "Download src")
	copy(dst, src.F[:len(dst)])
}

// Copy implements Device: dst = src, both N values.
func (c *CPU) Copy(dst, src Tensor) {
	if dst.N != src.N {
		panic(fmt.Errorf("%w: Copy N=%d into N=%d", ErrShape, src.N, dst.N))
	}
	d, sv := dst.F[:dst.N], src.F[:src.N]
	c.memPass(len(d), func(lo, hi int) { copy(d[lo:hi], sv[lo:hi]) })
}

// memPassSplit is the length from which the plain memory passes (Zero, Copy)
// split over the threads: clearing GPT-2's 496 MB of gradients took 57 ms on
// one thread and 19.5 ms on two (same process).
const memPassSplit = 1 << 20

// memPass runs fn over [0,n): inline below memPassSplit values, else in
// blocks of 1 MB claimed from both ends by the threads (parallelMeet).
func (c *CPU) memPass(n int, fn func(lo, hi int)) {
	if n < memPassSplit {
		fn(0, n)
		return
	}
	c.parallelMeet(n, memPassSplit/4, 1, fn) // 1 MB a claim
}

// Zero implements Device: t = 0.
func (c *CPU) Zero(t Tensor) {
	f := t.F[:t.N]
	c.memPass(len(f), func(lo, hi int) { clear(f[lo:hi]) })
}

// Sync implements Device; CPU ops finish before they return.
func (c *CPU) Sync() {}

// Scale implements Device: t (N) *= s.
func (c *CPU) Scale(t Tensor, s float32) {
	f := t.F[:t.N]
	c.parallelFor(len(f), 1, func(lo, hi int) {
		x := f[lo:hi]
		for i := range x {
			x[i] *= s
		}
	})
}

// AddInto implements Device: dst (N) += src (N).
func (c *CPU) AddInto(dst, src Tensor) {
	if dst.N != src.N {
		panic(fmt.Errorf("%w: AddInto N=%d into N=%d", ErrShape, src.N, dst.N))
	}
	d, s := dst.F[:dst.N], src.F[:src.N]
	c.parallelFor(len(d), 1, func(lo, hi int) {
		x, y := d[lo:hi], s[lo:hi]
		for i := range x {
			x[i] += y[i]
		}
	})
}

// Add implements Device: out (N) = a (N) + b (N); out may alias a or b.
func (c *CPU) Add(out, a, b Tensor) {
	if out.N != a.N || out.N != b.N {
		panic(fmt.Errorf("%w: Add N=%d,%d into N=%d", ErrShape, a.N, b.N, out.N))
	}
	o, x, y := out.F[:out.N], a.F[:a.N], b.F[:b.N]
	c.parallelFor(len(o), 1, func(lo, hi int) {
		oo, xx, yy := o[lo:hi], x[lo:hi], y[lo:hi]
		for i := range oo {
			oo[i] = xx[i] + yy[i]
		}
	})
}

// sumSquaresBlock is the fixed block size of SumSquares' partial sums: fixed, so the
// result does not depend on the number of threads.
const sumSquaresBlock = 1 << 12

// SumSquares implements Device: sum of t[i]^2 in float64.
func (c *CPU) SumSquares(t Tensor) float64 {
	f := t.F[:t.N]
	nb := (len(f) + sumSquaresBlock - 1) / sumSquaresBlock
	partial := make([]float64, nb)
	c.parallelMeet(nb, 64, 2*sumSquaresBlock, func(lo, hi int) { // 64 blocks (1 MB) a claim; the sum adds them in order
		for b := lo; b < hi; b++ {
			x := f[b*sumSquaresBlock : min(len(f), (b+1)*sumSquaresBlock)]
			if s, ok := sumSquaresVector(x); ok {
				partial[b] = s
				continue
			}
			// float32 accumulators over a 4096-value block lose at most ~1e-4 relative,
			// four of them keep the adds independent; the blocks add up in float64.
			var s0, s1, s2, s3 float64
			i := 0
			for ; i+4 <= len(x); i += 4 {
				a, b, c, d := float64(x[i]), float64(x[i+1]), float64(x[i+2]), float64(x[i+3])
				s0 += a * a
				s1 += b * b
				s2 += c * c
				s3 += d * d
			}
			for ; i < len(x); i++ {
				s0 += float64(x[i]) * float64(x[i])
			}
			partial[b] = (s0 + s1) + (s2 + s3)
		}
	})
	var s float64
	for _, p := range partial {
		s += p
	}
	return s
}

// AddBias implements Device: out (N,OC) += bias (OC) on every row.
func (c *CPU) AddBias(out, bias Tensor, N, OC int) {
	need(out, N*OC, "AddBias out")
	need(bias, OC, "AddBias bias")
	o, bb := out.F, bias.F[:OC]
	c.parallelFor(N, OC, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := o[i*OC : i*OC+OC]
			for j, b := range bb {
				row[j] += b
			}
		}
	})
}

// BiasBackward implements Device: dbias (OC) += column sums of dout (N,OC).
// Parallel over column bands so no two goroutines touch the same dbias entry and
// the sum order is fixed.
func (c *CPU) BiasBackward(dbias, dout Tensor, N, OC int) {
	need(dout, N*OC, "BiasBackward dout")
	need(dbias, OC, "BiasBackward dbias")
	d, db := dout.F, dbias.F[:OC]
	c.parallelFor(OC, N, func(lo, hi int) {
		acc := make([]float32, hi-lo)
		vec := colSumVector(acc, d[lo:], N, hi-lo, OC)
		for i := 0; i < N && !vec; i++ {
			row := d[i*OC+lo : i*OC+hi]
			for j, x := range row {
				acc[j] += x
			}
		}
		for j, a := range acc {
			db[lo+j] += a
		}
	})
}

// EncoderForward implements Device: out (N,C) = wte[tokens[i]] + wpe[pos[i]];
// wte (V,C), wpe (maxT,C).
func (c *CPU) EncoderForward(out Tensor, tokens, pos []int32, wte, wpe Tensor, N, C int) {
	need(out, N*C, "EncoderForward out")
	if len(tokens) < N || len(pos) < N {
		panic(fmt.Errorf("%w: EncoderForward has %d tokens, %d positions for N=%d", ErrShape, len(tokens), len(pos), N))
	}
	V, maxT := wte.N/C, wpe.N/C
	c.parallelFor(N, C, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			t, p := int(tokens[i]), int(pos[i])
			if t < 0 || t >= V || p < 0 || p >= maxT {
				panic(fmt.Errorf("%w: EncoderForward row %d: token %d of %d, pos %d of %d", ErrShape, i, t, V, p, maxT))
			}
			o, e, w := out.F[i*C:i*C+C], wte.F[t*C:t*C+C], wpe.F[p*C:p*C+C]
			for j := range o {
				o[j] = e[j] + w[j]
			}
		}
	})
}

// EncoderBackward implements Device: dwte[tokens[i]] += dout[i], dwpe[pos[i]] += dout[i]
// for dout (N,C). Parallel over column bands: rows sharing a token then never race,
// and the add order (row order) is fixed. Either gradient may be empty.
func (c *CPU) EncoderBackward(dwte, dwpe, dout Tensor, tokens, pos []int32, N, C int) {
	need(dout, N*C, "EncoderBackward dout")
	if len(tokens) < N || len(pos) < N {
		panic(fmt.Errorf("%w: EncoderBackward has %d tokens, %d positions for N=%d", ErrShape, len(tokens), len(pos), N))
	}
	V, maxT := dwte.N/C, dwpe.N/C
	for i := 0; i < N; i++ {
		if t := int(tokens[i]); !dwte.Empty() && (t < 0 || t >= V) {
			panic(fmt.Errorf("%w: EncoderBackward row %d: token %d of %d", ErrShape, i, t, V))
		}
		if p := int(pos[i]); !dwpe.Empty() && (p < 0 || p >= maxT) {
			panic(fmt.Errorf("%w: EncoderBackward row %d: pos %d of %d", ErrShape, i, p, maxT))
		}
	}
	c.parallelFor(C, 2*N, func(lo, hi int) {
		for i := 0; i < N; i++ {
			d := dout.F[i*C+lo : i*C+hi]
			if !dwte.Empty() {
				t := int(tokens[i])
				w := dwte.F[t*C+lo : t*C+hi]
				for j, x := range d {
					w[j] += x
				}
			}
			if !dwpe.Empty() {
				p := int(pos[i])
				w := dwpe.F[p*C+lo : p*C+hi]
				for j, x := range d {
					w[j] += x
				}
			}
		}
	})
}
