package actors

import (
	"context"
	"time"
)

// A worker watches its own clock for pauses: ticks every pauseTick, and a
// gap of pauseThreshold or more between two of them means the process did
// not run for that long (SIGSTOP, a machine too loaded to schedule it, a
// long stall), long enough that a learner's health poll (every 2 s, with a
// 2 s timeout) may have failed and the learner dropped it for good. The
// worker then rejoins under a new member id (clusterNode.rejoin). The
// threshold is half the poll timeout: a needless rejoin costs the request in
// hand, a missed one every request for the rest of the run.
const (
	pauseTick      = 100 * time.Millisecond
	pauseThreshold = time.Second
)

// watchPauses calls onPause with the gap whenever two ticks of tick are
// threshold or more apart on clock (time.Now; tests pass another), until ctx
// is done. onPause runs on watchPauses's goroutine.
func watchPauses(ctx context.Context, tick, threshold time.Duration, clock func() time.Time, onPause func(gap time.Duration)) {
	t := time.NewTicker(tick)
	defer t.Stop()
	last := clock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// The time now, not the tick's: a tick buffered before a pause
			// carries the time it fired.
			now := clock()
			if gap := now.Sub(last); gap >= threshold {
				onPause(gap)
			}
			last = now
		}
	}
}
