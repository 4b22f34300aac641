package actors

import (
	"context"
	"sync"
	"testing"
	"time"
)

// watchPauses reports a jump of its clock past the threshold, once, with its
// size, and nothing for ticks that come on time.
func TestWatchPauses(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	step := 10 * time.Millisecond // the fake clock's advance per reading
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(step)
		return now
	}
	gaps := make(chan time.Duration, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		watchPauses(ctx, time.Millisecond, time.Second, clock, func(g time.Duration) { gaps <- g })
		close(done)
	}()
	time.Sleep(50 * time.Millisecond) // ticks on time: no pause
	select {
	case g := <-gaps:
		t.Fatalf("pause of %v reported for ticks 10ms apart", g)
	default:
	}
	mu.Lock()
	now = now.Add(3 * time.Second) // the process was stopped
	mu.Unlock()
	select {
	case g := <-gaps:
		if g < 3*time.Second || g > 3*time.Second+100*time.Millisecond {
			t.Fatalf("pause reported as %v, want about 3s", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a 3 s jump was not reported")
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case g := <-gaps:
		t.Fatalf("a second pause of %v reported after one jump", g)
	default:
	}
	cancel()
	<-done
}
