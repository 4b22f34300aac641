package actors

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
)

// The fan-out path (issue 6): before it announces version v, the publisher
// sends v's blob once as a run of core-NATS messages on
// troupe.weightdata.<model>; the server copies each to every subscribed
// connection at the same time, so K subscribers cost one publish, not K
// object-store reads. A subscriber assembles the chunks straight into the
// buffer it will hand over (no per-chunk buffers kept, no whole-blob copies),
// computes their CRC-32C as they arrive, and hands the version over once the
// announcement carries the same size and CRC-32C. The object store still gets
// every version, after the announcement: it is the durable copy for a
// subscriber that joined late, was disconnected, or lost chunks (a gap in the
// offsets), which then fetches from there as before.
//
// Why not let the object store's own chunks be the fan-out (subscribers on
// its chunk subject, one send instead of two)? It was tried: the
// acknowledged, bounded put paces the send to the server's file store, which
// puts the store's speed on every subscriber's path. In one back-to-back pair
// of `troupe bench --broadcast 124439808` runs on the (loaded) 2-core machine
// it took 4.2 s fp32 / 5.0 s bf16 against 3.7 s / 2.2 s for this order, where
// the store copy follows the broadcast.
//
// Core NATS delivers a publisher's messages to a subscriber in the order they
// were sent, so a chunk whose offset is not the next one expected means one
// was lost; nothing is retransmitted on this path.
const (
	weightsDataSubject = "troupe.weightdata." // + model; outside the announcement stream's troupe.weights.>

	fanoutWin = 32 << 20        // bytes published between round trips to the server
	hdrChunk  = "Troupe-Chunk"  // on a chunk: "<version> <offset> <total bytes> <dtype>"
	hdrCRC    = "Troupe-Crc32c" // on an announcement: CRC-32C (Castagnoli) of the blob, 8 hex digits
	hdrDType  = "Troupe-Dtype"  // on an announcement: blob encoding, fp32 (default) or bf16
	hdrFanout = "Troupe-Fanout" // on an announcement: "1" when every chunk went out before it
	chunkRoom = 4 << 10         // max_payload room left for the chunk's header
	subBuffer = 1 << 30         // client-side pending bytes allowed on the chunk subscription
)

// fanoutStall is how long a subscriber waits without a new chunk of the
// version it was announced before it fetches that version from the object
// store instead.
var fanoutStall = 3 * time.Second

// fanoutFlushTimeout bounds one fan-out when Publish's context has no deadline.
const fanoutFlushTimeout = 5 * time.Minute

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Weights dtypes on the wire.
const (
	DTypeFP32 = "fp32" // 4 bytes per value, little-endian IEEE 754 (exact)
	DTypeBF16 = "bf16" // 2 bytes per value: bfloat16, rounded to nearest even
)

// dtypeSize is the bytes per value of a wire dtype (0 = unknown).
func dtypeSize(dtype string) int {
	switch dtype {
	case DTypeFP32:
		return 4
	case DTypeBF16:
		return 2
	}
	return 0
}

// littleEndian: on such a machine a []float32 already is its fp32 blob.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// float32Bytes is w's memory as bytes (no copy); little-endian machines only.
func float32Bytes(w []float32) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4*len(w))
}

// encodeBlob is w on the wire in dtype: on a little-endian machine an fp32
// blob is w's own memory (the caller must not change w while it is in use);
// otherwise it is a new buffer (scratch reused when big enough).
func encodeBlob(w []float32, dtype string, scratch []byte) []byte {
	switch dtype {
	case DTypeBF16:
		b := scratch
		if cap(b) < 2*len(w) {
			b = make([]byte, 2*len(w))
		}
		b = b[:2*len(w)]
		if littleEndian {
			h := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(w))
			for i, v := range w {
				h[i] = toBF16(v)
			}
			return b
		}
		for i, v := range w {
			binary.LittleEndian.PutUint16(b[2*i:], toBF16(v))
		}
		return b
	default:
		if littleEndian {
			return float32Bytes(w)
		}
		return EncodeWeights(w)
	}
}

// toBF16 rounds v to bfloat16 (nearest, ties to even); NaN stays NaN.
func toBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it one (quiet)
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// fromBF16 is the float32 value of a bfloat16.
func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// RoundBF16 is v rounded to the nearest bfloat16 (what a bf16 subscriber
// receives for v): relative error at most 2^-8.
func RoundBF16(v float32) float32 { return fromBF16(toBF16(v)) }

// decodeBlob turns a verified blob of dtype into values; an fp32 blob that is
// already a []float32's memory (from the fan-out) is that slice, no copy.
func decodeBlob(blob []byte, dtype string, values []float32) ([]float32, error) {
	size := dtypeSize(dtype)
	if size == 0 {
		return nil, fmt.Errorf("%w: unknown weights dtype %q (want %s or %s)", ErrWeights, dtype, DTypeFP32, DTypeBF16)
	}
	if len(blob)%size != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a whole number of %s values", ErrWeights, len(blob), dtype)
	}
	if dtype == DTypeFP32 {
		if values != nil {
			return values, nil
		}
		return DecodeWeights(blob)
	}
	w := make([]float32, len(blob)/2)
	if littleEndian && uintptr(unsafe.Pointer(unsafe.SliceData(blob)))%2 == 0 {
		// As uint16s in place: 5x the byte-by-byte loop, this runs once per
		// version on every subscriber.
		h := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(blob))), len(w))
		bits := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(w))), len(w))
		for i, x := range h {
			bits[i] = uint32(x) << 16
		}
		return w, nil
	}
	for i := range w {
		w[i] = fromBF16(binary.LittleEndian.Uint16(blob[2*i:]))
	}
	return w, nil
}

// fanOut publishes blob as version v's chunks and returns the blob's CRC-32C
// (computed on the way). Every fanoutWin bytes it waits for the server to
// have taken what was sent, so the publisher never runs more than that ahead
// of the server.
func fanOut(ctx context.Context, nc *nats.Conn, model string, v int64, dtype string, blob []byte) (uint32, error) {
	chunk, err := chunkSize(nc)
	if err != nil {
		return 0, err
	}
	if _, ok := ctx.Deadline(); !ok { // FlushWithContext wants one
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fanoutFlushTimeout)
		defer cancel()
	}
	subj := weightsDataSubject + model
	total := " " + strconv.Itoa(len(blob)) + " " + dtype
	var crc uint32
	sinceFlush := 0
	for off := 0; off < len(blob); off += chunk {
		data := blob[off:min(off+chunk, len(blob))]
		crc = crc32.Update(crc, castagnoli, data)
		m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
		m.Header.Set(hdrChunk, strconv.FormatInt(v, 10)+" "+strconv.Itoa(off)+total)
		if err := nc.PublishMsg(m); err != nil {
			return crc, fmt.Errorf("%w: weights chunk %d of %s v%d: %v", ErrNATS, off, model, v, err)
		}
		if sinceFlush += len(data); sinceFlush >= fanoutWin {
			sinceFlush = 0
			if err := nc.FlushWithContext(ctx); err != nil {
				return crc, fmt.Errorf("%w: weights chunks of %s v%d: %v", ErrNATS, model, v, err)
			}
		}
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return crc, fmt.Errorf("%w: weights chunks of %s v%d: %v", ErrNATS, model, v, err)
	}
	return crc, nil
}

// parseChunk reads a chunk's header.
func parseChunk(m *nats.Msg) (version int64, off, total int, dtype string, ok bool) {
	f := strings.Fields(m.Header.Get(hdrChunk))
	if len(f) != 4 || dtypeSize(f[3]) == 0 {
		return 0, 0, 0, "", false
	}
	v, err1 := strconv.ParseInt(f[0], 10, 64)
	o, err2 := strconv.Atoi(f[1])
	t, err3 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || err3 != nil || v < 1 || o < 0 || t < 0 || o+len(m.Data) > t {
		return 0, 0, 0, "", false
	}
	return v, o, t, f[3], true
}

// assembly is one version arriving over the fan-out.
type assembly struct {
	version  int64
	total    int       // blob bytes
	dtype    string    // the blob's encoding
	buf      []byte    // the blob being filled; for fp32, a []float32's memory
	next     int       // bytes received, in order
	crc      uint32    // CRC-32C of buf[:next]
	last     time.Time // last chunk
	broken   bool      // a chunk went missing: fetch from the store
	complete bool
}

// fanin receives the chunks of one model on a subscriber's connection.
type fanin struct {
	mu      sync.Mutex
	asm     *assembly // the newest version seen on the fan-out
	ready   *assembly // an older complete one not taken yet (its announcement is late)
	floor   int64     // versions <= floor are done: their chunks are dropped
	signal  chan struct{}
	spareBF []byte // a bf16 buffer handed back for reuse
}

func newFanin() *fanin { return &fanin{signal: make(chan struct{}, 1)} }

func (f *fanin) notify() {
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

// onChunk is the chunk subscription's handler (one goroutine: nats.go
// delivers a subscription's messages in order).
func (f *fanin) onChunk(m *nats.Msg) {
	v, off, total, dtype, ok := parseChunk(m)
	if !ok {
		return
	}
	f.mu.Lock()
	if v <= f.floor || (f.asm != nil && v < f.asm.version) {
		f.mu.Unlock()
		return
	}
	a := f.asm
	if a == nil || v != a.version || off == 0 {
		// A new version, or the same one sent again by a retried publish
		// (whose announcement, if it comes, matches the last sending).
		if a != nil && a.complete && a.version < v {
			f.ready = a
		}
		a = &assembly{version: v, total: total, dtype: dtype, last: time.Now()}
		if off != 0 {
			a.broken = true // joined mid-blob
		}
		f.asm = a
		if a.broken {
			f.mu.Unlock()
			f.notify()
			return
		}
	}
	if a.broken || a.complete || off != a.next || total != a.total || dtype != a.dtype {
		if !a.broken && !a.complete {
			a.broken = true
			f.mu.Unlock()
			f.notify()
			return
		}
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()

	// Only this goroutine writes a's buffer; the fetcher reads it once
	// complete is set under the lock.
	if a.buf == nil {
		a.buf = f.allocate(total, dtype)
	}
	copy(a.buf[off:], m.Data)
	crc := crc32.Update(a.crc, castagnoli, m.Data)

	f.mu.Lock()
	a.crc, a.next, a.last = crc, off+len(m.Data), time.Now()
	done := a.next == a.total
	a.complete = done
	f.mu.Unlock()
	if done {
		f.notify()
	}
}

// allocate is the buffer for a blob of total bytes: for fp32 on a
// little-endian machine a new []float32's memory (handed over as
// Weights.Data without a copy), else bytes (a bf16 buffer is reused: its
// values are decoded into a new []float32).
func (f *fanin) allocate(total int, dtype string) []byte {
	if dtype == DTypeFP32 && littleEndian && total%4 == 0 && total > 0 {
		return float32Bytes(make([]float32, total/4))
	}
	f.mu.Lock()
	b := f.spareBF
	f.spareBF = nil
	f.mu.Unlock()
	if cap(b) >= total {
		return b[:total]
	}
	return make([]byte, total)
}

// state reports the fan-out's progress on version v: done with its blob and
// CRC, or failed (lost chunks, or none for stall), or still arriving.
func (f *fanin) state(v int64, since time.Time) (a *assembly, failed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := f.asm
	if r := f.ready; r != nil && r.version == v {
		f.ready = nil
		if v > f.floor {
			f.floor = v
		}
		return r, false
	}
	switch {
	case cur == nil || cur.version < v:
		return nil, time.Since(since) > fanoutStall
	case cur.version > v:
		return nil, true // v's chunks were overtaken by a newer version's
	case cur.complete:
		f.asm = nil
		if v > f.floor {
			f.floor = v
		}
		return cur, false
	case cur.broken:
		return nil, true
	default:
		return nil, time.Since(cur.last) > fanoutStall
	}
}

// done marks versions <= v as handled: their chunks are dropped from now on.
func (f *fanin) done(v int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v > f.floor {
		f.floor = v
	}
	if f.asm != nil && f.asm.version <= v {
		f.asm = nil
	}
	if f.ready != nil && f.ready.version <= v {
		f.ready = nil
	}
}

// reuse hands a bf16 blob back once its values are decoded.
func (f *fanin) reuse(b []byte) {
	f.mu.Lock()
	f.spareBF = b
	f.mu.Unlock()
}

// blobValues is the []float32 whose memory is b (from allocate), or nil when
// b is not one.
func blobValues(b []byte) []float32 {
	if !littleEndian || len(b) == 0 || len(b)%4 != 0 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// crcHex formats a CRC-32C for the announcement header.
func crcHex(c uint32) string { return fmt.Sprintf("%08x", c) }

// parseCRC reads an announcement's CRC-32C header.
func parseCRC(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	c, err := strconv.ParseUint(s, 16, 32)
	return uint32(c), err == nil
}
