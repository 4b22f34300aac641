package kernels

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkerPool: every part runs exactly once, whatever the number of parts
// and helpers, across jobs that come back to back and after the helpers parked;
// a job started from inside a job (nested) is refused, not deadlocked.
func TestWorkerPool(t *testing.T) {
	var p workerPool
	for round, gap := range []time.Duration{0, 0, 2 * poolSpin, 0, 3 * poolSpin} {
		for _, sh := range [][2]int{{1, 1}, {2, 1}, {7, 1}, {3, 2}, {40, 3}} {
			n, helpers := sh[0], sh[1]
			runs := make([]atomic.Int32, n)
			if !p.do(n, helpers, func(i int) { runs[i].Add(1) }) {
				t.Fatalf("round %d: idle pool refused a job", round)
			}
			for i := range runs {
				if got := runs[i].Load(); got != 1 {
					t.Fatalf("round %d n=%d helpers=%d: part %d ran %d times", round, n, helpers, i, got)
				}
			}
		}
		time.Sleep(gap)
	}
	nested := true
	p.do(2, 1, func(i int) {
		if i == 0 {
			nested = p.do(1, 1, func(int) {})
		}
	})
	if nested {
		t.Fatal("a job inside a job was accepted")
	}
}
