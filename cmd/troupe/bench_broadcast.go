package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/troupe-rl/troupe/actors"
)

// `troupe bench --broadcast N` measures the weight broadcast of issue 6: the
// time from the learner's Publish of version v+1 until every one of K
// subscribers (each on its own NATS connection, as generators are) has had its
// onWeights called with version v+1, next to the time one copy of the same
// bytes takes over loopback TCP, timed just before each version. The aim is
// broadcast <= 3x copy with K = 4.
//
// Everything runs in this one process on 127.0.0.1 (an embedded JetStream
// server in a temporary directory), so the figures share the machine's cores.
// Two transports are timed, each with fp32 and bf16 on the wire:
//   - shm: what subscribers on the learner's machine get (the publisher's
//     shared-memory slot; nats.weights_shm: auto, the default), where the
//     store's durable copy follows once they have read it;
//   - direct: what subscribers on other machines get with
//     nats.weights_direct (the learner sends the chunks to each over TCP
//     itself; the announcement and the store's copy stay on NATS);
//   - nats: what subscribers on other machines get otherwise (the NATS fan-out; here
//     over loopback, so the server's copies to K connections, the K reads
//     and the store's copy all compete for the same cores). Beside it the
//     socket floor is timed: K loopback TCP copies of the fp32 bytes at
//     once, what any fan-out over sockets to K costs on this machine before
//     a protocol or a server adds to it (on the 2-vCPU Zen 5 VM ~2.2x one
//     copy: a single stream keeps the two cores only partly busy).

// broadcastRounds is how many versions are timed after the warm-up versions.
const broadcastRounds = 3

// broadcastWarmup is how many versions go before the timed ones: one per
// shared-memory slot, so that every timed version finds its slot's pages
// already touched by the publisher and mapped by every subscriber, as in a
// run past its first versions. A page's first touch is the costly part on a
// VM that maps guest memory lazily: on the 2-vCPU VM the first write to a
// fresh 4 KiB page cost ~8 us (a 500 MB slot ~1 s of CPU), so the first
// version into the second slot, once timed, took 2.9-3.6 s to reach 4
// subscribers where the next ones took 180-310 ms.
const broadcastWarmup = actors.ShmSlots

// broadcastModel is the model name the benchmark publishes under.
const broadcastModel = "bench-broadcast"

// broadcastRoundTimeout bounds one version's delivery to all subscribers.
const broadcastRoundTimeout = 10 * time.Minute

// Transports the broadcast benchmark times.
const (
	transportShm    = "shm"
	transportNATS   = "nats"
	transportDirect = "direct"
)

// broadcastCase is one transport and wire dtype's timed versions.
type broadcastCase struct {
	Transport string          // transportShm or transportNATS
	DType     string          // actors.DTypeFP32 or DTypeBF16
	Hold      []time.Duration // per timed version: Publish start -> all K delivered
	Publish   []time.Duration // per timed version: Publish start -> Publish returned
	Stored    []time.Duration // per timed version: Publish start -> the durable copy stored (Flush returned)
	CPU       []float64       // per timed version: process CPU seconds (user+sys) until stored and all K held it
	CPUHold   []float64       // per timed version: process CPU seconds until all K held it
	Fanout    int64           // deliveries from the fan-out, all versions
	Store     int64           // deliveries fetched from the object store instead
	Shm       int64           // deliveries read from a shared-memory slot
	Copy      []time.Duration // per timed version: one loopback TCP copy of the fp32 bytes just before it
	CopyCPU   []float64       // per timed version: process CPU seconds of that copy
	// Floor, NATS and direct cases: per timed version, K loopback TCP copies of the
	// fp32 bytes at once (one sender goroutine and one reader per
	// connection), right after Copy: what any socket fan-out to K costs on
	// this machine before a protocol or a server adds to it.
	Floor []time.Duration
}

// broadcastResult is what runBroadcastBench measured.
type broadcastResult struct {
	Params      int             // float32 values per version, e.g. 124439808
	Subscribers int             // K, e.g. 4
	Bytes       int             // fp32 bytes per version (4 * Params)
	Cases       []broadcastCase // shm fp32, shm bf16 (where the machine has a tmpfs), nats fp32, nats bf16
	Slow        int64           // server-side slow-consumer disconnects
	PeakRSSMB   float64         // this process's peak resident set (VmHWM), 0 if unknown
}

// runBroadcastBench runs the benchmark and writes one JSON line per case to
// jsonOut (bench's convention) and a short table to tableOut.
func runBroadcastBench(params, subscribers int, jsonOut, tableOut io.Writer) error {
	if params < 1 || subscribers < 1 {
		return fmt.Errorf("%w: --broadcast must be > 0 and --subscribers >= 1", errUsage)
	}
	res, err := benchBroadcast(params, subscribers)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(jsonOut)
	for i := range res.Cases {
		if err := enc.Encode(res.json(&res.Cases[i])); err != nil {
			return err
		}
	}
	_, err = io.WriteString(tableOut, res.table())
	return err
}

// benchBroadcastChild runs the broadcast measurement (--with-broadcast) in a
// child process, `troupe bench --broadcast N --subscribers K`, and adds its
// result lines to out; the child's log and table go to stderr as the run's
// own. Its peak RSS is then its own, and its ~10 GB leave with it (runBench
// still runs it last: the measurements after it ran slower either way).
func benchBroadcastChild(out *benchOut, params, subscribers int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "bench", "--broadcast", fmt.Sprint(params), "--subscribers", fmt.Sprint(subscribers))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("--with-broadcast: the broadcast child failed: %w", err)
	}
	lw := &benchLineWriter{out: out}
	if _, err := lw.Write(stdout); err != nil {
		return err
	}
	return lw.flush()
}

func benchBroadcast(params, subscribers int) (*broadcastResult, error) {
	res := &broadcastResult{Params: params, Subscribers: subscribers, Bytes: 4 * params}
	rng := rand.New(rand.NewPCG(6, 124))
	w := make([]float32, params)
	for i := range w {
		w[i] = rng.Float32()*0.2 - 0.1
	}

	srv, url, err := actors.StartEmbeddedNATS("")
	if err != nil {
		return nil, err
	}
	defer actors.ShutdownNATS(srv)
	// The loopback copy the broadcast is compared with runs just before each
	// timed version (broadcastRun), so that both sides of the ratio see the
	// machine in the same state: on the shared 2-vCPU VM one copy took
	// 80-192 ms within a single run, and both it and the broadcast are
	// memory-bound. One untimed copy first touches the buffers' pages.
	blob := actors.EncodeWeights(w)
	// The floor's K destinations (the single copy reads into the first);
	// untimed copies first touch their pages.
	dsts := make([][]byte, subscribers)
	for i := range dsts {
		dsts[i] = make([]byte, len(blob))
	}
	if _, err := loopbackFanout(blob, dsts); err != nil {
		return nil, err
	}
	transports := []string{transportNATS, transportDirect}
	if actors.DefaultShmDir() != "" {
		transports = []string{transportShm, transportNATS, transportDirect}
	}
	for _, tr := range transports {
		for _, dtype := range []string{actors.DTypeFP32, actors.DTypeBF16} {
			c := broadcastCase{Transport: tr, DType: dtype}
			if err := broadcastRun(url, &c, subscribers, w, blob, dsts); err != nil {
				return nil, err
			}
			res.Cases = append(res.Cases, c)
		}
	}
	res.Slow = srv.NumSlowConsumers()
	res.PeakRSSMB = peakRSSMB()
	return res, nil
}

// broadcastRun publishes broadcastWarmup warm-up versions and
// broadcastRounds timed ones of w with c's transport and dtype to
// subscribers fresh subscribers (each on its own connection, as generators
// are) and records, per timed version, a loopback copy of blob (w's fp32
// bytes) into dsts[0] timed just before it (for the NATS fan-out also the
// socket floor, blob into every one of dsts at once), then the time from Publish to all
// subscribers holding it, to Publish returning and to the durable copy being
// stored, and the CPU used. Each case gets its
// own model name (a fresh store history).
func broadcastRun(url string, c *broadcastCase, subscribers int, w []float32, blob []byte, dsts [][]byte) error {
	model := broadcastModel + "-" + c.Transport + "-" + c.DType
	// Over TCP, as a learner reaches the external server that subscribers
	// on other machines use (a run's embedded server listens on 127.0.0.1
	// only; its learner publishes in-process, see actors.ConnectInProcess:
	// 10-15% less time to all holding an fp32 version in this bench).
	pubConn, err := actors.Connect(url)
	if err != nil {
		return err
	}
	defer pubConn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	opts := []actors.PublisherOption{actors.WithWeightsDType(c.DType), actors.WithWeightsLog(log.With().Str("bench", "broadcast").Logger())}
	switch c.Transport {
	case transportShm:
		opts = append(opts, actors.WithWeightsShm(actors.DefaultShmDir()))
	case transportDirect:
		opts = append(opts, actors.WithWeightsDirect("127.0.0.1:0"))
	}
	pub, err := actors.NewWeightPublisher(ctx, pubConn, model, opts...)
	if err != nil {
		return err
	}
	defer pub.Close()

	// A delivery is (subscriber, version, values); Data itself is handed
	// back at once (Release: a generator does so once it has copied the
	// values into its model), so K decoded copies do not pile up across
	// versions and each subscriber receives the next one into the same
	// memory.
	type delivery struct {
		sub     int
		version int64
		n       int
		at      time.Time // when onWeights ran: the subscriber holds the version
	}
	got := make(chan delivery, 4*subscribers)
	subLog := log.With().Str("bench", "broadcast").Logger()
	for i := 0; i < subscribers; i++ {
		nc, err := actors.Connect(url)
		if err != nil {
			return err
		}
		defer nc.Close()
		var sopts []actors.SubscribeOption
		if c.Transport != transportShm {
			sopts = append(sopts, actors.WithoutShm()) // as on another machine
		}
		s, err := actors.SubscribeWeights(nc, model, subLog, func(x actors.Weights) {
			at := time.Now()
			x.Release()
			got <- delivery{sub: i, version: x.Version, n: len(x.Data), at: at}
		}, sopts...)
		if err != nil {
			return err
		}
		defer func() {
			s.Stop()
			f, st := s.Received()
			c.Fanout += f
			c.Store += st
			c.Shm += s.ReceivedShm()
		}()
	}

	// waitAll waits until every subscriber has delivered version v and
	// returns when the last one did (Publish may still be storing the
	// durable copy then), or until failed delivers Publish's error.
	waitAll := func(v int64, failed <-chan error) (time.Time, error) {
		timeout := time.After(broadcastRoundTimeout)
		have := make([]bool, subscribers)
		var last time.Time
		for left := subscribers; left > 0; {
			select {
			case d := <-got:
				if d.version != v {
					return last, fmt.Errorf("bench: subscriber %d delivered version %d, want %d", d.sub, d.version, v)
				}
				if d.n != len(w) {
					return last, fmt.Errorf("bench: subscriber %d delivered %d values of version %d, want %d", d.sub, d.n, v, len(w))
				}
				if !have[d.sub] {
					have[d.sub] = true
					left--
				}
				if d.at.After(last) {
					last = d.at
				}
			case err := <-failed:
				return last, err
			case <-timeout:
				return last, fmt.Errorf("bench: version %d not at all %d subscribers after %v", v, subscribers, broadcastRoundTimeout)
			}
		}
		return last, nil
	}

	// Versions 1..broadcastWarmup are the warm-up: store and consumers
	// created, first chunks allocated, pages touched, every slot mapped.
	for v := 1; v <= broadcastWarmup; v++ {
		log.Info().Int("params", len(w)).Int("subscribers", subscribers).Str("transport", c.Transport).Str("dtype", c.DType).Int("version", v).Msg("bench: broadcast warm-up")
		w[0] = float32(-v)
		if _, err := pub.Publish(ctx, 0, false, w); err != nil {
			return err
		}
		if _, err := waitAll(pub.Version(), nil); err != nil {
			return err
		}
		if err := pub.Flush(ctx); err != nil {
			return err
		}
	}
	type published struct {
		at, stored time.Time
		err        error
	}
	for r := 0; r < broadcastRounds; r++ {
		c0 := cpuSeconds()
		d, err := loopbackFanout(blob, dsts[:1])
		if err != nil {
			return err
		}
		c.Copy = append(c.Copy, d)
		c.CopyCPU = append(c.CopyCPU, cpuSeconds()-c0)
		if c.Transport != transportShm {
			d, err := loopbackFanout(blob, dsts)
			if err != nil {
				return err
			}
			c.Floor = append(c.Floor, d)
		}
		w[0] = float32(r + 1) // each version differs from the last
		v := pub.Version() + 1
		log.Info().Int64("version", v).Str("transport", c.Transport).Str("dtype", c.DType).Msg("bench: broadcast")
		// Publish on its own goroutine, as the learner does between steps,
		// so that the CPU used until every subscriber holds v is read then.
		done, failed := make(chan published, 1), make(chan error, 1)
		t0, c0 := time.Now(), cpuSeconds()
		go func() {
			_, err := pub.Publish(ctx, r+1, r == broadcastRounds-1, w)
			at := time.Now()
			if err == nil {
				err = pub.Flush(ctx)
			}
			if err != nil {
				failed <- err
			}
			done <- published{at, time.Now(), err}
		}()
		last, err := waitAll(v, failed)
		cHold := cpuSeconds()
		p := <-done
		if p.err != nil {
			return fmt.Errorf("bench: publish version %d: %w", v, p.err)
		}
		if err != nil {
			return err
		}
		c.Hold = append(c.Hold, last.Sub(t0))
		c.Publish = append(c.Publish, p.at.Sub(t0))
		c.Stored = append(c.Stored, p.stored.Sub(t0))
		c.CPUHold = append(c.CPUHold, cHold-c0)
		c.CPU = append(c.CPU, cpuSeconds()-c0)
	}
	return nil
}

// loopbackFanout sends src over len(dsts) TCP connections on 127.0.0.1 at
// once, into every one of dsts (a writer goroutine and a reader goroutine per
// connection), and returns the time from the first write to the last byte
// read. With one dst it is one copy over loopback TCP, the broadcast's unit;
// with K it is the floor of any socket fan-out to K on this machine: every
// byte is written into and read out of the kernel K times, on the same cores.
func loopbackFanout(src []byte, dsts [][]byte) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: loopback listen: %v", err)
	}
	defer ln.Close()
	// Every connection is set up before the clock starts.
	senders := make([]net.Conn, 0, len(dsts))
	receivers := make([]net.Conn, 0, len(dsts))
	defer func() {
		for _, c := range append(senders, receivers...) {
			c.Close()
		}
	}()
	for range dsts {
		s, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return 0, fmt.Errorf("bench: loopback dial: %v", err)
		}
		senders = append(senders, s)
		r, err := ln.Accept()
		if err != nil {
			return 0, fmt.Errorf("bench: loopback accept: %v", err)
		}
		receivers = append(receivers, r)
	}
	errs := make(chan error, 2*len(dsts))
	t0 := time.Now()
	for i, dst := range dsts {
		go func() {
			_, err := senders[i].Write(src) // one Write: the kernel splits it as it likes
			if err != nil {
				err = fmt.Errorf("bench: loopback write: %v", err)
			}
			errs <- err
		}()
		go func() {
			_, err := io.ReadFull(receivers[i], dst)
			if err != nil {
				err = fmt.Errorf("bench: loopback read: %v", err)
			}
			errs <- err
		}()
	}
	var first error
	for range 2 * len(dsts) {
		if err := <-errs; err != nil && first == nil {
			first = err
			for _, c := range append(senders, receivers...) {
				c.Close() // unblock the others
			}
		}
	}
	return time.Since(t0), first
}

// peakRSSMB is the process's peak resident set from /proc (Linux), 0 elsewhere.
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err == nil {
				return round1(kb / 1024)
			}
		}
	}
	return 0
}

// cpuSeconds is this process's CPU time so far (user + system, from
// /proc/self/stat in clock ticks of 10 ms), 0 where that is not readable. CPU
// time is what a loaded 2-core machine cannot hide: wall times there move
// with whatever else runs.
func cpuSeconds() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) closing ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return (ut + st) / 100
}

func medianFloat(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

func minDuration(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d[1:] {
		m = min(m, x)
	}
	return m
}

func ms(d time.Duration) float64 { return round1(float64(d.Microseconds()) / 1e3) }

// gbps is bytes per second in GB/s (1e9 bytes).
func gbps(bytes int, d time.Duration) float64 { return round2(float64(bytes) / d.Seconds() / 1e9) }

// benchName is the JSON line's "bench" for case c: broadcast (fp32) and
// broadcast_bf16 for the first transport timed (shm where the machine has
// it), broadcast_nats and broadcast_nats_bf16 for the fan-out after it.
func (r *broadcastResult) benchName(c *broadcastCase) string {
	name := "broadcast"
	if c.Transport != r.Cases[0].Transport {
		name += "_" + c.Transport
	}
	if c.DType != actors.DTypeFP32 {
		name += "_" + c.DType
	}
	return name
}

// transportText says what a case's subscribers stand for.
func transportText(transport string) string {
	switch transport {
	case transportShm:
		return "on the learner's machine: shared-memory slot (nats.weights_shm: auto), announced on NATS, durable copy after"
	case transportDirect:
		return "as on other machines: chunks straight from the learner over TCP (nats.weights_direct), announced on NATS + jetstream object store copy (embedded, 127.0.0.1)"
	}
	return "as on other machines: nats core fan-out + jetstream object store copy (embedded, 127.0.0.1)"
}

// ratio is c's median time to all holding a version over the median of the
// loopback copies of the fp32 bytes timed beside its versions.
func (r *broadcastResult) ratio(c *broadcastCase) float64 {
	return round2(medianDuration(c.Hold).Seconds() / medianDuration(c.Copy).Seconds())
}

func (r *broadcastResult) json(c *broadcastCase) benchResult {
	b, cp := medianDuration(c.Hold), medianDuration(c.Copy)
	bytes := dtypeBytes(c.DType) * r.Params
	line := benchResult{"impl": "troupe", "bench": r.benchName(c), "transport": c.Transport, "transport_detail": transportText(c.Transport),
		"dtype": c.DType, "params": r.Params, "bytes": bytes, "copy_bytes": r.Bytes,
		"subscribers": r.Subscribers, "rounds": len(c.Hold),
		"broadcast_ms_min": ms(minDuration(c.Hold)), "broadcast_ms_median": ms(b),
		"publish_ms_median": ms(medianDuration(c.Publish)),
		"stored_ms_median":  ms(medianDuration(c.Stored)),
		"copy_ms_min":       ms(minDuration(c.Copy)), "copy_ms_median": ms(cp),
		"ratio": r.ratio(c), "target_ratio": 3.0,
		// one version's bytes per second, and all K copies' bytes per second
		"broadcast_gb_per_s":           gbps(bytes, b),
		"broadcast_aggregate_gb_per_s": gbps(bytes*r.Subscribers, b),
		"copy_gb_per_s":                gbps(r.Bytes, cp),
		"deliveries_fanout":            c.Fanout,
		"deliveries_store":             c.Store,
		"deliveries_shm":               c.Shm,
		"slow_consumers":               r.Slow,
		"cpu_s_per_version_median":     round2(medianFloat(c.CPU)),
		"cpu_s_to_hold_median":         round2(medianFloat(c.CPUHold)),
		"copy_cpu_s_median":            round2(medianFloat(c.CopyCPU)),
	}
	if len(c.Floor) > 0 {
		// The socket floor beside this case's copies: K copies at once over
		// one copy, and this case's broadcast over the floor.
		f := medianDuration(c.Floor)
		line["socket_floor_ms_median"] = ms(f)
		line["socket_floor_ratio"] = round2(f.Seconds() / cp.Seconds())
		line["broadcast_over_floor"] = round2(b.Seconds() / f.Seconds())
	}
	if r.PeakRSSMB > 0 {
		line["peak_rss_mb"] = r.PeakRSSMB
	}
	return line
}

func dtypeBytes(dtype string) int {
	if dtype == actors.DTypeBF16 {
		return 2
	}
	return 4
}

// copies is every case's loopback copies and their CPU seconds.
func (r *broadcastResult) copies() (d []time.Duration, cpu []float64) {
	for i := range r.Cases {
		d, cpu = append(d, r.Cases[i].Copy...), append(cpu, r.Cases[i].CopyCPU...)
	}
	return d, cpu
}

func (r *broadcastResult) table() string {
	var b strings.Builder
	all, allCPU := r.copies()
	cm := medianDuration(all)
	fmt.Fprintf(&b, "weight broadcast: %d params (%.1f MB fp32), %d subscribers, %d versions timed per case\n",
		r.Params, float64(r.Bytes)/1e6, r.Subscribers, broadcastRounds)
	fmt.Fprintf(&b, "  %-44s %10s %10s %10s %10s %10s\n", "publish -> all hold v+1", "min ms", "median ms", "stored ms", "copy ms", "x copy")
	for i := range r.Cases {
		c := &r.Cases[i]
		bm := medianDuration(c.Hold)
		fmt.Fprintf(&b, "  %-44s %10.1f %10.1f %10.1f %10.1f %10.2f\n", fmt.Sprintf("%s, %s on the wire", c.Transport, c.DType),
			ms(minDuration(c.Hold)), ms(bm), ms(medianDuration(c.Stored)), ms(medianDuration(c.Copy)), r.ratio(c))
	}
	fmt.Fprintf(&b, "  %-44s %10.1f %10.1f\n", "one copy of the fp32 bytes, loopback TCP, all", ms(minDuration(all)), ms(cm))
	for i := range r.Cases {
		if c := &r.Cases[i]; len(c.Floor) > 0 {
			f := medianDuration(c.Floor)
			fmt.Fprintf(&b, "  %-44s %10.1f %10.1f %10s %10.1f %10.2f\n", fmt.Sprintf("%d copies at once, loopback TCP (%s %s)", r.Subscribers, c.Transport, c.DType),
				ms(minDuration(c.Floor)), ms(f), "", ms(medianDuration(c.Copy)), round2(f.Seconds()/medianDuration(c.Copy).Seconds()))
		}
	}
	for i := range r.Cases { // shm first where timed, then nats
		if c := &r.Cases[i]; c.DType == actors.DTypeFP32 {
			verdict := "meets"
			if r.ratio(c) > 3 {
				verdict = "misses"
			}
			fmt.Fprintf(&b, "  broadcast / copy (medians), %s fp32: %.2fx (%s the <= 3x aim)\n", c.Transport, r.ratio(c), verdict)
		}
	}
	for i := range r.Cases {
		c := &r.Cases[i]
		fmt.Fprintf(&b, "  CPU per %s %s version (publish, %d subscribers, store copy): %.2f s, %.2f s of it until all hold it\n",
			c.Transport, c.DType, r.Subscribers, medianFloat(c.CPU), medianFloat(c.CPUHold))
	}
	fmt.Fprintf(&b, "  one loopback copy: %.2f CPU-s\n", medianFloat(allCPU))
	for i := range r.Cases {
		c := &r.Cases[i]
		fmt.Fprintf(&b, "  deliveries, %s %s: %d from a shared-memory slot, %d from the fan-out, %d from the object store\n",
			c.Transport, c.DType, c.Shm, c.Fanout, c.Store)
	}
	fmt.Fprintf(&b, "  slow-consumer disconnects: %d\n", r.Slow)
	if r.PeakRSSMB > 0 {
		fmt.Fprintf(&b, "  peak RSS: %.0f MB\n", r.PeakRSSMB)
	}
	return b.String()
}
