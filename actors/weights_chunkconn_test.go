package actors

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// fakeNATS accepts one connection on 127.0.0.1, sends info, and hands the
// connection and its reader to serve.
func fakeNATS(t *testing.T, info string, serve func(c net.Conn, br *bufio.Reader)) rawTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := c.Write([]byte("INFO " + info + "\r\n")); err != nil {
			return
		}
		serve(c, bufio.NewReader(c))
	}()
	return rawTarget{addr: ln.Addr().String()}
}

// expectLine reads one line from the client and checks its start.
func expectLine(br *bufio.Reader, prefix string) (string, error) {
	l, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	l = strings.TrimRight(l, "\r\n")
	if !strings.HasPrefix(l, prefix) {
		return l, fmt.Errorf("client sent %q, want %s...", l, prefix)
	}
	return l, nil
}

// The chunk connection speaks the client protocol: CONNECT (with the
// credentials), SUB, PING; then it answers PINGs, skips +OK, MSG without
// headers and messages that are not chunks, and reads HMSG chunks (with or
// without a reply subject, in whatever pieces TCP delivers them) straight
// into the version's buffer; -ERR ends it.
func TestChunkConnProtocol(t *testing.T) {
	blob := EncodeWeights(randomWeights(3000, 9))
	hmsg := func(reply string, v int64, off int, data []byte) string {
		h := fmt.Sprintf("NATS/1.0\r\n%s: %d %d %d fp32\r\n\r\n", hdrChunk, v, off, len(blob))
		r := ""
		if reply != "" {
			r = " " + reply
		}
		return fmt.Sprintf("HMSG troupe.weightdata.policy 1%s %d %d\r\n%s%s\r\n", r, len(h), len(h)+len(data), h, data)
	}
	connect := make(chan map[string]any, 1)
	pong := make(chan error, 1)
	target := fakeNATS(t, `{"server_id":"x","headers":true,"max_payload":1048576}`, func(c net.Conn, br *bufio.Reader) {
		l, err := expectLine(br, "CONNECT ")
		if err != nil {
			pong <- err
			return
		}
		var cj map[string]any
		if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "CONNECT ")), &cj); err != nil {
			pong <- err
			return
		}
		connect <- cj
		if _, err := expectLine(br, "SUB troupe.weightdata.policy 1"); err != nil {
			pong <- err
			return
		}
		if _, err := expectLine(br, "PING"); err != nil {
			pong <- err
			return
		}
		stream := "+OK\r\nPONG\r\nPING\r\n" +
			"MSG troupe.weightdata.policy 1 5\r\nhello\r\n" + // no header: not a chunk
			"HMSG troupe.weightdata.policy 1 12 17\r\nNATS/1.0\r\n\r\nhello\r\n" + // a header, but no chunk one
			hmsg("", 1, 0, blob[:5000]) + hmsg("_INBOX.x", 1, 5000, blob[5000:])
		// In small pieces, so that lines and payloads straddle reads.
		for i := 0; i < len(stream); i += 777 {
			if _, err := c.Write([]byte(stream[i:min(i+777, len(stream))])); err != nil {
				pong <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		_, err = expectLine(br, "PONG") // the answer to our PING
		pong <- err
		c.Write([]byte("-ERR 'Stale Connection'\r\n"))
		time.Sleep(100 * time.Millisecond)
	})
	target.user, target.password = "gen", "secret"
	conn, br, err := dialRaw(context.Background(), target, "troupe.weightdata.policy")
	if err != nil {
		t.Fatalf("dialRaw: %v", err)
	}
	defer conn.Close()
	if cj := <-connect; cj["user"] != "gen" || cj["pass"] != "secret" || cj["headers"] != true || cj["verbose"] != false {
		t.Errorf("CONNECT %v: want user, pass, headers true, verbose false", cj)
	}
	f := newFanin()
	var count atomic.Int64
	err = readRaw(conn, br, f, &count)
	if err == nil || !strings.Contains(err.Error(), "Stale Connection") {
		t.Errorf("readRaw ended with %v, want the server's -ERR", err)
	}
	if err := <-pong; err != nil {
		t.Errorf("server side: %v", err)
	}
	a, failed := f.state(1, time.Now())
	if a == nil || failed || !slices.Equal(a.buf, blob) || a.crc != crc32Castagnoli(blob) {
		t.Fatalf("chunks over the chunk connection: got %v, failed %v", a != nil, failed)
	}
	if count.Load() != 2 {
		t.Errorf("%d chunks counted, want 2", count.Load())
	}
}

// A server that needs TLS, or has no headers, or refuses the credentials,
// leaves the chunk connection unused (the subscriber goes through nats.go).
func TestChunkConnRefusals(t *testing.T) {
	for _, c := range []struct {
		name, info, reply string
		unsupported       bool
	}{
		{"tls", `{"headers":true,"tls_required":true}`, "", true},
		{"no headers", `{"headers":false}`, "", true},
		{"auth", `{"headers":true,"auth_required":true}`, "-ERR 'Authorization Violation'\r\n", false},
		{"garbage", `{"headers":true}`, "HELLO\r\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := fakeNATS(t, c.info, func(conn net.Conn, br *bufio.Reader) {
				if c.reply != "" {
					expectLine(br, "CONNECT")
					conn.Write([]byte(c.reply))
				}
				time.Sleep(200 * time.Millisecond)
			})
			conn, _, err := dialRaw(context.Background(), target, "troupe.weightdata.policy")
			if err == nil {
				conn.Close()
				t.Fatalf("dialRaw succeeded")
			}
			if errors.Is(err, errRawUnsupported) != c.unsupported {
				t.Fatalf("dialRaw: %v (unsupported: want %v)", err, c.unsupported)
			}
		})
	}
	// nats.go options the chunk connection does not speak.
	nc := startNATS(t)
	target, err := rawTargetOf(nc)
	if err != nil || target.addr == "" {
		t.Fatalf("plain connection: %v, %+v", err, target)
	}
	nc.Opts.Nkey = "UABC"
	defer func() { nc.Opts.Nkey = "" }()
	if _, err := rawTargetOf(nc); !errors.Is(err, errRawUnsupported) {
		t.Fatalf("nkey connection: got %v, want errRawUnsupported", err)
	}
}

// newPublisher is a weight publisher for model "policy" on nc.
func newPublisher(t *testing.T, nc *nats.Conn, opts ...PublisherOption) *WeightPublisher {
	t.Helper()
	pub, err := NewWeightPublisher(context.Background(), nc, "policy", opts...)
	if err != nil {
		t.Fatalf("NewWeightPublisher: %v", err)
	}
	return pub
}

// publishAndWait publishes w and waits until every receiver holds it.
func publishAndWait(t *testing.T, pub *WeightPublisher, w []float32, recs ...*received) int64 {
	t.Helper()
	a, err := pub.Publish(context.Background(), 1, false, w)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for _, r := range recs {
		r.waitFor(t, a.Version)
	}
	return a.Version
}

// With the chunk connection off, subscribers take the fan-out through
// nats.go, fp32 and bf16 alike.
func TestFanoutThroughNATSGo(t *testing.T) {
	rawChunks = false
	defer func() { rawChunks = true }()
	for _, dtype := range []string{DTypeFP32, DTypeBF16} {
		t.Run(dtype, func(t *testing.T) {
			nc := startNATS(t)
			pub := newPublisher(t, nc, WithWeightsDType(dtype))
			s, rec := subscribeOwn(t, nc.ConnectedUrl())
			if s.raw != nil || s.chunks == nil {
				t.Fatalf("chunk connection used with rawChunks off")
			}
			w := randomWeights(3<<19, 4)
			publishAndWait(t, pub, w, rec)
			want := w
			if dtype == DTypeBF16 {
				want = make([]float32, len(w))
				for i, x := range w {
					want[i] = RoundBF16(x)
				}
			}
			if !slices.Equal(rec.got[0].Data, want) {
				t.Fatalf("data differs")
			}
			if f, st := s.Received(); f != 1 || st != 0 {
				t.Fatalf("%d from the fan-out, %d from the store; want 1, 0", f, st)
			}
		})
	}
}

// A server with a user and password, or a token: the chunk connection logs
// in with the subscriber's credentials and carries the fan-out.
func TestChunkConnCredentials(t *testing.T) {
	for _, c := range []struct {
		name string
		tune func(*server.Options)
		opt  nats.Option
	}{
		{"user", func(o *server.Options) { o.Username, o.Password = "gen", "s3cret" }, nats.UserInfo("gen", "s3cret")},
		{"token", func(o *server.Options) { o.Authorization = "t0ken" }, nats.Token("t0ken")},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, url, err := startEmbeddedNATSTuned(t.TempDir(), nil, c.tune)
			if err != nil {
				t.Fatal(err)
			}
			defer ShutdownNATS(srv)
			if _, err := Connect(url); err == nil {
				t.Fatalf("connected without credentials")
			}
			pc, err := Connect(url, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			pub, err := NewWeightPublisher(context.Background(), pc, "policy")
			if err != nil {
				t.Fatal(err)
			}
			s, rec := subscribeOwn(t, url, c.opt)
			if s.raw == nil {
				t.Fatalf("chunk connection not used")
			}
			w := randomWeights(3<<19, 6)
			publishAndWait(t, pub, w, rec)
			if !slices.Equal(rec.got[0].Data, w) || s.raw.count.Load() == 0 {
				t.Fatalf("data equal %v, %d chunks on the chunk connection", slices.Equal(rec.got[0].Data, w), s.raw.count.Load())
			}
			if f, st := s.Received(); f != 1 || st != 0 {
				t.Fatalf("%d from the fan-out, %d from the store; want 1, 0", f, st)
			}
		})
	}
}

// When the chunk connection drops, the version sent meanwhile still arrives
// (from the store if need be) and the connection is dialled again: a later
// version comes from the fan-out.
func TestChunkConnRedials(t *testing.T) {
	nc := startNATS(t)
	pub := newPublisher(t, nc)
	s, rec := subscribeOwn(t, nc.ConnectedUrl())
	if s.raw == nil {
		t.Fatalf("chunk connection not used")
	}
	w := randomWeights(1<<18, 1)
	publishAndWait(t, pub, w, rec)
	s.raw.mu.Lock()
	s.raw.conn.Close()
	s.raw.mu.Unlock()
	w[0] = 42
	publishAndWait(t, pub, w, rec)
	if !slices.Equal(rec.got[1].Data, w) {
		t.Fatalf("version 2 differs")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		before, _ := s.Received()
		w[0]++
		v := publishAndWait(t, pub, w, rec)
		if !slices.Equal(rec.got[len(rec.got)-1].Data, w) {
			t.Fatalf("version %d differs", v)
		}
		if after, _ := s.Received(); after > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no version from the fan-out 20 s after the chunk connection dropped")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Release hands Data back: the next version of the same size arrives in the
// same memory, and only once (a second Release, also of a copy, does
// nothing); without it, a version keeps its own memory.
func TestWeightsRelease(t *testing.T) {
	for _, dtype := range []string{DTypeFP32, DTypeBF16} {
		t.Run(dtype, func(t *testing.T) {
			nc := startNATS(t)
			pub := newPublisher(t, nc, WithWeightsDType(dtype))
			_, rec := subscribeOn(t, nc)
			w := randomWeights(1<<18, 2)
			ptr := func(i int) *float32 { return unsafe.SliceData(rec.got[i].Data) }
			publishAndWait(t, pub, w, rec)
			w[0] = 1
			publishAndWait(t, pub, w, rec) // version 1 not released
			if ptr(0) == ptr(1) {
				t.Fatalf("version 2 arrived in version 1's memory, which was never released")
			}
			kept := slices.Clone(rec.got[1].Data)
			rec.got[1].Release()
			cp := rec.got[1]
			cp.Release()
			w[0] = 2
			publishAndWait(t, pub, w, rec)
			if ptr(2) != ptr(1) {
				t.Fatalf("version 3 did not reuse version 2's released memory")
			}
			if rec.got[2].Data[0] != 2 || slices.Equal(rec.got[2].Data, kept) {
				t.Fatalf("version 3's values are not its own")
			}
			w[0] = 3
			publishAndWait(t, pub, w, rec)
			if ptr(3) == ptr(2) {
				t.Fatalf("released memory handed out twice")
			}
			Weights{}.Release() // no subscriber: nothing to do
		})
	}
}

// decodeInto matches the value-at-a-time decoding for every length and
// alignment, fp32 and bf16.
func TestDecodeInto(t *testing.T) {
	w := randomWeights(40, 8)
	w[3], w[4] = float32(math.Inf(-1)), float32(math.NaN())
	for _, dtype := range []string{DTypeFP32, DTypeBF16} {
		blob := encodeBlob(w, dtype, nil)
		size := dtypeSize(dtype)
		for start := 0; start < 3; start++ {
			for n := 0; start+n <= len(w); n++ {
				src := make([]byte, 1+n*size)[1:] // unaligned
				copy(src, blob[start*size:(start+n)*size])
				got := make([]float32, n+1)
				got[n] = 7
				decodeInto(got, src, dtype)
				for i := 0; i < n; i++ {
					want := w[start+i]
					if dtype == DTypeBF16 {
						want = RoundBF16(want)
					}
					if math.Float32bits(got[i]) != math.Float32bits(want) {
						t.Fatalf("%s start %d n %d: value %d is %v, want %v", dtype, start, n, i, got[i], want)
					}
				}
				if got[n] != 7 {
					t.Fatalf("%s n %d: wrote past the values", dtype, n)
				}
			}
		}
	}
}

// bf16 chunks are decoded as they arrive: the assembly's values are the
// rounded ones, its CRC the blob's; a chunk of an odd number of bytes breaks
// it.
func TestFaninBF16(t *testing.T) {
	w := randomWeights(5000, 3)
	blob := encodeBlob(w, DTypeBF16, nil)
	f := newFanin()
	for off := 0; off < len(blob); off += 4096 {
		end := min(off+4096, len(blob))
		a, dst := f.target(1, off, len(blob), DTypeBF16, end-off)
		if dst == nil {
			t.Fatalf("chunk at %d dropped", off)
		}
		copy(dst, blob[off:end])
		f.filled(a, dst)
	}
	a, failed := f.state(1, time.Now())
	if a == nil || failed || a.crc != crc32Castagnoli(blob) || a.buf != nil {
		t.Fatalf("bf16 assembly: got %v, failed %v", a != nil, failed)
	}
	for i, x := range w {
		if a.values[i] != RoundBF16(x) {
			t.Fatalf("value %d: %v, want %v", i, a.values[i], RoundBF16(x))
		}
	}
	if _, dst := f.target(2, 0, 11, DTypeBF16, 11); dst != nil {
		t.Fatalf("an odd-sized bf16 chunk was accepted")
	}
	if _, failed := f.state(2, time.Now()); !failed {
		t.Fatalf("an odd-sized bf16 chunk did not break its version")
	}
}

// A bf16 blob encoded chunk by chunk (as the fan-out sends it) is the blob
// encoded at once; an fp32 one is w's memory, with nothing to encode.
func TestWireBlobInSteps(t *testing.T) {
	w := randomWeights(10001, 4)
	want := encodeBlob(w, DTypeBF16, nil)
	blob, encode := wireBlob(w, DTypeBF16, make([]byte, 5)) // scratch too small: a new buffer
	if encode == nil || len(blob) != len(want) {
		t.Fatalf("bf16: encode %v, %d bytes; want a function, %d bytes", encode != nil, len(blob), len(want))
	}
	for _, end := range []int{4096, 4096, 100, 8192, 20000, len(blob)} {
		encode(end)
		if n := min(end, len(blob)); !slices.Equal(blob[:n], want[:n]) {
			t.Fatalf("bf16 up to %d: differs", end)
		}
	}
	if blob, encode := wireBlob(w, DTypeFP32, nil); littleEndian && encode != nil || littleEndian && unsafe.SliceData(blob) != (*byte)(unsafe.Pointer(&w[0])) {
		t.Fatalf("fp32: not w's own memory")
	}
}
