package actors

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
)

// Subscribers on their own connections take a multi-chunk version from the
// fan-out, not from the object store, byte for byte.
func TestFanoutDelivers(t *testing.T) {
	nc := startNATS(t)
	url := nc.ConnectedUrl()
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, nc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	fanoutToOwn(t, pub, url, 3, 7)
}

// fanoutToOwn subscribes n subscribers on connections of their own to url,
// publishes a multi-chunk version (random, from seed) on pub and checks that
// each took it from the fan-out, not the store, byte for byte.
func fanoutToOwn(t *testing.T, pub *WeightPublisher, url string, n int, seed uint64) {
	t.Helper()
	var subs []*WeightSubscriber
	var recs []*received
	for i := 0; i < n; i++ {
		s, rec := subscribeOwn(t, url)
		subs, recs = append(subs, s), append(recs, rec)
	}
	w := randomWeights(3<<19, seed) // 6 MiB: several chunks
	if _, err := pub.Publish(context.Background(), 1, false, w); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for i, rec := range recs {
		rec.waitFor(t, 1)
		if !slices.Equal(rec.got[0].Data, w) {
			t.Fatalf("subscriber %d: data differs", i)
		}
		if f, st := subs[i].Received(); f != 1 || st != 0 {
			t.Fatalf("subscriber %d: %d versions from the fan-out, %d from the store; want 1, 0", i, f, st)
		}
	}
}

// fanoutVersion sends version v of blob the way Publish does, except that the
// chunks on the fan-out are the given ones (a test's lost or corrupted
// chunks); the object store gets the good blob.
func fanoutVersion(t *testing.T, nc *nats.Conn, v int64, blob []byte, chunks []struct {
	off  int
	data []byte
}) {
	t.Helper()
	ctx := context.Background()
	for _, c := range chunks {
		m := &nats.Msg{Subject: weightsDataSubject + "policy", Data: c.data, Header: nats.Header{}}
		m.Header.Set(hdrChunk, fmt.Sprintf("%d %d %d fp32", v, c.off, len(blob)))
		if err := nc.PublishMsg(m); err != nil {
			t.Fatalf("chunk: %v", err)
		}
	}
	js, _ := jetstream.New(nc)
	a := &messages.WeightsAnnounce{Model: "policy", Version: v, Size: int64(len(blob)), Step: v, Object: objectName("policy", v)}
	data, _ := proto.Marshal(a)
	m := nats.NewMsg(WeightsSubject("policy"))
	m.Data = data
	m.Header.Set(hdrCRC, crcHex(crc32Castagnoli(blob)))
	m.Header.Set(hdrFanout, "1")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("announce: %v", err)
	}
	obj, _ := js.ObjectStore(ctx, WeightsBucket)
	time.Sleep(20 * time.Millisecond) // the subscriber looks for the object before it is there
	if err := putObject(ctx, nc, js, obj, a.Object, blob, putMaxPending); err != nil {
		t.Fatalf("putObject: %v", err)
	}
}

// A version whose fan-out lost a chunk (a gap in the offsets), or whose
// chunks do not match the announced CRC-32C, is fetched from the object
// store instead, and arrives intact.
func TestFanoutLossFallsBackToStore(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	if _, err := NewWeightPublisher(ctx, nc, "policy"); err != nil { // creates the store
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	sub, rec := subscribeOwn(t, nc.ConnectedUrl())
	type chunk = struct {
		off  int
		data []byte
	}
	w1, w2 := randomWeights(1<<18, 1), randomWeights(1<<18, 2)
	b1, b2 := EncodeWeights(w1), EncodeWeights(w2)
	// Version 1: the second quarter never arrives.
	q := len(b1) / 4
	fanoutVersion(t, nc, 1, b1, []chunk{{0, b1[:q]}, {2 * q, b1[2*q : 3*q]}, {3 * q, b1[3*q:]}})
	rec.waitFor(t, 1)
	// Version 2: every chunk arrives, one bit flipped.
	bad := slices.Clone(b2)
	bad[12345] ^= 4
	fanoutVersion(t, nc, 2, b2, []chunk{{0, bad[:2*q]}, {2 * q, bad[2*q:]}})
	rec.waitFor(t, 2)
	if got := rec.versions(); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("versions: got %v, want [1 2]", got)
	}
	if !slices.Equal(rec.got[0].Data, w1) || !slices.Equal(rec.got[1].Data, w2) {
		t.Fatalf("data differs from what was published")
	}
	if f, st := sub.Received(); f != 0 || st != 2 {
		t.Fatalf("got %d versions from the fan-out and %d from the store, want 0 and 2", f, st)
	}
}

// fanin on its own: chunks in order complete a version with the right
// CRC-32C; a gap breaks it; a chunk of an older version is dropped; a new
// version while a complete one is not yet taken keeps the complete one.
func TestFaninAssembly(t *testing.T) {
	msg := func(v int64, off, total int, data []byte) *nats.Msg {
		m := &nats.Msg{Data: data, Header: nats.Header{}}
		m.Header.Set(hdrChunk, fmt.Sprintf("%d %d %d fp32", v, off, total))
		return m
	}
	blob := EncodeWeights(randomWeights(1000, 3))
	f := newFanin()
	f.onChunk(msg(1, 0, len(blob), blob[:1000]))
	f.onChunk(msg(1, 1000, len(blob), blob[1000:]))
	a, failed := f.state(1, time.Now())
	if a == nil || failed || !slices.Equal(a.buf, blob) || a.crc != crc32Castagnoli(blob) {
		t.Fatalf("in-order chunks: got %v, failed %v", a != nil, failed)
	}
	f.onChunk(msg(1, 0, len(blob), blob[:1000])) // a version already taken
	if f.asm != nil {
		t.Fatalf("chunk of a taken version started an assembly")
	}
	f.onChunk(msg(2, 0, len(blob), blob[:1000]))
	f.onChunk(msg(2, 2000, len(blob), blob[2000:]))
	if a, failed := f.state(2, time.Now()); a != nil || !failed {
		t.Fatalf("gap: got %v, failed %v; want failed", a != nil, failed)
	}
	f.onChunk(msg(3, 0, len(blob), blob))
	f.onChunk(msg(4, 0, len(blob), blob[:8]))
	if a, _ := f.state(3, time.Now()); a == nil || !slices.Equal(a.buf, blob) {
		t.Fatalf("complete version 3 lost when version 4 began")
	}
	for _, h := range []string{"", "1 0", "x 0 10 fp32", "1 0 10 fp64", "0 0 10 fp32", "1 8 10 fp32"} {
		m := &nats.Msg{Data: make([]byte, 4), Header: nats.Header{}}
		m.Header.Set(hdrChunk, h)
		if _, _, _, _, ok := parseChunk(m); ok {
			t.Errorf("chunk header %q accepted", h)
		}
	}
}

// The object-store put keeps its chunks in flight under the bound, so a
// server whose per-stream queue is far smaller than the blob still takes it
// (nats.go's ObjectStore.Put, with 4000 in flight, is refused with 429 "too
// many requests" there; issue 6). The stall path (no free slot for
// putStallWait) drains and resends rather than failing.
func TestPutBoundedInFlight(t *testing.T) {
	srv, url, err := startEmbeddedNATSTuned(t.TempDir(), nil, func(o *server.Options) {
		o.StreamMaxBufferedSize = 2 << 20 // 2 MiB per stream queued before 429
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer ShutdownNATS(srv)
	nc, err := Connect(url)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	obj, _, err := weightsStore(ctx, js)
	if err != nil {
		t.Fatalf("weightsStore: %v", err)
	}
	blob := EncodeWeights(randomWeights(6<<20, 4)) // 24 MiB
	defer func(d time.Duration) { putStallWait = d }(putStallWait)
	for _, tc := range []struct {
		name       string
		maxPending int
		stall      time.Duration
	}{{"bounded", 8, 2 * time.Second}, {"stalling", 1, time.Microsecond}} {
		putStallWait = tc.stall
		name := "policy." + tc.name
		if err := putObject(ctx, nc, js, obj, name, blob, tc.maxPending); err != nil {
			t.Fatalf("%s: putObject: %v", tc.name, err)
		}
		got, err := obj.GetBytes(ctx, name)
		if err != nil || !slices.Equal(got, blob) {
			t.Fatalf("%s: read back %d bytes, %v; want the %d put", tc.name, len(got), err, len(blob))
		}
	}
	// The same name again replaces the object and purges the old chunks.
	if err := putObject(ctx, nc, js, obj, "policy.bounded", blob[:1<<20], 8); err != nil {
		t.Fatalf("re-put: %v", err)
	}
	if got, err := obj.GetBytes(ctx, "policy.bounded"); err != nil || len(got) != 1<<20 {
		t.Fatalf("re-put read back %d bytes, %v", len(got), err)
	}
	_, err = obj.PutBytes(ctx, "policy.unbounded", blob)
	t.Logf("for comparison, nats.go ObjectStore.PutBytes on the same server: %v", err)
}

// A NATS restart (same port and store) is survived: connected subscribers
// reconnect and get the next version, and one that joins afterwards starts
// from it.
func TestWeightsSurviveNATSRestart(t *testing.T) {
	dir := t.TempDir()
	srv, url, err := startEmbeddedNATSTuned(dir, nil, nil)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() { ShutdownNATS(srv) }()
	port := srv.Addr().(*net.TCPAddr).Port
	pc, err := Connect(url)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer pc.Close()
	sc, err := Connect(url)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer sc.Close()
	ctx := context.Background()
	pub, err := NewWeightPublisher(ctx, pc, "policy")
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	rec := newReceived()
	sub, err := SubscribeWeights(sc, "policy", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer sub.Stop()
	if _, err := pub.Publish(ctx, 1, false, randomWeights(1<<18, 1)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	rec.waitFor(t, 1)

	ShutdownNATS(srv)
	srv, _, err = startEmbeddedNATSTuned(dir, nil, func(o *server.Options) { o.Port = port })
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	w2 := randomWeights(1<<18, 2)
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		a, err := pub.Publish(pctx, 2, false, w2)
		cancel()
		if a != nil && a.Version == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after the restart: %v, %v", a, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	rec.waitFor(t, 2)
	if got := rec.versions(); !slices.Equal(got, []int64{1, 2}) || !slices.Equal(rec.got[1].Data, w2) {
		t.Fatalf("after the restart: versions %v (want [1 2]), version 2 intact: %v", got, slices.Equal(rec.got[len(rec.got)-1].Data, w2))
	}
	late := newReceived()
	lsub, err := SubscribeWeights(sc, "policy", zerolog.Nop(), late.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer lsub.Stop()
	late.waitFor(t, 2)
	if !slices.Equal(late.got[0].Data, w2) {
		t.Fatalf("late subscriber: version %d differs", late.got[0].Version)
	}
}

// bfloat16 on the wire: every value a subscriber (connected, or late, from
// the store) receives is the publisher's rounded to the nearest bfloat16,
// within 2^-8 relative; the publisher's own fp32 values (the learner's
// masters) are untouched.
func TestWeightsBF16(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	if _, err := NewWeightPublisher(ctx, nc, "policy", WithWeightsDType("fp16")); !errors.Is(err, ErrWeights) {
		t.Fatalf("dtype fp16: got %v, want ErrWeights", err)
	}
	pub, err := NewWeightPublisher(ctx, nc, "policy", WithWeightsDType(DTypeBF16))
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	rec := newReceived()
	sub, err := SubscribeWeights(nc, "policy", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer sub.Stop()
	w := randomWeights(1<<19, 5)
	w[0], w[1], w[2] = 0, float32(math.Inf(-1)), 3e38
	masters := slices.Clone(w)
	a, err := pub.Publish(ctx, 1, false, w)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if a.Size != int64(2*len(w)) {
		t.Fatalf("announced %d bytes, want %d (2 per value)", a.Size, 2*len(w))
	}
	if !slices.Equal(w, masters) {
		t.Fatalf("Publish changed the fp32 masters")
	}
	rec.waitFor(t, 1)
	// From the fan-out: chunks of ~1 MiB read, checksummed and decoded in
	// pieces (rawPiece), the last one short.
	if f, st := sub.Received(); f != 1 || st != 0 {
		t.Fatalf("connected subscriber: %d from the fan-out, %d from the store; want 1, 0", f, st)
	}
	late := newReceived()
	lsub, err := SubscribeWeights(nc, "policy", zerolog.Nop(), late.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	defer lsub.Stop()
	late.waitFor(t, 1)
	if f, st := lsub.Received(); f != 0 || st != 1 {
		t.Fatalf("late subscriber: %d from the fan-out, %d from the store; want 0, 1", f, st)
	}
	for name, got := range map[string][]float32{"connected": rec.got[0].Data, "late": late.got[0].Data} {
		if len(got) != len(w) {
			t.Fatalf("%s: %d values, want %d", name, len(got), len(w))
		}
		worst := 0.0
		for i, v := range w {
			if got[i] != RoundBF16(v) {
				t.Fatalf("%s: value %d: got %g, want bf16(%g) = %g", name, i, got[i], v, RoundBF16(v))
			}
			if v != 0 && !math.IsInf(float64(v), 0) {
				worst = max(worst, math.Abs(float64(got[i]-v))/math.Abs(float64(v)))
			}
		}
		if worst > 1.0/256 {
			t.Fatalf("%s: worst relative error %g, want <= 2^-8", name, worst)
		}
		t.Logf("%s: worst relative error %.3g (bound 2^-8 = %.3g)", name, worst, 1.0/256)
	}
}

// bfloat16 rounding: nearest, ties to even, specials kept.
func TestBF16Rounding(t *testing.T) {
	for _, tc := range []struct{ in, want float32 }{
		{1, 1},
		{math.Float32frombits(0x3f808000), 1}, // tie, even below
		{math.Float32frombits(0x3f818000), math.Float32frombits(0x3f820000)}, // tie, even above
		{math.Float32frombits(0x3f808001), math.Float32frombits(0x3f810000)}, // above the tie
		{float32(math.Inf(1)), float32(math.Inf(1))},
		{-0.0, -0.0},
		{math.MaxFloat32, float32(math.Inf(1))}, // rounds up past the largest bf16
	} {
		if got := RoundBF16(tc.in); math.Float32bits(got) != math.Float32bits(tc.want) {
			t.Errorf("RoundBF16(%g): got %g (%#x), want %g", tc.in, got, math.Float32bits(got), tc.want)
		}
	}
	if got := RoundBF16(float32(math.NaN())); !math.IsNaN(float64(got)) {
		t.Errorf("NaN: got %g", got)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for range 100000 {
		v := float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10)))
		if e := math.Abs(float64(RoundBF16(v)-v)) / math.Abs(float64(v)); e > 1.0/256 {
			t.Fatalf("RoundBF16(%g): relative error %g > 2^-8", v, e)
		}
	}
	blob := encodeBlob([]float32{1.5, -2}, DTypeBF16, nil)
	if got, err := decodeBlob(blob, DTypeBF16, nil); err != nil || !slices.Equal(got, []float32{1.5, -2}) {
		t.Fatalf("decode: got %v, %v", got, err)
	}
	if _, err := decodeBlob(blob[:3], DTypeBF16, nil); !errors.Is(err, ErrWeights) {
		t.Fatalf("3 bytes of bf16: got %v, want ErrWeights", err)
	}
	if _, err := decodeBlob(blob, "int8", nil); !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), "int8") {
		t.Fatalf("unknown dtype: got %v", err)
	}
}

func crc32Castagnoli(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// nats.weights_dtype takes fp32 or bf16 (empty = fp32) and names itself when
// it is anything else.
func TestConfigWeightsDType(t *testing.T) {
	for _, tc := range []struct {
		dtype string
		ok    bool
	}{{"", true}, {"fp32", true}, {"bf16", true}, {"fp16", false}} {
		src := minimalConfig + "nats:\n  weights_dtype: \"" + tc.dtype + "\"\n"
		cfg, err := ParseRunConfig(filepath.Join(t.TempDir(), "run.yaml"), []byte(src))
		if tc.ok && (err != nil || cfg.NATS.WeightsDType != tc.dtype) {
			t.Errorf("weights_dtype %q: got %q, %v", tc.dtype, cfg.NATS.WeightsDType, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "nats.weights_dtype")) {
			t.Errorf("weights_dtype %q: got %v, want an error naming nats.weights_dtype", tc.dtype, err)
		}
	}
}

// subscribeOwn subscribes to model "policy" on a connection of its own to url
// (with opts); both end with the test.
func subscribeOwn(t *testing.T, url string, opts ...nats.Option) (*WeightSubscriber, *received) {
	t.Helper()
	c, err := Connect(url, opts...)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close) // after the subscriber's Stop (cleanups run last-in first-out)
	return subscribeOn(t, c)
}

// subscribeOn subscribes to model "policy" on c, recording what arrives; the
// subscriber stops at the end of the test.
func subscribeOn(t *testing.T, c *nats.Conn) (*WeightSubscriber, *received) {
	t.Helper()
	rec := newReceived()
	s, err := SubscribeWeights(c, "policy", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatalf("SubscribeWeights: %v", err)
	}
	t.Cleanup(s.Stop)
	return s, rec
}

// A run that starts its own server publishes on an in-process connection
// (no socket between the learner and the server); subscribers on their own
// TCP connections, as on other machines, take a multi-chunk version from the
// fan-out byte for byte, and the run's other connection stays a socket.
func TestOpenWeightsPublishesInProcess(t *testing.T) {
	ctx := context.Background()
	w, err := openWeights(ctx, "", t.TempDir(), nil, "policy", WeightsConfig{DType: DTypeFP32, Shm: ShmOff}, zerolog.Nop())
	if err != nil {
		t.Fatalf("openWeights: %v", err)
	}
	t.Cleanup(w.close)
	if w.pub.nc == w.nc || w.pub.nc.Opts.InProcessServer == nil {
		t.Fatalf("publisher's connection: in-process %v, shared with the run's %v; want its own, in-process",
			w.pub.nc.Opts.InProcessServer != nil, w.pub.nc == w.nc)
	}
	if w.nc.Opts.InProcessServer != nil {
		t.Fatalf("the run's own connection is in-process; want a socket (its subscribers read chunks off it)")
	}
	fanoutToOwn(t, w.pub, w.url, 2, 9)
}
