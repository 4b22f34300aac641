package actors

import (
	"context"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
)

// startNATS starts an embedded server and a connection for one test; both
// stop at cleanup.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	srv, url, err := StartEmbeddedNATS(t.TempDir())
	if err != nil {
		t.Fatalf("StartEmbeddedNATS: %v", err)
	}
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("got url %q, want nats://127.0.0.1:PORT", url)
	}
	nc, err := Connect(url)
	if err != nil {
		ShutdownNATS(srv)
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		nc.Close()
		ShutdownNATS(srv)
	})
	return nc
}

func randomWeights(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	return w
}

// received collects what a subscriber hands over.
type received struct {
	mu   sync.Mutex
	got  []Weights
	cond chan struct{} // signalled on every arrival
}

func newReceived() *received { return &received{cond: make(chan struct{}, 1000)} }

func (r *received) on(w Weights) {
	r.mu.Lock()
	r.got = append(r.got, w)
	r.mu.Unlock()
	r.cond <- struct{}{}
}

func (r *received) versions() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var v []int64
	for _, w := range r.got {
		v = append(v, w.Version)
	}
	return v
}

// waitFor waits until the newest version received is at least v.
func (r *received) waitFor(t *testing.T, v int64) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		if vs := r.versions(); len(vs) > 0 && vs[len(vs)-1] >= v {
			return
		}
		select {
		case <-r.cond:
		case <-timeout:
			t.Fatalf("timed out waiting for version %d; got %v", v, r.versions())
		}
	}
}

func TestWeightsEncodeDecode(t *testing.T) {
	w := []float32{0, 1, -2.5, 3.25e-8}
	b := EncodeWeights(w)
	if len(b) != 16 || b[4] != 0 || b[7] != 0x3f {
		t.Fatalf("got % x, want little-endian float32s", b)
	}
	back, err := DecodeWeights(b)
	if err != nil || !slices.Equal(back, w) {
		t.Fatalf("got %v, %v; want %v", back, err, w)
	}
	if _, err := DecodeWeights(b[:15]); !errors.Is(err, ErrWeights) {
		t.Fatalf("15 bytes: got %v, want ErrWeights", err)
	}
}

// A multi-MiB blob (well above core NATS's 1 MiB max_payload) round trips
// through the object store with its checksum verified; only the last
// KeepVersions blobs stay.
func TestWeightsRoundTrip(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	w := randomWeights(3<<19, 1) // 6 MiB
	start := time.Now()
	a, err := pub.Publish(ctx, 10, false, w)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	t.Logf("published %d bytes in %v", a.Size, time.Since(start))
	if a.Version != 1 || a.Size != int64(4*len(w)) || a.Step != 10 {
		t.Fatalf("got announce %v", a)
	}
	if want := crcHex(crc32.Checksum(encodeBlob(w, DTypeFP32, nil), castagnoli)); a.Crc32C != want || a.Dtype != DTypeFP32 {
		t.Fatalf("announce carries crc32c %q dtype %q, want %q %q", a.Crc32C, a.Dtype, want, DTypeFP32)
	}
	if got := announceChecksum(a); got != "crc32c:"+a.Crc32C {
		t.Fatalf("events checksum %q", got)
	}

	rec := newReceived()
	sub, err := SubscribeWeights(nc, "policy", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer sub.Stop()
	rec.waitFor(t, 1)
	got := rec.got[0]
	if got.Version != 1 || got.Step != 10 || !slices.Equal(got.Data, w) {
		t.Fatalf("got version %d step %d, %d values (equal %v); want version 1 step 10, the published %d values",
			got.Version, got.Step, len(got.Data), slices.Equal(got.Data, w), len(w))
	}

	for v := 2; v <= 5; v++ {
		if _, err := pub.Publish(ctx, 10*v, v == 5, randomWeights(1000, uint64(v))); err != nil {
			t.Fatalf("Publish v%d: %v", v, err)
		}
	}
	rec.waitFor(t, 5)
	js, _ := jetstream.New(nc)
	obj, _ := js.ObjectStore(ctx, WeightsBucket)
	infos, err := obj.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	if want := []string{"policy.v3", "policy.v4", "policy.v5"}; !slices.Equal(names, want) {
		t.Fatalf("objects kept: got %v, want %v", names, want)
	}
	if last := rec.got[len(rec.got)-1]; !last.Final {
		t.Fatalf("version 5 was published final, got %+v", last.Version)
	}
}

func TestVerifyWeightsRefuses(t *testing.T) {
	blob := EncodeWeights(randomWeights(100, 3))
	good := &messages.WeightsAnnounce{Object: "x", Size: int64(len(blob))}
	sum := sha256Hex(blob)
	good.Sha256 = sum
	if _, err := VerifyWeights(good, blob); err != nil {
		t.Fatalf("good blob refused: %v", err)
	}
	flipped := slices.Clone(blob)
	flipped[17] ^= 1
	for _, tc := range []struct {
		name string
		a    *messages.WeightsAnnounce
		blob []byte
	}{
		{"flipped bit", good, flipped},
		{"short", good, blob[:len(blob)-4]},
		{"wrong size", &messages.WeightsAnnounce{Object: "x", Size: 8, Sha256: sum}, blob},
		{"wrong sha", &messages.WeightsAnnounce{Object: "x", Size: good.Size, Sha256: strings.Repeat("0", 64)}, blob},
	} {
		if _, err := VerifyWeights(tc.a, tc.blob); !errors.Is(err, ErrWeights) {
			t.Errorf("%s: got %v, want ErrWeights", tc.name, err)
		}
	}
}

// A corrupted object (its bytes differ from what the announcement says) is
// refused and skipped; the next good version is taken.
func TestCorruptWeightsRefused(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	if _, err := pub.Publish(ctx, 1, false, randomWeights(1<<18, 1)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	logs := &syncBuffer{}
	rec := newReceived()
	sub, err := SubscribeWeights(nc, "policy", zerolog.New(logs), rec.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer sub.Stop()
	rec.waitFor(t, 1)

	// Version 2: announce the checksum of w, store w with one bit flipped.
	js, _ := jetstream.New(nc)
	obj, _ := js.ObjectStore(ctx, WeightsBucket)
	blob := EncodeWeights(randomWeights(1<<18, 2))
	a := &messages.WeightsAnnounce{Model: "policy", Version: 2, Size: int64(len(blob)), Sha256: sha256Hex(blob), Step: 2, Object: "policy.v2"}
	blob[1000] ^= 0x40
	if _, err := obj.PutBytes(ctx, a.Object, blob); err != nil {
		t.Fatalf("PutBytes: %v", err)
	}
	data, _ := proto.Marshal(a)
	if _, err := js.Publish(ctx, WeightsSubject("policy"), data); err != nil {
		t.Fatalf("announce: %v", err)
	}
	// A publisher opened now continues after the (bad) version 2.
	pub2, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	if pub2.Version() != 2 {
		t.Fatalf("reopened publisher: got version %d, want 2", pub2.Version())
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "sha256") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "sha256") {
		t.Fatalf("no refusal logged; logs: %s", logs.String())
	}
	w3 := randomWeights(1<<18, 3)
	if _, err := pub2.Publish(ctx, 3, false, w3); err != nil {
		t.Fatalf("Publish v3: %v", err)
	}
	rec.waitFor(t, 3)
	if got, want := rec.versions(), []int64{1, 3}; !slices.Equal(got, want) {
		t.Fatalf("versions handed over: got %v, want %v (the corrupt 2 refused)", got, want)
	}
	if !slices.Equal(rec.got[1].Data, w3) {
		t.Fatalf("version 3 data differs")
	}
}

// A subscriber that starts after several versions were published starts from
// the current one, then follows.
func TestLateSubscriberGetsLatest(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	for v := 1; v <= 5; v++ {
		if _, err := pub.Publish(ctx, v, false, randomWeights(5000, uint64(v))); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	rec := newReceived()
	sub, err := SubscribeWeights(nc, "policy", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer sub.Stop()
	rec.waitFor(t, 5)
	if _, err := pub.Publish(ctx, 6, true, randomWeights(5000, 6)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, 6)
	if got, want := rec.versions(), []int64{5, 6}; !slices.Equal(got, want) {
		t.Fatalf("got versions %v, want %v", got, want)
	}
	// Another model's versions are not this subscriber's business.
	other, err := NewWeightPublisher(ctx, nc, "reward")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	if a, err := other.Publish(ctx, 1, false, randomWeights(10, 1)); err != nil || a.Version != 1 {
		t.Fatalf("reward publish: %v, %v", a, err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := rec.versions(); len(got) != 2 {
		t.Fatalf("got versions %v after another model published", got)
	}
}

// Two subscribers, one of them slow, follow a fast publisher: each sees
// versions only going up, never misses the last one, and for every published
// version sees it or a newer one.
func TestEverySubscriberSeesEveryVersionOrNewer(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	fast, slow := newReceived(), newReceived()
	subFast, err := SubscribeWeights(nc, "policy", zerolog.Nop(), fast.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer subFast.Stop()
	subSlow, err := SubscribeWeights(nc, "policy", zerolog.Nop(), func(w Weights) {
		time.Sleep(15 * time.Millisecond) // an owner slower than the learner
		slow.on(w)
	})
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer subSlow.Stop()

	const n = 30
	for v := 1; v <= n; v++ {
		if _, err := pub.Publish(ctx, v, v == n, randomWeights(20000, uint64(v))); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	fast.waitFor(t, n)
	slow.waitFor(t, n)
	for name, r := range map[string]*received{"fast": fast, "slow": slow} {
		vs := r.versions()
		t.Logf("%s subscriber saw %d of %d versions: %v", name, len(vs), n, vs)
		if !slices.IsSorted(vs) || len(slices.Compact(slices.Clone(vs))) != len(vs) {
			t.Fatalf("%s: versions not strictly increasing: %v", name, vs)
		}
		if vs[len(vs)-1] != n {
			t.Fatalf("%s: last version %d, want %d", name, vs[len(vs)-1], n)
		}
		for _, w := range r.got {
			if want := randomWeights(20000, uint64(w.Version)); !slices.Equal(w.Data, want) {
				t.Fatalf("%s: version %d data differs", name, w.Version)
			}
		}
	}
}

func TestPublisherRefusesBadModelName(t *testing.T) {
	nc := startNATS(t)
	if _, err := NewWeightPublisher(context.Background(), nc, "a.b"); !errors.Is(err, ErrWeights) {
		t.Fatalf("got %v, want ErrWeights", err)
	}
}

// A subscriber that is busy while several versions are announced still gets
// every one of them, in order (the store keeps KeepVersions), rather than
// jumping to the newest: a connected subscriber never skips a version.
func TestBusySubscriberGetsEveryVersionInOrder(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	release := make(chan struct{})
	var mu sync.Mutex
	var got []int64
	sub, err := SubscribeWeights(nc, "policy", zerolog.Nop(), func(w Weights) {
		mu.Lock()
		got = append(got, w.Version)
		first := len(got) == 1
		mu.Unlock()
		if first {
			<-release // busy while versions 2..KeepVersions+1 are announced
		}
	})
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer sub.Stop()
	last := int64(KeepVersions + 1)
	for v := int64(1); v <= last; v++ {
		if _, err := pub.Publish(ctx, int(v), false, randomWeights(1<<12, uint64(v))); err != nil {
			t.Fatalf("Publish v%d: %v", v, err)
		}
		if v == 1 {
			waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
		}
	}
	close(release)
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 && got[len(got)-1] == last })
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != int64(i+1) {
			t.Fatalf("versions %v, want 1..%d in order", got, last)
		}
	}
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
	}
}
