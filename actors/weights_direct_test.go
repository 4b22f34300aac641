package actors

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// With nats.weights_direct, subscribers on their own connections dial the
// publisher's direct server after the first announcement names it and take
// every later version from it, byte for byte (fp32, and bf16 decoded as
// chunks arrive), while nothing goes out on the NATS fan-out; a subscriber
// that opts out (WithoutDirect) keeps getting the NATS fan-out beside them.
func TestWeightsDirect(t *testing.T) {
	for _, dtype := range []string{DTypeFP32, DTypeBF16} {
		t.Run(dtype, func(t *testing.T) {
			nc := startNATS(t)
			url := nc.ConnectedUrl()
			ctx := context.Background()
			pub, err := NewWeightPublisher(ctx, nc, "policy", WithWeightsDType(dtype), WithWeightsDirect("127.0.0.1:0"))
			if err != nil {
				t.Fatalf("NewWeightPublisher: %v", err)
			}
			t.Cleanup(func() { pub.Close() })
			if a := pub.DirectAddr(); !strings.HasPrefix(a, "127.0.0.1:") {
				t.Fatalf("DirectAddr %q, want 127.0.0.1:PORT", a)
			}
			// Chunks on the NATS fan-out's subject, as a counter sees them
			// (it does not answer the publisher's question, so it makes
			// none go out).
			var natsChunks atomic.Int64
			cnt, err := nc.Subscribe(weightsDataSubject+"policy", func(*nats.Msg) { natsChunks.Add(1) })
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cnt.Unsubscribe() })
			var subs []*WeightSubscriber
			var recs []*received
			for range 2 {
				s, rec := subscribeOwn(t, url)
				subs, recs = append(subs, s), append(recs, rec)
			}
			oc, err := Connect(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(oc.Close)
			optOut := newReceived()
			so, err := SubscribeWeights(oc, "policy", zerolog.Nop(), optOut.on, WithoutDirect())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(so.Stop)

			for v := int64(1); v <= 4; v++ {
				w := randomWeights(3<<19+5, uint64(v)) // several chunks, ragged
				if _, err := pub.Publish(ctx, int(v), false, w); err != nil {
					t.Fatalf("Publish v%d: %v", v, err)
				}
				want := w
				if dtype == DTypeBF16 {
					want = make([]float32, len(w))
					for i, x := range w {
						want[i] = RoundBF16(x)
					}
				}
				for i, rec := range append(recs, optOut) {
					rec.waitFor(t, v)
					if got := rec.got[len(rec.got)-1]; got.Version != v || !slices.Equal(got.Data, want) {
						t.Fatalf("subscriber %d, version %d: got version %d, data equal %v", i, v, got.Version, slices.Equal(got.Data, want))
					}
				}
				if v == 1 {
					// Everyone has dialled by now (after version 1, on the
					// fetch goroutine): wait for the server to count them.
					waitUntil(t, func() bool { return pub.direct.subscribers() == 2 }, "2 direct subscribers")
				}
			}
			for i, s := range subs {
				if f, st := s.Received(); f != 4 || st != 0 {
					t.Errorf("subscriber %d: %d versions from chunks, %d from the store; want 4, 0", i, f, st)
				}
				if !s.onDirect() {
					t.Errorf("subscriber %d is not on the direct path", i)
				}
			}
			if f, st := so.Received(); f != 4 || st != 0 || so.onDirect() {
				t.Errorf("opted-out subscriber: %d from the fan-out, %d from the store, direct %v; want 4, 0, false", f, st, so.onDirect())
			}
			// The opted-out subscriber asks for the NATS fan-out, so it
			// still goes out; stop it and the next version goes direct only.
			so.Stop()
			before := natsChunks.Load()
			w := randomWeights(3<<19, 9)
			if _, err := pub.Publish(ctx, 5, false, w); err != nil {
				t.Fatal(err)
			}
			for _, rec := range recs {
				rec.waitFor(t, 5)
			}
			nc.Flush()
			if n := natsChunks.Load() - before; n != 0 {
				t.Errorf("%d chunks went out on the NATS fan-out with every subscriber on the direct path, want 0", n)
			}
		})
	}
}

// A direct subscriber whose connection the publisher drops gets the next
// version anyway (from the store, or from the direct server once it has
// dialled again), and the direct server refuses a connection that
// subscribes to another subject or brings the wrong credentials.
func TestWeightsDirectDropAndRefuse(t *testing.T) {
	nc := startNATS(t)
	url := nc.ConnectedUrl()
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, nc, "policy", WithWeightsDirect("127.0.0.1:0"))
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	t.Cleanup(func() { pub.Close() })
	s, rec := subscribeOwn(t, url)
	for v := int64(1); v <= 2; v++ {
		if _, err := pub.Publish(ctx, int(v), false, randomWeights(1<<20, uint64(v))); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, v)
	}
	waitUntil(t, func() bool { return pub.direct.subscribers() == 1 }, "the direct subscriber")
	pub.direct.mu.Lock()
	for dc := range pub.direct.conns {
		dc.c.Close()
	}
	pub.direct.mu.Unlock()
	waitUntil(t, func() bool { return pub.direct.subscribers() == 0 }, "the drop")
	for v := int64(3); v <= 5; v++ {
		w := randomWeights(1<<20, uint64(v))
		if _, err := pub.Publish(ctx, int(v), false, w); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, v)
		if got := rec.got[len(rec.got)-1]; !slices.Equal(got.Data, w) {
			t.Fatalf("version %d: data differs", v)
		}
		if v == 3 {
			// Its chunk connection dials the direct server again.
			waitUntil(t, func() bool { return pub.direct.subscribers() == 1 }, "the subscriber to dial again")
		}
	}
	if vs := rec.versions(); !slices.Equal(vs, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("versions %v, want 1..5 in order", vs)
	}
	// Version 1 from the NATS fan-out, 2 direct, 3 from the store (sent
	// while nobody was connected), 4 and 5 direct again.
	if f, st := s.Received(); f != 4 || st != 1 {
		t.Errorf("%d versions from chunks, %d from the store; want 4, 1", f, st)
	}

	// Refusals, on the wire.
	for _, tc := range []struct{ name, lines, want string }{
		{"another subject", "CONNECT {}\r\nSUB troupe.weightdata.other 1\r\nPING\r\n", "-ERR"},
		{"no CONNECT", "SUB troupe.weightdata.policy 1\r\nHELLO\r\n", "-ERR"},
	} {
		c, err := net.Dial("tcp", pub.DirectAddr())
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
			t.Fatalf("%s: first line %q, %v; want INFO", tc.name, line, err)
		}
		c.Write([]byte(tc.lines))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := br.ReadString('\n')
		if !strings.HasPrefix(line, tc.want) {
			t.Errorf("%s: got %q, want %s", tc.name, line, tc.want)
		}
		c.Close()
	}
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nats.weights_direct takes off (or empty) or a host:port and names itself
// and its values when it is anything else.
func TestConfigWeightsDirect(t *testing.T) {
	checkNATSField(t, "weights_direct", "host:port", func(c RunConfig) string { return c.NATS.WeightsDirect }, map[string]bool{
		"": true, "off": true, ":7450": true, "10.0.0.5:0": true, "[::1]:7450": true,
		"on": false, "7450": false, "host:port": false, "host:70000": false})
}

// checkNATSField parses a minimal config with nats.<key> set to each value
// of cases: a true case must parse and read back (get), a false one must
// fail with an error naming nats.<key> and holding values (the allowed
// values).
func checkNATSField(t *testing.T, key, values string, get func(RunConfig) string, cases map[string]bool) {
	t.Helper()
	for v, ok := range cases {
		src := minimalConfig + "nats:\n  " + key + ": \"" + v + "\"\n"
		cfg, err := ParseRunConfig(filepath.Join(t.TempDir(), "run.yaml"), []byte(src))
		if ok && (err != nil || get(cfg) != v) {
			t.Errorf("%s %q: got %q, %v", key, v, get(cfg), err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "nats."+key) || !strings.Contains(err.Error(), values)) {
			t.Errorf("%s %q: got %v, want an error naming nats.%s and its values", key, v, err, key)
		}
	}
}

// A run's weights with nats.weights_direct (the embedded server, the learner
// publishing in-process): subscribers on their own TCP connections, as on
// other machines, take versions after the first straight from the learner.
func TestOpenWeightsDirect(t *testing.T) {
	ctx := context.Background()
	w, err := openWeights(ctx, "", t.TempDir(), nil, "policy", WeightsConfig{DType: DTypeFP32, Shm: ShmOff, Direct: "127.0.0.1:0"}, zerolog.Nop())
	if err != nil {
		t.Fatalf("openWeights: %v", err)
	}
	t.Cleanup(w.close)
	s, rec := subscribeOwn(t, w.url)
	for v := int64(1); v <= 3; v++ {
		x := randomWeights(1<<20+3, uint64(v))
		if _, err := w.pub.Publish(ctx, int(v), false, x); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, v)
		if got := rec.got[len(rec.got)-1]; !slices.Equal(got.Data, x) {
			t.Fatalf("version %d: data differs", v)
		}
		if v == 1 {
			waitUntil(t, func() bool { return w.pub.direct.subscribers() == 1 }, "the direct subscriber")
		}
	}
	if f, st := s.Received(); f != 3 || st != 0 || !s.onDirect() {
		t.Errorf("%d versions from chunks, %d from the store, direct %v; want 3, 0, true", f, st, s.onDirect())
	}
}
