package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// PoolOps makes d's parallel ops run on a pool of helper goroutines that stay
// between ops, until the returned function is called (scopes may nest and
// overlap); on devices other than the CPU it does nothing. It is for many short
// ops in a row: Generate's decode steps run ~40 parallel ops of ~50 µs each.
//
// While a scope is open on a device of several threads, the spare P of
// SpareP is given back (GOMAXPROCS = the threads): ops this short ran 15-20%
// slower with it, pool or not (Generate at the bench shape, GOMAXPROCS 2 and
// 3 alternating in one process: 3497 vs 2779 and 3934 vs 3341 new tokens/s),
// where training's long ones gain.
func PoolOps(d Device) (done func()) {
	c, ok := d.(*CPU)
	if !ok {
		return func() {}
	}
	lend, pooled := c.threads > 1, usePool
	if lend {
		spareScopes(1)
	}
	if pooled {
		c.scopes.Add(1)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if pooled {
				c.scopes.Add(-1)
			}
			if lend {
				spareScopes(-1)
			}
		})
	}
}

// spareMu guards spareOut, the PoolOps scopes open on devices of several
// threads: while there is one, SpareP's spare P is given back.
var (
	spareMu  sync.Mutex
	spareOut int
)

// spareScopes opens (+1) or closes (-1) such a scope: the first one open
// sets GOMAXPROCS to SpareP's threads, the last one closed one above again.
func spareScopes(delta int) {
	spareMu.Lock()
	defer spareMu.Unlock()
	spareOut += delta
	n := int(spareThreads.Load())
	switch {
	case n == 0:
	case delta > 0 && spareOut == 1:
		runtime.GOMAXPROCS(n)
	case delta < 0 && spareOut == 0:
		runtime.GOMAXPROCS(n + 1)
	}
}

// pooled reports whether an op should go through the pool (inside PoolOps).
func (c *CPU) pooled() bool { return c.scopes.Load() > 0 }

// workerPool is a CPU device's helper goroutines for PoolOps. Starting a
// goroutine per op wakes a parked OS thread, which takes tens of microseconds
// on a VM while the caller waits for its helper at the end of every op. A pool
// helper that finishes a job keeps looking for the next one for poolSpin, then
// parks; after poolIdleExit parked it exits, so an idle device holds no
// goroutines. A job's parts are claimed by the caller and the helpers, each
// starting at its own share (so consecutive ops keep a band on the same core),
// and a helper that starts late costs no more than the caller doing its part.
//
// Same-process A/Bs on the 2-core dev machine (alternating): Generate at the
// bench shape 1.21-1.27x new tokens/s with the pool. Scoring (640-row products)
// measured 1-4% slower and a training step 3-4% slower with their ops on the
// pool, so they stay on a goroutine per part: their ops are long, so a helper's
// start costs little, while a helper spinning on the other core delays the
// goroutines of an op that does not go through the pool.
type workerPool struct {
	busy   sync.Mutex // one job at a time; a caller that finds it held starts goroutines as before
	cur    atomic.Pointer[poolJob]
	wake   chan struct{} // a token per parked helper to wake
	parked atomic.Int32
	alive  atomic.Int32
}

// poolJob is one parallel op: parts 0..n-1 of fn, taken by parties goroutines.
type poolJob struct {
	fn      func(i int)
	n       int
	parties int
	claimed []atomic.Bool
	left    atomic.Int64 // parts not yet finished
}

var (
	// poolSpin is how long a helper looks for the next job before parking.
	poolSpin = 100 * time.Microsecond
	// poolIdleExit is how long a parked helper waits for a job before exiting.
	poolIdleExit = 250 * time.Millisecond
	// usePool lets PoolOps turn the pool on (benchmarks compare against a
	// goroutine per part).
	usePool = true
)

// run takes parts until none is left, party w starting at its own share
// (w*n/parties) and going round: with one part per party each runs the same
// part in every op, as a static split would (the caller part 0), so what one op
// leaves in a core's L2 the next op reads there; a late party's parts are taken
// by the others.
func (j *poolJob) run(w int) {
	start := w % j.parties * j.n / j.parties
	for k := 0; k < j.n; k++ {
		i := (start + k) % j.n
		if j.claimed[i].Load() || !j.claimed[i].CompareAndSwap(false, true) {
			continue
		}
		j.fn(i)
		j.left.Add(-1)
	}
}

// do runs fn(0..n-1) with up to helpers helper goroutines plus the caller and
// returns when every part is done. It reports false, running nothing, when
// another job holds the pool (a nested or concurrent op).
func (p *workerPool) do(n, helpers int, fn func(i int)) bool {
	if !p.busy.TryLock() {
		return false
	}
	defer p.busy.Unlock()
	if p.wake == nil {
		p.wake = make(chan struct{}, 64)
	}
	j := &poolJob{fn: fn, n: n, parties: helpers + 1, claimed: make([]atomic.Bool, n)}
	j.left.Store(int64(n))
	p.cur.Store(j)
	for k := p.parked.Load(); k > 0; k-- {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	for a := p.alive.Load(); a < int32(helpers); a = p.alive.Load() {
		p.alive.Add(1)
		go p.helper(int(a)+1, nil)
	}
	j.run(0)
	for spins := 0; j.left.Load() > 0; spins++ {
		if spins > 1000 {
			runtime.Gosched() // the helper may need this P (GOMAXPROCS below threads)
		}
	}
	return true
}

// helper (party id of every job) runs jobs as they come, spinning poolSpin
// between them, then parking.
func (p *workerPool) helper(id int, last *poolJob) {
	defer p.alive.Add(-1)
	for {
		j := p.cur.Load()
		if j == last {
			if j = p.await(last); j == nil {
				return
			}
		}
		last = j
		j.run(id)
	}
}

// await returns the first job other than last, or nil when none came within
// poolSpin plus poolIdleExit.
func (p *workerPool) await(last *poolJob) *poolJob {
	// Spin holding the P, without yielding: a goroutine that yields keeps landing
	// on the run queue, and the scheduler then hands it the P of a caller that is
	// in a long cgo call, putting a third thread on two cores (training measured
	// ~4% slower that way).
	for t0 := time.Now(); time.Since(t0) < poolSpin; {
		for range 64 {
			if j := p.cur.Load(); j != last {
				return j
			}
		}
	}
	idle := time.NewTimer(poolIdleExit)
	defer idle.Stop()
	for {
		p.parked.Add(1)
		if j := p.cur.Load(); j != last { // a job stored before we counted ourselves parked
			p.parked.Add(-1)
			return j
		}
		select {
		case <-p.wake:
			p.parked.Add(-1)
			if j := p.cur.Load(); j != last {
				return j
			}
		case <-idle.C:
			p.parked.Add(-1)
			return nil
		}
	}
}
