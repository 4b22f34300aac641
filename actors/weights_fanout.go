package actors

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/kernels"
)

// The fan-out path (issue 6): before it announces version v, the publisher
// sends v's blob once as a run of core-NATS messages on
// troupe.weightdata.<model>; the server copies each to every subscribed
// connection at the same time, so K subscribers cost one publish, not K
// object-store reads. A subscriber reads each chunk off its socket straight
// into the buffer it will hand over (see chunkConn: no per-chunk buffers, no
// copies; bf16 chunks are decoded into the []float32 as they arrive), computes
// their CRC-32C as they arrive, and hands the version over once the
// announcement carries the same size and CRC-32C; an owner that hands the
// values back (Weights.Release) gets the next version in the same memory. The object store still gets
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
// The durable copy does not compete with the subscribers for the CPU: it
// starts once the fan-out is flushed and announced, when the subscribers are
// mostly done. Measured with `troupe bench --broadcast 124439808` (4
// subscribers, 2 cores): the CPU used until all 4 held a version was 2.05 s
// with the put left out, 2.10 s with 4 put chunks in flight, 2.13 s with
// putMaxPending; so it is neither deferred nor throttled further.
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
	b, encode := wireBlob(w, dtype, scratch)
	if encode != nil {
		encode(len(b))
	}
	return b
}

// wireBlob is encodeBlob's buffer, not yet filled when encode is not nil:
// encode(end) then fills it up to byte end (a whole number of values), from
// where the last call stopped, so that the fan-out can send the first chunks
// while the later ones are still to be encoded.
func wireBlob(w []float32, dtype string, scratch []byte) (blob []byte, encode func(end int)) {
	if dtype == DTypeFP32 && littleEndian {
		return float32Bytes(w), nil
	}
	if dtype != DTypeBF16 {
		return EncodeWeights(w), nil
	}
	b := scratch
	if cap(b) < 2*len(w) {
		b = make([]byte, 2*len(w))
	}
	b = b[:2*len(w)]
	done := 0 // values encoded
	return b, func(end int) {
		to := min(end/2, len(w))
		if to <= done {
			return
		}
		encodeBF16(b[2*done:2*to], w[done:to])
		done = to
	}
}

// encodeBF16 writes w as little-endian bfloat16 into dst (2*len(w) bytes).
func encodeBF16(dst []byte, w []float32) {
	if len(w) == 0 {
		return
	}
	if littleEndian {
		kernels.EncodeBF16(unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(dst))), len(w)), w) // AVX-512 or AVX2 where the CPU has it
		return
	}
	for i, v := range w {
		binary.LittleEndian.PutUint16(dst[2*i:], kernels.ToBF16(v))
	}
}

// RoundBF16 is v rounded to the nearest bfloat16 (what a bf16 subscriber
// receives for v): relative error at most 2^-8.
func RoundBF16(v float32) float32 { return kernels.FromBF16(kernels.ToBF16(v)) }

// decodeBlob turns a verified blob of dtype into values. For fp32, values is
// nil or the []float32 whose memory blob already is (from the fan-out or a
// fetch), returned as it is; for bf16 it is nil or where to decode to (of
// len(blob)/2 values).
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
	w := values
	if len(w) != len(blob)/2 {
		w = make([]float32, len(blob)/2)
	}
	decodeInto(w, blob, dtype)
	return w, nil
}

// decodeInto decodes the whole values in blob (fp32 or bf16, little-endian)
// into the start of w, which has room for them.
func decodeInto(w []float32, blob []byte, dtype string) {
	if dtype == DTypeFP32 {
		n := len(blob) / 4
		if littleEndian {
			copy(float32Bytes(w[:n]), blob)
			return
		}
		for i := range n {
			w[i] = math.Float32frombits(binary.LittleEndian.Uint32(blob[4*i:]))
		}
		return
	}
	kernels.DecodeBF16(w, blob) // AVX-512 where the CPU has it
}

// fanOut publishes blob as version v's chunks and returns the blob's CRC-32C
// (computed on the way). Every fanoutWin bytes it waits for the server to
// have taken what was sent, so the publisher never runs more than that ahead
// of the server. encode, if not nil, is called to fill blob up to the end of
// each chunk before it is sent (wireBlob).
func fanOut(ctx context.Context, nc *nats.Conn, model string, v int64, dtype string, blob []byte, encode func(end int)) (uint32, error) {
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
		end := min(off+chunk, len(blob))
		if encode != nil {
			encode(end)
		}
		data := blob[off:end]
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
	return parseChunkHeader(m.Header.Get(hdrChunk), len(m.Data))
}

// parseChunkHeader reads a chunk's Troupe-Chunk header value; n is the
// chunk's payload bytes.
func parseChunkHeader(h string, n int) (version int64, off, total int, dtype string, ok bool) {
	f := strings.Fields(h)
	if len(f) != 4 || dtypeSize(f[3]) == 0 {
		return 0, 0, 0, "", false
	}
	v, err1 := strconv.ParseInt(f[0], 10, 64)
	o, err2 := strconv.Atoi(f[1])
	t, err3 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || err3 != nil || v < 1 || o < 0 || t < 0 || n > t || o > t-n {
		return 0, 0, 0, "", false
	}
	return v, o, t, f[3], true
}

// assembly is one version arriving over the fan-out.
type assembly struct {
	version  int64
	total    int       // blob bytes
	dtype    string    // the blob's encoding
	buf      []byte    // fp32: the blob being filled, a []float32's memory (else nil)
	values   []float32 // bf16: the values, decoded chunk by chunk as they arrive (else nil)
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
	spare   []float32 // values an owner is done with (Weights.Release)
	scratch []byte    // a bf16 chunk on its way to being decoded (the receiving goroutine's)
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
	if a, dst := f.target(v, off, total, dtype, len(m.Data)); dst != nil {
		if a.values == nil {
			copy(dst, m.Data)
		} else {
			dst = m.Data // decoded from where it is
		}
		f.filled(a, dst)
	}
}

// target is where the chunk (v, off, total, dtype) of n bytes goes: the part
// of its version's buffer to fill (then filled), or nil when the chunk is
// dropped (a version done or overtaken, a gap). One goroutine at a time
// receives chunks (target, fill, filled): only it writes the buffers; the
// fetcher reads one once complete is set under the lock.
func (f *fanin) target(v int64, off, total int, dtype string, n int) (*assembly, []byte) {
	f.mu.Lock()
	if v <= f.floor || (f.asm != nil && v < f.asm.version) {
		f.mu.Unlock()
		return nil, nil
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
			return nil, nil
		}
	}
	if a.broken || a.complete || off != a.next || total != a.total || dtype != a.dtype ||
		(dtype == DTypeBF16 && (total%2 != 0 || n%2 != 0)) {
		if !a.broken && !a.complete {
			a.broken = true
			f.mu.Unlock()
			f.notify()
			return nil, nil
		}
		f.mu.Unlock()
		return nil, nil
	}
	f.mu.Unlock()
	if dtype != DTypeFP32 || !littleEndian || total%4 != 0 {
		// Decoded by filled, from a chunk-sized scratch buffer.
		if a.values == nil {
			a.values = f.values(total / dtypeSize(dtype))
		}
		if cap(f.scratch) < n {
			f.scratch = make([]byte, n)
		}
		return a, f.scratch[:n]
	}
	if a.buf == nil {
		a.buf = float32Bytes(f.values(total / 4))
	}
	return a, a.buf[off : off+n]
}

// filled records that dst, from target(a's version, ...), now holds the
// next bytes of a's blob: a whole chunk or, from the chunk connection, the
// next piece of one (for an assembly with values, any slice holding them will
// do): their CRC-32C is folded in, and bf16 values decoded, while they are
// still in cache.
func (f *fanin) filled(a *assembly, dst []byte) {
	crc := crc32.Update(a.crc, castagnoli, dst)
	if a.values != nil {
		decodeInto(a.values[a.next/dtypeSize(a.dtype):], dst, a.dtype)
	}
	f.mu.Lock()
	a.crc, a.next, a.last = crc, a.next+len(dst), time.Now()
	done := a.next == a.total
	a.complete = done
	f.mu.Unlock()
	if done {
		f.notify()
	}
}

// values is a []float32 of n values to hand over: the one an owner handed
// back (Weights.Release) when it has that length, else a new one.
func (f *fanin) values(n int) []float32 {
	f.mu.Lock()
	w := f.spare
	f.spare = nil
	f.mu.Unlock()
	if len(w) == n {
		return w
	}
	return make([]float32, n)
}

// releaser is Weights.Release for w: the first call makes w the spare that
// values hands out next (a later call, also from a copy of the Weights, does
// nothing, so w is never handed out twice).
func (f *fanin) releaser(w []float32) func() {
	var once atomic.Bool
	return func() {
		if len(w) > 0 && once.CompareAndSwap(false, true) {
			f.mu.Lock()
			f.spare = w
			f.mu.Unlock()
		}
	}
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

// A subscriber receives the fan-out's chunks on a connection of its own that
// speaks just enough of the NATS client protocol to subscribe, and reads each
// chunk's payload from the socket straight into the version's buffer, at its
// offset: nats.go would first copy every message out of its 32 KiB read
// buffer into a new, zeroed slice (1 MiB per chunk), which the handler then
// copies again. That was two of the subscriber's three passes over every byte
// besides the kernel's (and most of its allocation); the CRC-32C pass follows
// each chunk's read while it is in cache. The connection goes to the server
// the subscriber's nats.Conn is connected to, with its user and password or
// token; one that needs more (TLS, nkeys, JWTs, a custom dialer or a
// WebSocket) takes the chunks through nats.go as before. When the connection
// drops it is dialled again (the versions meanwhile come from the object
// store, as for any lost chunk).

// errRawUnsupported: the chunk connection cannot be used with this server or
// these options; the subscriber takes the chunks through nats.go.
var errRawUnsupported = errors.New("weights chunk connection: not supported here")

const (
	rawReadBuf    = 64 << 10        // control lines and small payloads; chunks bypass it
	rawPiece      = 64 << 10        // a chunk is read, checksummed and decoded this much at a time (even: whole bf16 values)
	rawMaxHeader  = 64 << 10        // largest message header accepted
	rawDialWait   = 5 * time.Second // dial, handshake and one write
	rawRedialWait = 5 * time.Second // at most between dials after the connection dropped
)

// rawChunks lets tests take the nats.go path.
var rawChunks = true

// rawTarget is how the chunk connection reaches a server: its address and
// the credentials the subscriber's own connection uses.
type rawTarget struct {
	addr                  string // host:port
	user, password, token string
}

// rawTargetOf is nc's server and credentials, or errRawUnsupported when nc
// uses anything the chunk connection does not speak.
func rawTargetOf(nc *nats.Conn) (rawTarget, error) {
	if !rawChunks || !rawSpeaks(nc.Opts) {
		return rawTarget{}, errRawUnsupported
	}
	u, err := url.Parse(nc.ConnectedUrl())
	if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tcp") {
		return rawTarget{}, errRawUnsupported
	}
	t := credsOf(nc)
	t.addr = u.Host
	return t, nil
}

// credsOf is the user and password, or token, nc authenticates with (addr
// left empty): its options', unless its URL carries some, which win as in
// nats.go.
func credsOf(nc *nats.Conn) rawTarget {
	t := rawTarget{user: nc.Opts.User, password: nc.Opts.Password, token: nc.Opts.Token}
	if u, err := url.Parse(nc.ConnectedUrl()); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			t.user, t.password, t.token = u.User.Username(), p, ""
		} else {
			t.token, t.user, t.password = u.User.Username(), "", ""
		}
	}
	return t
}

// rawSpeaks tells whether the chunk connection can authenticate as a
// connection with options o does: no credentials, a user and password, or a
// token; not TLS, nkeys, JWTs, custom dialers or in-process pipes.
func rawSpeaks(o nats.Options) bool {
	return !(o.Secure || o.TLSConfig != nil || o.TLSHandshakeFirst || o.TLSCertCB != nil || o.RootCAsCB != nil ||
		o.UserJWT != nil || o.Nkey != "" || o.SignatureCB != nil || o.UserInfo != nil || o.TokenHandler != nil ||
		o.CustomDialer != nil || o.InProcessServer != nil || o.ProxyPath != "" || o.Compression)
}

// rawServerInfo is the part of a server's INFO the chunk connection reads.
type rawServerInfo struct {
	Headers     bool `json:"headers"`
	TLSRequired bool `json:"tls_required"`
	TLSAvail    bool `json:"tls_available"`
	MaxPayload  int  `json:"max_payload"`
}

// dialRaw opens a chunk connection to t subscribed to subj: INFO, CONNECT,
// SUB, and a PING answered with PONG, so the server has the subscription
// before dialRaw returns.
func dialRaw(ctx context.Context, t rawTarget, subj string) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: rawDialWait}
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (net.Conn, *bufio.Reader, error) {
		conn.Close()
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(rawDialWait))
	br := bufio.NewReaderSize(conn, rawReadBuf)
	line, err := rawLine(br)
	if err != nil {
		return fail(err)
	}
	op, arg, _ := strings.Cut(string(line), " ")
	if !strings.EqualFold(op, "INFO") {
		return fail(fmt.Errorf("weights chunk connection: server sent %q, want INFO", op))
	}
	var info rawServerInfo
	if err := json.Unmarshal([]byte(arg), &info); err != nil {
		return fail(fmt.Errorf("weights chunk connection: server INFO: %v", err))
	}
	if info.TLSRequired || !info.Headers {
		return fail(errRawUnsupported)
	}
	connect := map[string]any{"verbose": false, "pedantic": false, "lang": "go", "version": "troupe-weights",
		"protocol": 1, "headers": true, "no_responders": true, "name": "troupe-weights"}
	switch {
	case t.user != "":
		connect["user"], connect["pass"] = t.user, t.password
	case t.token != "":
		connect["auth_token"] = t.token
	}
	cj, err := json.Marshal(connect)
	if err != nil {
		return fail(err)
	}
	if _, err := conn.Write([]byte("CONNECT " + string(cj) + "\r\nSUB " + subj + " 1\r\nPING\r\n")); err != nil {
		return fail(err)
	}
	for {
		line, err := rawLine(br)
		if err != nil {
			return fail(err)
		}
		op, arg, _ := strings.Cut(string(line), " ")
		switch strings.ToUpper(op) {
		case "PONG":
			conn.SetDeadline(time.Time{})
			return conn, br, nil
		case "PING":
			if _, err := conn.Write([]byte("PONG\r\n")); err != nil {
				return fail(err)
			}
		case "+OK", "INFO":
		case "-ERR":
			return fail(fmt.Errorf("weights chunk connection: server: %s", arg))
		default:
			return fail(fmt.Errorf("weights chunk connection: unexpected %q before PONG", op))
		}
	}
}

// rawLine reads one protocol line without its CR LF.
func rawLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, fmt.Errorf("weights chunk connection: protocol line over %d bytes", br.Size())
	}
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// readRaw delivers the chunks that arrive on conn to fan until the
// connection fails; it answers the server's PINGs.
func readRaw(conn net.Conn, br *bufio.Reader, fan *fanin, count *atomic.Int64) error {
	var hdr []byte
	for {
		line, err := rawLine(br)
		if err != nil {
			return err
		}
		op, args, _ := bytes.Cut(line, []byte{' '})
		switch strings.ToUpper(string(op)) {
		case "HMSG", "MSG":
			// HMSG <subject> <sid> [reply] <header bytes> <total bytes>;
			// MSG <subject> <sid> [reply] <bytes>.
			f := bytes.Fields(args)
			hlen, total := 0, 0
			var err1, err2 error
			switch {
			case strings.EqualFold(string(op), "MSG"):
				if len(f) != 3 && len(f) != 4 {
					return fmt.Errorf("weights chunk connection: bad MSG line %q", line)
				}
				total, err1 = strconv.Atoi(string(f[len(f)-1]))
			default:
				if len(f) != 4 && len(f) != 5 {
					return fmt.Errorf("weights chunk connection: bad HMSG line %q", line)
				}
				hlen, err1 = strconv.Atoi(string(f[len(f)-2]))
				total, err2 = strconv.Atoi(string(f[len(f)-1]))
			}
			if err1 != nil || err2 != nil || hlen < 0 || total < hlen || hlen > rawMaxHeader {
				return fmt.Errorf("weights chunk connection: bad message line %q", line)
			}
			hdr = slices.Grow(hdr[:0], hlen)[:hlen]
			if _, err := io.ReadFull(br, hdr); err != nil {
				return err
			}
			n := total - hlen
			var a *assembly
			var dst []byte
			if hlen > 0 {
				if h, err := nats.DecodeHeadersMsg(hdr); err == nil {
					if v, off, size, dtype, ok := parseChunkHeader(h.Get(hdrChunk), n); ok {
						a, dst = fan.target(v, off, size, dtype, n)
					}
				}
			}
			if dst != nil {
				// In pieces, each checksummed (and decoded) while it is still
				// in cache: a whole chunk (~1 MiB) is more than Zen 3's L2.
				for o := 0; o < len(dst); o += rawPiece {
					p := dst[o:min(o+rawPiece, len(dst))]
					if a.values != nil { // decoded from scratch: one piece's worth reused
						p = dst[:len(p)]
					}
					if err := readPayload(br, conn, p); err != nil {
						return err // the assembly stays incomplete: its version comes from the store
					}
					fan.filled(a, p)
				}
				count.Add(1)
			} else if _, err := br.Discard(n); err != nil {
				return err
			}
			if _, err := br.Discard(2); err != nil { // CR LF
				return err
			}
		case "PING":
			conn.SetWriteDeadline(time.Now().Add(rawDialWait))
			if _, err := conn.Write([]byte("PONG\r\n")); err != nil {
				return err
			}
		case "PONG", "+OK", "INFO":
		case "-ERR":
			return fmt.Errorf("weights chunk connection: server: %s", args)
		default:
			return fmt.Errorf("weights chunk connection: unexpected %q", op)
		}
	}
}

// readPayload fills p with the next bytes of conn, which br reads: first
// what br holds, then straight from conn (br is empty then). Through br
// itself, a read short of its buffer's size refills the buffer and copies out
// of it: once one piece of a chunk had ended part-way through br's buffer,
// every later piece went through it, an extra copy of nearly every byte.
func readPayload(br *bufio.Reader, conn net.Conn, p []byte) error {
	n := 0
	if b := br.Buffered(); b > 0 {
		n, _ = br.Read(p[:min(b, len(p))]) // from the buffer only: no read on conn
	}
	_, err := io.ReadFull(conn, p[n:])
	return err
}

// chunkConn is a subscriber's chunk connection, dialled again (to the server
// its nats.Conn is on then) whenever it drops, until stop.
type chunkConn struct {
	nc     *nats.Conn
	fixed  bool // dialled again to the same target (a publisher's direct server), not to nc's server
	subj   string
	fan    *fanin
	log    zerolog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	count  atomic.Int64 // chunks received

	mu   sync.Mutex
	conn net.Conn
}

// startChunkConn dials the chunk connection for nc and starts reading it;
// errRawUnsupported (or a failure to dial) means the caller should take
// the chunks through nats.go.
func startChunkConn(ctx context.Context, nc *nats.Conn, subj string, fan *fanin, log zerolog.Logger) (*chunkConn, error) {
	t, err := rawTargetOf(nc)
	if err != nil {
		return nil, err
	}
	conn, br, err := dialRaw(ctx, t, subj)
	if err != nil {
		return nil, err
	}
	return goChunkConn(nc, false, conn, br, t, subj, fan, log), nil
}

// goChunkConn starts reading conn (dialled to t) for fan.
func goChunkConn(nc *nats.Conn, fixed bool, conn net.Conn, br *bufio.Reader, t rawTarget, subj string, fan *fanin, log zerolog.Logger) *chunkConn {
	c := &chunkConn{nc: nc, fixed: fixed, subj: subj, fan: fan, log: log, conn: conn, done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run(conn, br, t)
	return c
}

func (c *chunkConn) run(conn net.Conn, br *bufio.Reader, t rawTarget) {
	defer close(c.done)
	for {
		err := readRaw(conn, br, c.fan, &c.count)
		conn.Close()
		if c.ctx.Err() != nil {
			return
		}
		c.log.Debug().Err(err).Msg("weights chunk connection dropped; dialling again")
		for try := 0; ; try++ {
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(min(fetchBackoff<<min(try, 8), rawRedialWait)):
			}
			if nt, err := rawTargetOf(c.nc); err == nil && !c.fixed {
				t = nt // the server the subscriber's connection is on now
			}
			conn, br, err = dialRaw(c.ctx, t, c.subj)
			if err == nil {
				break
			}
		}
		c.mu.Lock()
		c.conn = conn
		stopped := c.ctx.Err() != nil
		c.mu.Unlock()
		if stopped {
			conn.Close()
			return
		}
	}
}

// stop closes the connection and waits for its reader.
func (c *chunkConn) stop() {
	c.cancel()
	c.mu.Lock()
	c.conn.Close()
	c.mu.Unlock()
	<-c.done
}
