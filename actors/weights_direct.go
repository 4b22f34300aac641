package actors

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// The direct path (nats.weights_direct): the learner sends each version's
// chunks itself, over a TCP connection to every subscriber that dialled it,
// instead of through nats-server. NATS still carries everything else: the
// announcement (which names the direct server, Troupe-Direct), the question
// whether anyone wants the NATS fan-out, and the object store's durable copy,
// from which a subscriber that missed chunks fetches its version as before.
//
// Why: through nats-server every chunk is received once more and copied into
// each subscriber's outbound buffer before it is sent, all on the cores of
// the server's machine; on the 2-vCPU Zen 5 VM a 124M fp32 version reached 4
// subscribers in 4.6-5.3x one loopback copy that way, while 4 loopback copies
// at once (what any fan-out over sockets to 4 costs there) took 2.2x. The
// learner's sends are written from the blob itself (writev: a frame's line
// and header, then the chunk where it lies), one goroutine per subscriber.
//
// The direct server speaks the few lines of the NATS protocol a subscriber's
// chunk connection (chunkConn) already speaks: INFO, CONNECT, SUB, PING/PONG
// and HMSG frames with the fan-out's Troupe-Chunk header, so a subscriber
// reads direct chunks with the same code, straight into place. It asks for
// the credentials (user and password, or token) of the publisher's own NATS
// connection, which the subscribers' connections then have too; a publisher
// on TLS, nkeys or JWTs cannot use it (the direct path has no TLS).

// hdrDirect is on an announcement: host:port of the publisher's direct server.
const hdrDirect = "Troupe-Direct"

// DirectOff is nats.weights_direct's value for no direct path (the default).
const DirectOff = "off"

// validPort tells whether s is a TCP port number (0 = any).
func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535
}

const (
	directHandshakeWait = 5 * time.Second  // a subscriber's CONNECT, SUB and PING
	directChunkWait     = 10 * time.Second // one chunk to one subscriber: longer is a stall
	directMaxConns      = 1024             // subscribers one direct server serves
)

// WithWeightsDirect has the publisher listen on addr (host:port; an empty or
// unspecified host listens on every interface and advertises the address the
// publisher's machine reaches its NATS server from; port 0 picks one) and
// send every version's chunks to each subscriber that dials it (see above).
// Subscribers on other machines then take the direct path; those on this
// machine keep reading the shared-memory slot.
func WithWeightsDirect(addr string) PublisherOption {
	return func(p *WeightPublisher) error {
		p.directAddr = addr
		return nil
	}
}

// directServer is a publisher's direct chunk server.
type directServer struct {
	ln        net.Listener
	advertise string    // host:port announced to subscribers
	subj      string    // the model's chunk subject
	chunk     int       // bytes per chunk
	creds     rawTarget // user and password, or token, a subscriber's CONNECT must carry (none: any)
	log       zerolog.Logger

	mu     sync.Mutex
	conns  map[*directConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// directConn is one subscriber's connection; wmu orders its writes (chunks,
// PONGs).
type directConn struct {
	c   net.Conn
	sid string
	wmu sync.Mutex
}

// startDirect listens on addr for subscribers of model's chunks; nc is the
// publisher's NATS connection, whose credentials and server address it uses.
func startDirect(nc *nats.Conn, model, addr string, log zerolog.Logger) (*directServer, error) {
	o := nc.Opts
	if o.InProcessServer == nil && !rawSpeaks(o) {
		return nil, fmt.Errorf("%w: nats.weights_direct: the direct path has no TLS, nkeys or JWTs; the learner's NATS connection uses one of them (turn nats.weights_direct off)", ErrNATS)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: nats.weights_direct %q: want host:port (e.g. :7450 or 10.0.0.5:7450): %v", ErrNATS, addr, err)
	}
	chunk, err := chunkSize(nc)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: nats.weights_direct: listen on %s: %v", ErrNATS, addr, err)
	}
	if _, p, err := net.SplitHostPort(ln.Addr().String()); err == nil {
		port = p
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = advertiseHost(nc)
	}
	d := &directServer{ln: ln, advertise: net.JoinHostPort(host, port), subj: weightsDataSubject + model, chunk: chunk,
		creds: credsOf(nc), log: log, conns: map[*directConn]struct{}{}}
	d.wg.Add(1)
	go d.accept()
	return d, nil
}

// advertiseHost is the address this machine reaches nc's server from (the
// interface a subscriber on the server's network can reach), else its host
// name.
func advertiseHost(nc *nats.Conn) string {
	if u, err := url.Parse(nc.ConnectedUrl()); err == nil && u.Host != "" {
		if c, err := net.Dial("udp", u.Host); err == nil { // no packet is sent
			defer c.Close()
			if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
				return a.IP.String()
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "127.0.0.1"
}

func (d *directServer) accept() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return // closed
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.serve(c)
		}()
	}
}

// serve shakes hands with a subscriber (INFO; CONNECT with the credentials,
// SUB to the model's chunk subject, PING answered PONG), adds it to the
// subscribers the next versions go to, and answers its PINGs until it goes.
func (d *directServer) serve(c net.Conn) {
	defer c.Close()
	info, _ := json.Marshal(map[string]any{"server_id": "troupe-weights-direct", "proto": 1, "headers": true,
		"max_payload": d.chunk + chunkRoom, "auth_required": d.creds.user != "" || d.creds.token != ""})
	c.SetDeadline(time.Now().Add(directHandshakeWait))
	if _, err := c.Write([]byte("INFO " + string(info) + "\r\n")); err != nil {
		return
	}
	br := bufio.NewReaderSize(c, 4096)
	dc := &directConn{c: c}
	refuse := func(why string) {
		d.log.Warn().Str("subscriber", c.RemoteAddr().String()).Str("why", why).Msg("weights direct connection refused")
		c.Write([]byte("-ERR '" + why + "'\r\n"))
	}
	authed := false
	for dc.sid == "" || !authed {
		line, err := rawLine(br)
		if err != nil {
			return
		}
		op, arg, _ := strings.Cut(string(line), " ")
		switch strings.ToUpper(op) {
		case "CONNECT":
			var cc struct {
				User  string `json:"user"`
				Pass  string `json:"pass"`
				Token string `json:"auth_token"`
			}
			want := d.creds
			open := want.user == "" && want.token == ""
			if json.Unmarshal([]byte(arg), &cc) != nil || (!open && (cc.User != want.user || cc.Pass != want.password || cc.Token != want.token)) {
				refuse("Authorization Violation")
				return
			}
			authed = true
		case "SUB":
			f := strings.Fields(arg)
			if len(f) != 2 || f[0] != d.subj {
				refuse("this server sends only " + d.subj)
				return
			}
			dc.sid = f[1]
		case "PING":
			if _, err := c.Write([]byte("PONG\r\n")); err != nil {
				return
			}
		case "PONG":
		default:
			refuse("unexpected " + op)
			return
		}
	}
	// The subscriber's PING follows its SUB: answered below, once it is
	// registered, so that a version published after dialRaw returned reaches
	// it.
	d.mu.Lock()
	if d.closed || len(d.conns) >= directMaxConns {
		d.mu.Unlock()
		refuse("no room for another subscriber")
		return
	}
	d.conns[dc] = struct{}{}
	d.mu.Unlock()
	defer d.drop(dc)
	d.log.Debug().Str("subscriber", c.RemoteAddr().String()).Msg("weights direct subscriber connected")
	c.SetDeadline(time.Time{})
	for {
		line, err := rawLine(br)
		if err != nil {
			return
		}
		op, _, _ := strings.Cut(string(line), " ")
		if strings.EqualFold(op, "PING") {
			dc.wmu.Lock()
			c.SetWriteDeadline(time.Now().Add(directHandshakeWait))
			_, err := c.Write([]byte("PONG\r\n"))
			dc.wmu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

func (d *directServer) drop(dc *directConn) {
	d.mu.Lock()
	delete(d.conns, dc)
	d.mu.Unlock()
	dc.c.Close()
}

// subscribers is how many subscribers are connected.
func (d *directServer) subscribers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// send writes version v's blob as chunks to every connected subscriber at
// once, one goroutine each, and returns how many got all of it; a
// subscriber whose connection fails, or takes no chunk for directChunkWait,
// is dropped (it fetches the version from the object store and dials again).
//
// The first subscriber's goroutine also folds each chunk into the blob's
// CRC-32C just before it sends it (in cache then, rather than a pass of its
// own over the blob): crc covers blob[:crcEnd], the rest is the caller's.
func (d *directServer) send(ctx context.Context, v int64, dtype string, blob []byte) (sent int, crc uint32, crcEnd int) {
	d.mu.Lock()
	conns := make([]*directConn, 0, len(d.conns))
	for dc := range d.conns {
		conns = append(conns, dc)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	var ok atomic.Int64
	total := " " + strconv.Itoa(len(blob)) + " " + dtype
	for i, dc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fold func(chunk []byte)
			if i == 0 {
				fold = func(chunk []byte) {
					crc = crc32.Update(crc, castagnoli, chunk)
					crcEnd += len(chunk)
				}
			}
			err := d.sendTo(ctx, dc, v, total, blob, fold)
			if err != nil {
				d.log.Debug().Err(err).Str("subscriber", dc.c.RemoteAddr().String()).Int64("version", v).Msg("weights direct send failed; dropping the subscriber")
				d.drop(dc)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	return int(ok.Load()), crc, crcEnd
}

var crlf = []byte("\r\n")

// sendTo writes blob's chunks to one subscriber as HMSG frames, handing
// each to fold (if not nil) just before.
func (d *directServer) sendTo(ctx context.Context, dc *directConn, v int64, total string, blob []byte, fold func([]byte)) error {
	dc.wmu.Lock()
	defer dc.wmu.Unlock()
	stop := context.AfterFunc(ctx, func() { dc.c.SetWriteDeadline(time.Now()) })
	defer stop()
	vs := strconv.FormatInt(v, 10)
	for off := 0; off < len(blob); off += d.chunk {
		end := min(off+d.chunk, len(blob))
		hdr := "NATS/1.0\r\n" + hdrChunk + ": " + vs + " " + strconv.Itoa(off) + total + "\r\n\r\n"
		line := "HMSG " + d.subj + " " + dc.sid + " " + strconv.Itoa(len(hdr)) + " " + strconv.Itoa(len(hdr)+end-off) + "\r\n"
		bufs := net.Buffers{[]byte(line + hdr), blob[off:end], crlf}
		if err := ctx.Err(); err != nil {
			return err
		}
		if fold != nil {
			fold(blob[off:end])
		}
		dc.c.SetWriteDeadline(time.Now().Add(directChunkWait))
		if _, err := bufs.WriteTo(dc.c); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	return nil
}

// close stops listening and drops every subscriber.
func (d *directServer) close() {
	d.mu.Lock()
	d.closed = true
	for dc := range d.conns {
		dc.c.Close()
	}
	d.mu.Unlock()
	d.ln.Close()
	d.wg.Wait()
}

// directRetryWait is how long a subscriber whose direct dial failed takes
// the NATS fan-out before it dials again.
const directRetryWait = 30 * time.Second

// onDirect tells whether the subscriber's chunks come from a direct server.
func (s *WeightSubscriber) onDirect() bool {
	s.rawMu.Lock()
	defer s.rawMu.Unlock()
	return s.directAddr != ""
}

// chunkSource points the subscriber's chunk connection, after version a
// (received from from), at a's direct server when a names one and the
// subscriber does not read this machine's slot, else at the NATS server.
// The old connection is stopped before the new one is dialled: one
// goroutine at a time fills the fanin. Only the raw chunk connection can go
// direct (a subscriber on nats.go's path stays there).
func (s *WeightSubscriber) chunkSource(ctx context.Context, a *announcement, from int) {
	want := ""
	if a.direct != "" && !s.noDirect && from != fromShm {
		want = a.direct
	}
	s.rawMu.Lock()
	defer s.rawMu.Unlock()
	if ctx.Err() != nil || s.chunks != nil || (want == s.directAddr && s.raw != nil) {
		return
	}
	if want != "" && want != s.directAddr && time.Now().Before(s.directRetry) {
		if s.raw != nil {
			return // on the NATS fan-out until the retry
		}
		want = ""
	}
	if s.raw != nil {
		s.raw.stop()
		s.raw = nil
	}
	subj := weightsDataSubject + s.model
	if want != "" {
		t, err := rawTargetOf(s.nc) // the credentials; the direct server asks for the publisher's
		if err == nil {
			t.addr = want
			var conn net.Conn
			var br *bufio.Reader
			if conn, br, err = dialRaw(ctx, t, subj); err == nil {
				s.raw, s.directAddr = goChunkConn(s.nc, true, conn, br, t, subj, s.fan, s.log), want
				if _, err := s.wantChunks(false); err != nil {
					s.log.Debug().Err(err).Msg("weights: could not stop asking for chunks")
				}
				s.log.Info().Str("model", s.model).Int64("version", a.Version).Str("direct", want).
					Msg("weights come straight from the learner from the next version")
				return
			}
		}
		s.directRetry = time.Now().Add(directRetryWait)
		s.log.Info().Err(err).Str("direct", want).Msg("weights: the learner's direct path is out of reach; taking the NATS fan-out")
	}
	if s.directAddr != "" {
		s.log.Info().Str("model", s.model).Int64("version", a.Version).Msg("weights come over the NATS fan-out again")
	}
	s.directAddr = ""
	raw, err := startChunkConn(ctx, s.nc, subj, s.fan, s.log)
	if err != nil {
		s.log.Warn().Err(err).Msg("weights chunk connection failed; versions come from the object store until it is back")
		return
	}
	s.raw = raw
	if from != fromShm {
		if _, err := s.wantChunks(true); err != nil {
			s.log.Debug().Err(err).Msg("weights: could not ask for chunks")
		}
	}
}
