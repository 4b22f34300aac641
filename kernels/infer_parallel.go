package kernels

import (
	"sync"
	"sync/atomic"
)

// inferShare runs fn(0..n-1) on up to c.threads goroutines that take the next
// index from a shared counter, the caller among them. With a static split (one
// band per thread, as parallelFor) an op ends when its slowest band does: on a
// machine whose other core is busy, the helper goroutine may wait a whole
// scheduling slice before it starts, and the caller then idles. Taking small
// pieces, the caller simply does more of them, and waits at most for the one
// piece still running elsewhere. Inside PoolOps the helpers come from the
// device's pool.
func (c *CPU) inferShare(n int, fn func(i int)) {
	workers := min(c.threads, n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	if c.pooled() && c.pool.do(n, workers-1, fn) {
		return
	}
	var next atomic.Int64
	run := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(i)
		}
	}
	var wg sync.WaitGroup
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func() {
			defer wg.Done()
			run()
		}()
	}
	run()
	wg.Wait()
}
