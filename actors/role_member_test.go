package actors

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// stubFiller is a model for the member shell: each Fill reports how many
// rollouts it got, waits to be released, and fails on a batch of failOn
// rollouts.
type stubFiller struct {
	started chan int
	release chan struct{}
	failOn  int
}

func (f *stubFiller) Fill(rs []learner.Rollout) error {
	f.started <- len(rs)
	<-f.release
	if len(rs) == f.failOn {
		return errors.New("stub fill failed")
	}
	for i := range rs {
		rs[i].RefLogProbs = make([]float32, len(rs[i].Response))
	}
	return nil
}

// The member shell refuses another run's request, works on one request at a
// time in arrival order, answers a failed one with its error, and retries
// the request in hand after its work panicked, counting the retry.
func TestMemberShell(t *testing.T) {
	defer leakCheck(t)()
	log, logs := testLogger()
	var inflight sync.WaitGroup
	var state memberState
	fs := &faults{opt: FaultInjection{PanicReferenceAfter: 2}}
	filler := &stubFiller{started: make(chan int, 10), release: make(chan struct{}), failOn: 4}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(actorLoggerFactory(log)))
	defer sys.Shutdown()
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newMemberActor(memberConfig{
			name: "reference-t", runID: "run-a", log: log, inflight: &inflight, state: &state,
			work: "reference log-probs", refusal: "request of another run refused", retrying: "reference restarted; retrying its request",
		}, fillRole[*messages.RefRequest, []*messages.LogProbs]{
			role: roleReference, name: "reference-t", model: filler, requests: &fs.refs, crashAfter: fs.opt.PanicReferenceAfter,
			take: refLogProbs, reply: refResult,
		})
	}))
	defer func() {
		close(filler.release) // a Fill still waiting (the test failed) returns
		sys.Root.StopFuture(pid).Wait()
		inflight.Wait()
	}()

	res, err := sys.Root.RequestFuture(pid, &messages.RefRequest{RequestId: 1, RunId: "run-b"}, 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(*messages.RefResult); r.GetRequestId() != 1 || !strings.Contains(r.GetRefused(), `serves run "run-a", not "run-b"`) {
		t.Fatalf("another run's request: got %v, want a refusal", r)
	}

	// Requests of 1..4 rollouts; the second one's work panics once (the
	// second request started), the fourth one's Fill fails.
	var futures []*actor.Future
	for n := 1; n <= 4; n++ {
		req := &messages.RefRequest{RequestId: int64(10 + n), RunId: "run-a"}
		for range n {
			req.Rollouts = append(req.Rollouts, &messages.Rollout{Response: []int32{1, 2, 3}})
		}
		futures = append(futures, sys.Root.RequestFuture(pid, req, 20*time.Second))
	}
	for _, want := range []int{1, 2, 3, 4} {
		select {
		case got := <-filler.started:
			if got != want {
				t.Fatalf("Fill started on %d rollouts, want %d (requests out of order)", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no Fill on the request of %d rollouts; logs:\n%s", want, logs.String())
		}
		select {
		case got := <-filler.started:
			t.Fatalf("Fill started on %d rollouts while the one on %d runs", got, want)
		case <-time.After(50 * time.Millisecond):
		}
		filler.release <- struct{}{}
	}
	for i, f := range futures {
		res, err := f.Result()
		if err != nil {
			t.Fatalf("request %d: %v", 11+i, err)
		}
		r := res.(*messages.RefResult)
		wantRetries, wantErr, wantRows := int64(0), "", i+1
		if i == 1 {
			wantRetries = 1
		}
		if i == 3 {
			wantErr, wantRows = "stub fill failed", 0
		}
		if r.GetRequestId() != int64(11+i) || r.GetMember() != "reference-t" || r.GetRetries() != wantRetries ||
			r.GetError() != wantErr || len(r.GetLogprobs()) != wantRows || r.GetRefused() != "" {
			t.Fatalf("request %d: got %v, want %d rows, %d retries, error %q", 11+i, r, wantRows, wantRetries, wantErr)
		}
		for _, lp := range r.GetLogprobs() {
			if len(lp.GetValues()) != 3 {
				t.Fatalf("request %d: a row of %d log-probs for 3 response tokens", 11+i, len(lp.GetValues()))
			}
		}
	}
	for _, want := range []string{"request of another run refused", "injected crash in a reference request",
		"reference restarted; retrying its request", "reference log-probs failed"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("%q not logged:\n%s", want, logs.String())
		}
	}
}
