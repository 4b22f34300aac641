//go:build linux

package actors

import (
	"bytes"
	"context"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// shmPublisher is a publisher whose slots go under a test's own directory.
func shmPublisher(t *testing.T, nc *nats.Conn, model, dtype string) (*WeightPublisher, string) {
	t.Helper()
	root := t.TempDir()
	pub, err := NewWeightPublisher(context.Background(), nc, model, WithWeightsDType(dtype), WithWeightsShm(root))
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	if pub.shm == nil {
		t.Fatalf("no shared-memory slots under %s", root)
	}
	t.Cleanup(func() { pub.Close() })
	return pub, shmDirIn(root)
}

// countChunks counts the fan-out's chunk messages of model (a plain
// subscription: it does not ask for them, so the publisher's question is
// answered only by the weight subscribers).
func countChunks(t *testing.T, nc *nats.Conn, model string) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	sub, err := nc.Subscribe(weightsDataSubject+model, func(*nats.Msg) { n.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

// waitChunks waits up to 10 s for the counter to reach want and reports
// whether it did (and did not pass it).
func waitChunks(n *atomic.Int64, want int64) bool {
	for deadline := time.Now().Add(10 * time.Second); n.Load() < want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return n.Load() == want
}

// Subscribers on the publisher's machine read every version from its slot
// (exact for fp32, rounded to bf16 for bf16) and stop asking for chunks, so
// the publisher skips the fan-out; a subscriber that acts as if it were on
// another machine (WithoutShm) still gets every version from the fan-out,
// and the others' slots keep working beside it.
func TestWeightsShm(t *testing.T) {
	for _, dtype := range []string{DTypeFP32, DTypeBF16} {
		t.Run(dtype, func(t *testing.T) {
			nc := startNATS(t)
			model := "shm-" + dtype
			pub, dir := shmPublisher(t, nc, model, dtype)
			chunks := countChunks(t, nc, model)
			chunk, err := chunkSize(nc)
			if err != nil {
				t.Fatal(err)
			}
			const values = 300_001 // not a multiple of a chunk or a piece
			perVersion := int64((values*dtypeSize(dtype) + chunk - 1) / chunk)
			local := []*received{newReceived(), newReceived()}
			var subs []*WeightSubscriber
			for _, r := range local {
				s, err := SubscribeWeights(nc, model, zerolog.Nop(), r.on)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Stop()
				subs = append(subs, s)
			}
			want := func(w []float32) []float32 {
				if dtype == DTypeFP32 {
					return w
				}
				r := make([]float32, len(w))
				for i, x := range w {
					r[i] = RoundBF16(x)
				}
				return r
			}
			check := func(r *received, v int64, w []float32) {
				t.Helper()
				r.waitFor(t, v)
				r.mu.Lock()
				got := r.got[len(r.got)-1]
				r.mu.Unlock()
				if got.Version != v || !slices.Equal(got.Data, want(w)) {
					t.Fatalf("version %d: got version %d, values equal: %v", v, got.Version, slices.Equal(got.Data, want(w)))
				}
			}
			// Versions 1 and 2: the subscribers answered "chunks, please"
			// until they had read version 1 from its slot.
			for v := int64(1); v <= 2; v++ {
				w := randomWeights(values, uint64(v))
				if _, err := pub.Publish(context.Background(), int(v), false, w); err != nil {
					t.Fatal(err)
				}
				for _, r := range local {
					check(r, v, w)
				}
				if v == 1 {
					// The subscribers read the slot without waiting for
					// the chunks, so the counter may still be catching up.
					if !waitChunks(chunks, perVersion) {
						t.Fatalf("version 1 went out without a full fan-out (%d of %d chunks) while the subscribers still asked for it", chunks.Load(), perVersion)
					}
					if err := pub.Flush(context.Background()); err != nil {
						t.Fatal(err)
					}
					chunks.Store(0)
				}
			}
			if n := chunks.Load(); n != 0 {
				t.Fatalf("version 2: %d chunks on the fan-out, want none (every subscriber reads the slot)", n)
			}
			for i, s := range subs {
				if got := s.ReceivedShm(); got != 2 {
					f, st := s.Received()
					t.Fatalf("subscriber %d: %d versions from the slot (%d fan-out, %d store), want 2", i, got, f, st)
				}
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != ShmSlots {
				t.Fatalf("%s holds %d files, want %d slots", dir, len(ents), ShmSlots)
			}

			// A subscriber "on another machine" joins: from version 3 on the
			// fan-out runs again, for it alone.
			remote := newReceived()
			rs, err := SubscribeWeights(nc, model, zerolog.Nop(), remote.on, WithoutShm())
			if err != nil {
				t.Fatal(err)
			}
			defer rs.Stop()
			remote.waitFor(t, 2) // the latest version, from the store
			for v := int64(3); v <= 4; v++ {
				w := randomWeights(values, uint64(v))
				if _, err := pub.Publish(context.Background(), int(v), false, w); err != nil {
					t.Fatal(err)
				}
				for _, r := range append(local, remote) {
					check(r, v, w)
				}
			}
			if !waitChunks(chunks, 2*perVersion) {
				t.Fatalf("versions 3 and 4: %d chunks on the fan-out, want %d (a subscriber wants them)", chunks.Load(), 2*perVersion)
			}
			if f, _ := rs.Received(); f != 2 || rs.ReceivedShm() != 0 {
				t.Fatalf("remote subscriber: %d versions from the fan-out, %d from a slot; want 2 and 0", f, rs.ReceivedShm())
			}
			for i, s := range subs {
				if got := s.ReceivedShm(); got != 4 {
					t.Fatalf("subscriber %d: %d versions from the slot, want 4", i, got)
				}
			}

			// Close removes the slots.
			if err := pub.Close(); err != nil {
				t.Fatal(err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("after Close %s still holds %d files", dir, len(ents))
			}
		})
	}
}

// A slot that does not hold what was announced (overwritten, damaged) is
// refused by the checks (version, CRC-32C), and the subscriber takes that
// version from the object store instead, then the next one from the slot
// again; a slot that is gone (the publisher closed) also falls back to the
// store.
func TestWeightsShmRefused(t *testing.T) {
	nc := startNATS(t)
	pub, _ := shmPublisher(t, nc, "shmbad", DTypeFP32)
	ctx := context.Background()
	w1 := randomWeights(100_000, 1)
	a, err := pub.Publish(ctx, 1, false, w1)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Damage the slot's values behind the publisher's back.
	slot := pub.shm.slots[a.Version%ShmSlots]
	f, err := os.OpenFile(slot.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1, 2, 3, 4}, shmHeader+4000); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rec := newReceived()
	s, err := SubscribeWeights(nc, "shmbad", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	rec.waitFor(t, 1)
	if got := rec.got[0]; !slices.Equal(got.Data, w1) {
		t.Fatalf("version 1 handed over with the damaged slot's values")
	}
	if _, st := s.Received(); st != 1 || s.ReceivedShm() != 0 {
		t.Fatalf("version 1: %d from the store, %d from the slot; want 1 and 0", st, s.ReceivedShm())
	}

	// The slot's header says another version: refused before any copying.
	w2 := randomWeights(100_000, 2)
	ann := &announcement{WeightsAnnounce: a, crc: 0, hasCRC: true, dtype: DTypeFP32, shmPath: slot.path, shmKey: pub.shm.key}
	ann.Version = 7
	if _, err := s.shm.read(ann, s.fan); err == nil || !strings.Contains(err.Error(), "holds version 1, not 7") {
		t.Fatalf("slot of version 1 read as version 7: %v", err)
	}
	// Another machine's slot (another key) is not even looked for.
	ann.shmKey = "elsewhere/1/2"
	if _, err := s.shm.read(ann, s.fan); err != errShmElsewhere {
		t.Fatalf("foreign slot: got %v, want errShmElsewhere", err)
	}

	if _, err := pub.Publish(ctx, 2, false, w2); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 2)
	if s.ReceivedShm() != 1 || !slices.Equal(rec.got[1].Data, w2) {
		t.Fatalf("version 2: %d versions from the slot, values equal %v; want 1, true", s.ReceivedShm(), slices.Equal(rec.got[1].Data, w2))
	}

	// A late subscriber after the publisher closed: the slot is gone, the
	// store has the version.
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	late := newReceived()
	ls, err := SubscribeWeights(nc, "shmbad", zerolog.Nop(), late.on)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Stop()
	late.waitFor(t, 2)
	if _, st := ls.Received(); st != 1 || !slices.Equal(late.got[0].Data, w2) {
		t.Fatalf("late subscriber: %d from the store, values equal %v", st, slices.Equal(late.got[0].Data, w2))
	}
}

// A publisher removes the slot files that crashed publishers (processes no
// longer running) left in its directory, and leaves running ones' alone;
// the directory is private to its user.
func TestWeightsShmStale(t *testing.T) {
	root := t.TempDir()
	dir := shmDirIn(root)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no `true` to get a finished process's pid:", err)
	}
	dead := filepath.Join(dir, "m."+strconv.Itoa(cmd.Process.Pid)+".abc.0")
	alive := filepath.Join(dir, "m."+strconv.Itoa(os.Getpid())+".abc.0")
	other := filepath.Join(dir, "notes.txt")
	for _, p := range []string{dead, alive, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := newShmRing(root, "m")
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a dead publisher's slot is still there: %v", err)
	}
	for _, p := range []string{alive, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	// A directory others may enter is refused (their slots could be swapped).
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := newShmRing(root, "m"); err == nil || !strings.Contains(err.Error(), "0700") {
		t.Errorf("world-writable slot directory: got %v, want a refusal", err)
	}
}

// nats.weights_shm takes auto or off (empty = auto) and names itself when
// it is anything else.
func TestConfigWeightsShm(t *testing.T) {
	checkNATSField(t, "weights_shm", "auto, off", func(c RunConfig) string { return c.NATS.WeightsShm }, map[string]bool{
		"": true, "auto": true, "off": true, "on": false, "/dev/shm": false})
}

// A publisher that cannot make its slots (here: a directory it may not
// write) logs why and publishes over NATS alone; subscribers lose nothing.
func TestWeightsShmUnavailable(t *testing.T) {
	nc := startNATS(t)
	root := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(root, 0o500); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		root = "/proc" // root writes anywhere else
	}
	var logged strings.Builder
	pub, err := NewWeightPublisher(context.Background(), nc, "noshm", WithWeightsShm(root), WithWeightsLog(zerolog.New(&logged)))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if pub.shm != nil || !strings.Contains(logged.String(), "over NATS") || !strings.Contains(logged.String(), root) {
		t.Fatalf("slots under %s: shm %v, log %q; want none, and a warning naming the directory", root, pub.shm != nil, logged.String())
	}
	rec := newReceived()
	s, err := SubscribeWeights(nc, "noshm", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	w := randomWeights(50_000, 3)
	if _, err := pub.Publish(context.Background(), 1, false, w); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 1)
	if f, _ := s.Received(); f != 1 || !slices.Equal(rec.got[0].Data, w) {
		t.Fatalf("got %d versions from the fan-out, values equal %v; want 1, true", f, slices.Equal(rec.got[0].Data, w))
	}
}

// crc32cCombine gives the CRC-32C of a concatenation from its parts' CRCs.
func TestCRC32CCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range [][2]int{{0, 0}, {5, 0}, {0, 7}, {1, 1}, {3, 1000}, {4096, 1<<20 + 7}, {777, 3 * shmPiece}} {
		a, b := make([]byte, n[0]), make([]byte, n[1])
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want := crc32.Checksum(append(slices.Clone(a), b...), castagnoli)
		if got := crc32cCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), int64(len(b))); got != want {
			t.Fatalf("lengths %v: combined %08x, want %08x", n, got, want)
		}
	}
}

// A slot write split over goroutines copies every byte and checksums the
// whole blob as one goroutine does, at any number of parts.
func TestShmWriteParallel(t *testing.T) {
	defer func(v int) { shmParallelMin = v }(shmParallelMin)
	shmParallelMin = 1 << 20
	w := randomWeights(3*shmPiece/4*5+3, 9) // 15 pieces and a bit, in bytes
	blob := float32Bytes(w)
	want := crc32.Checksum(blob, castagnoli)
	s, err := makeSlot(filepath.Join(t.TempDir(), "slot"), len(blob))
	if err != nil {
		t.Fatal(err)
	}
	defer s.remove()
	if shmWriteParts(len(blob)) < 2 && runtime.NumCPU() > 1 {
		t.Fatalf("a %d-byte blob is not split", len(blob))
	}
	for _, parts := range []int{1, 2, 3, 4, 16} {
		clear(s.data)
		if got := copyCRC(s.data, blob, parts); got != want || !bytes.Equal(s.data, blob) {
			t.Fatalf("%d parts: crc %08x (want %08x), bytes equal %v", parts, got, want, bytes.Equal(s.data, blob))
		}
	}
	if got := s.write(7, w, DTypeFP32); got != want || !bytes.Equal(s.data, blob) || s.hdr.version.Load() != 7 {
		t.Fatalf("write: crc %08x (want %08x), bytes equal %v, version %d", got, want, bytes.Equal(s.data, blob), s.hdr.version.Load())
	}
	// bf16: encoded into the slot in ranges of whole pieces, one goroutine
	// each (7.5 pieces and a value: a short last piece).
	bf := encodeBlob(w, DTypeBF16, nil)
	wantBF := crc32.Checksum(bf, castagnoli)
	if shmWriteParts(len(bf)) < 2 && runtime.NumCPU() > 1 {
		t.Fatalf("a %d-byte bf16 blob is not split", len(bf))
	}
	clear(s.data)
	if got := s.write(8, w, DTypeBF16); got != wantBF || !bytes.Equal(s.data[:len(bf)], bf) || s.hdr.size != int64(len(bf)) {
		t.Fatalf("bf16 write: crc %08x (want %08x), bytes equal %v, size %d", got, wantBF, bytes.Equal(s.data[:len(bf)], bf), s.hdr.size)
	}
}

// TestWeightsShmCutShort: a slot file cut short under a subscriber's mapping
// makes the read an error, not a crash. The copy out of the slot runs in C
// (kernels.CopyStreamed), where a fault would kill the process: the read
// checks the file's size first.
func TestWeightsShmCutShort(t *testing.T) {
	nc := startNATS(t)
	pub, _ := shmPublisher(t, nc, "shmshort", DTypeFP32)
	ctx := context.Background()
	rec := newReceived()
	s, err := SubscribeWeights(nc, "shmshort", zerolog.Nop(), rec.on)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	w := randomWeights(1_000_000, 3) // 4 MB: 16 pieces
	a, err := pub.Publish(ctx, 1, false, w)
	if err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 1)
	if s.ReceivedShm() != 1 {
		t.Fatalf("version 1 not read from the slot (%d from it)", s.ReceivedShm())
	}
	if err := pub.Flush(ctx); err != nil { // the store's copy has read the slot
		t.Fatal(err)
	}
	slot := pub.shm.slots[a.Version%ShmSlots]
	if err := os.Truncate(slot.path, shmHeader+3*shmPiece/2); err != nil {
		t.Fatal(err)
	}
	ann := &announcement{WeightsAnnounce: a, crc: slot.hdr.crc, hasCRC: true, dtype: DTypeFP32, shmPath: slot.path, shmKey: pub.shm.key}
	if _, err := s.shm.read(ann, s.fan); err == nil {
		t.Fatal("a slot cut short read without an error")
	}
}
