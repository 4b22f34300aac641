package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
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
// bytes takes over loopback TCP. The aim is broadcast <= 3x copy with K = 4.
//
// Everything runs in this one process on 127.0.0.1 (an embedded JetStream
// server in a temporary directory), so the figures share the machine's cores:
// publisher, server (which copies every chunk to K connections and stores the
// durable copy) and the K subscribers' reads all compete. The same rounds run
// twice, fp32 on the wire (the ratio that counts) and bf16.

// broadcastRounds is how many versions are timed after the warm-up version.
const broadcastRounds = 3

// broadcastModel is the model name the benchmark publishes under.
const broadcastModel = "bench-broadcast"

// broadcastRoundTimeout bounds one version's delivery to all subscribers.
const broadcastRoundTimeout = 10 * time.Minute

// broadcastResult is what runBroadcastBench measured.
type broadcastResult struct {
	Params      int             // float32 values per version, e.g. 124439808
	Subscribers int             // K, e.g. 4
	Bytes       int             // fp32 bytes per version (4 * Params)
	Broadcast   []time.Duration // per timed version: Publish start -> all K delivered (fp32)
	Publish     []time.Duration // per timed version: Publish start -> Publish returned (fan-out, announce, durable put; may end after Broadcast)
	BF16        []time.Duration // as Broadcast, with bf16 on the wire (half the bytes)
	BF16Publish []time.Duration // as Publish, bf16
	Copy        []time.Duration // per repeat: first write -> last byte read, loopback TCP
	CPU         []float64       // per timed fp32 version: process CPU seconds (user+sys) from Publish until it returned and all K held it
	CPUHold     []float64       // per timed fp32 version: process CPU seconds from Publish until all K held it (the store put only as far as it got meanwhile)
	BF16CPU     []float64       // as CPU, bf16
	BF16CPUHold []float64       // as CPUHold, bf16
	CopyCPU     []float64       // per repeat: process CPU seconds of one loopback copy
	Fanout      int64           // deliveries from the fan-out, all versions and dtypes
	Store       int64           // deliveries fetched from the object store instead
	Slow        int64           // server-side slow-consumer disconnects
	PeakRSSMB   float64         // this process's peak resident set (VmHWM), 0 if unknown
}

// runBroadcastBench runs the benchmark and writes one JSON line to jsonOut
// (bench's convention) and a short table to tableOut.
func runBroadcastBench(params, subscribers int, jsonOut, tableOut io.Writer) error {
	if params < 1 || subscribers < 1 {
		return fmt.Errorf("%w: --broadcast must be > 0 and --subscribers >= 1", errUsage)
	}
	res, err := benchBroadcast(params, subscribers)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(jsonOut)
	for _, line := range []benchResult{res.json(), res.jsonBF16()} {
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	_, err = io.WriteString(tableOut, res.table())
	return err
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
	for _, dtype := range []string{actors.DTypeFP32, actors.DTypeBF16} {
		m, err := broadcastRun(url, dtype, subscribers, w, res)
		if err != nil {
			return nil, err
		}
		if dtype == actors.DTypeFP32 {
			res.Broadcast, res.Publish, res.CPU, res.CPUHold = m.hold, m.publish, m.cpu, m.cpuHold
		} else {
			res.BF16, res.BF16Publish, res.BF16CPU, res.BF16CPUHold = m.hold, m.publish, m.cpu, m.cpuHold
		}
	}
	res.Slow = srv.NumSlowConsumers()

	log.Info().Int("bytes", res.Bytes).Msg("bench: loopback TCP copy")
	blob := actors.EncodeWeights(w)
	w = nil
	dst := make([]byte, len(blob))
	for r := 0; r < broadcastRounds+1; r++ { // the first is a warm-up
		c0 := cpuSeconds()
		d, err := loopbackCopy(blob, dst)
		if err != nil {
			return nil, err
		}
		if r > 0 {
			res.Copy = append(res.Copy, d)
			res.CopyCPU = append(res.CopyCPU, cpuSeconds()-c0)
		}
	}
	res.PeakRSSMB = peakRSSMB()
	return res, nil
}

// broadcastTimes is what broadcastRun measured, per timed version.
type broadcastTimes struct {
	hold    []time.Duration // Publish start -> all subscribers hold the version
	publish []time.Duration // Publish start -> Publish returned (the store put done)
	cpu     []float64       // process CPU seconds until both
	cpuHold []float64       // process CPU seconds until all hold it
}

// broadcastRun publishes a warm-up version and broadcastRounds timed ones
// of w in dtype to subscribers fresh subscribers (each on its own
// connection, as generators are) and returns, per timed version, the time
// from Publish to all subscribers holding it, Publish's own time, and the
// CPU used. Each dtype gets its own model name (a fresh store history).
func broadcastRun(url, dtype string, subscribers int, w []float32, res *broadcastResult) (*broadcastTimes, error) {
	model := broadcastModel + "-" + dtype
	pubConn, err := actors.Connect(url)
	if err != nil {
		return nil, err
	}
	defer pubConn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	pub, err := actors.NewWeightPublisher(ctx, pubConn, model, actors.WithWeightsDType(dtype))
	if err != nil {
		return nil, err
	}

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
			return nil, err
		}
		defer nc.Close()
		s, err := actors.SubscribeWeights(nc, model, subLog, func(x actors.Weights) {
			at := time.Now()
			x.Release()
			got <- delivery{sub: i, version: x.Version, n: len(x.Data), at: at}
		})
		if err != nil {
			return nil, err
		}
		defer func() {
			s.Stop()
			f, st := s.Received()
			res.Fanout += f
			res.Store += st
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

	// Version 1 is the warm-up: store and consumers created, first chunks
	// allocated, pages touched.
	log.Info().Int("params", len(w)).Int("subscribers", subscribers).Str("dtype", dtype).Msg("bench: broadcast warm-up (version 1)")
	if _, err := pub.Publish(ctx, 0, false, w); err != nil {
		return nil, err
	}
	if _, err := waitAll(pub.Version(), nil); err != nil {
		return nil, err
	}
	m := &broadcastTimes{}
	type published struct {
		at  time.Time
		err error
	}
	for r := 0; r < broadcastRounds; r++ {
		w[0] = float32(r + 1) // each version differs from the last
		v := pub.Version() + 1
		log.Info().Int64("version", v).Str("dtype", dtype).Msg("bench: broadcast")
		// Publish on its own goroutine, as the learner does between steps,
		// so that the CPU used until every subscriber holds v is read then.
		done, failed := make(chan published, 1), make(chan error, 1)
		t0, c0 := time.Now(), cpuSeconds()
		go func() {
			_, err := pub.Publish(ctx, r+1, r == broadcastRounds-1, w)
			if err != nil {
				failed <- err
			}
			done <- published{time.Now(), err}
		}()
		last, err := waitAll(v, failed)
		cHold := cpuSeconds()
		p := <-done
		if p.err != nil {
			return nil, fmt.Errorf("bench: publish version %d: %w", v, p.err)
		}
		if err != nil {
			return nil, err
		}
		m.hold = append(m.hold, last.Sub(t0))
		m.publish = append(m.publish, p.at.Sub(t0))
		m.cpuHold = append(m.cpuHold, cHold-c0)
		m.cpu = append(m.cpu, cpuSeconds()-c0)
	}
	return m, nil
}

// loopbackCopy sends src once over a TCP connection on 127.0.0.1 into dst (one
// writer goroutine, one reader) and returns the time from the first write to
// the last byte read.
func loopbackCopy(src, dst []byte) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: loopback listen: %v", err)
	}
	defer ln.Close()
	start := make(chan time.Time, 1)
	werr := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			start <- time.Now()
			werr <- err
			return
		}
		defer c.Close()
		start <- time.Now()
		_, err = c.Write(src) // one Write: the kernel splits it as it likes
		werr <- err
	}()
	c, err := ln.Accept()
	if err != nil {
		return 0, fmt.Errorf("bench: loopback accept: %v", err)
	}
	defer c.Close()
	_, rerr := io.ReadFull(c, dst)
	end := time.Now()
	t0 := <-start
	if err := <-werr; err != nil {
		return 0, fmt.Errorf("bench: loopback write: %v", err)
	}
	if rerr != nil {
		return 0, fmt.Errorf("bench: loopback read: %v", rerr)
	}
	return end.Sub(t0), nil
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

func (r *broadcastResult) ratio() float64 {
	return round2(medianDuration(r.Broadcast).Seconds() / medianDuration(r.Copy).Seconds())
}

func (r *broadcastResult) json() benchResult {
	b, c := medianDuration(r.Broadcast), medianDuration(r.Copy)
	line := benchResult{"impl": "troupe", "bench": "broadcast", "params": r.Params, "bytes": r.Bytes,
		"subscribers": r.Subscribers, "rounds": len(r.Broadcast), "transport": "nats core fan-out + jetstream object store copy (embedded, 127.0.0.1)",
		"broadcast_ms_min": ms(minDuration(r.Broadcast)), "broadcast_ms_median": ms(b),
		"publish_ms_median": ms(medianDuration(r.Publish)),
		"copy_ms_min":       ms(minDuration(r.Copy)), "copy_ms_median": ms(c),
		"ratio": r.ratio(), "target_ratio": 3.0,
		// one version's bytes per second, and all K copies' bytes per second
		"broadcast_gb_per_s":           gbps(r.Bytes, b),
		"broadcast_aggregate_gb_per_s": gbps(r.Bytes*r.Subscribers, b),
		"copy_gb_per_s":                gbps(r.Bytes, c),
		"bf16_broadcast_ms_median":     ms(medianDuration(r.BF16)),
		"bf16_ratio":                   round2(medianDuration(r.BF16).Seconds() / c.Seconds()),
		"deliveries_fanout":            r.Fanout,
		"deliveries_store":             r.Store,
		"slow_consumers":               r.Slow,
		"cpu_s_per_version_median":     round2(medianFloat(r.CPU)),
		"cpu_s_to_hold_median":         round2(medianFloat(r.CPUHold)),
		"copy_cpu_s_median":            round2(medianFloat(r.CopyCPU)),
	}
	if r.PeakRSSMB > 0 {
		line["peak_rss_mb"] = r.PeakRSSMB
	}
	return line
}

// jsonBF16 is the bf16 broadcast's own line: the same versions with bf16 on
// the wire (half the bytes), against the same loopback copy of the fp32
// bytes.
func (r *broadcastResult) jsonBF16() benchResult {
	b, c := medianDuration(r.BF16), medianDuration(r.Copy)
	return benchResult{"impl": "troupe", "bench": "broadcast_bf16", "dtype": "bf16", "params": r.Params, "bytes": 2 * r.Params,
		"copy_bytes": r.Bytes, "subscribers": r.Subscribers, "rounds": len(r.BF16),
		"broadcast_ms_min": ms(minDuration(r.BF16)), "broadcast_ms_median": ms(b),
		"publish_ms_median": ms(medianDuration(r.BF16Publish)),
		"copy_ms_median":    ms(c),
		"ratio":             round2(b.Seconds() / c.Seconds()), "target_ratio": 3.0,
		"broadcast_gb_per_s":       gbps(2*r.Params, b),
		"cpu_s_per_version_median": round2(medianFloat(r.BF16CPU)),
		"cpu_s_to_hold_median":     round2(medianFloat(r.BF16CPUHold)),
	}
}

func (r *broadcastResult) table() string {
	var b strings.Builder
	bm, cm := medianDuration(r.Broadcast), medianDuration(r.Copy)
	fmt.Fprintf(&b, "weight broadcast: %d params (%.1f MB), %d subscribers, %d versions timed\n",
		r.Params, float64(r.Bytes)/1e6, r.Subscribers, len(r.Broadcast))
	fmt.Fprintf(&b, "  %-34s %10s %10s %10s\n", "", "min ms", "median ms", "GB/s")
	fmt.Fprintf(&b, "  %-34s %10.1f %10.1f %10.2f\n", fmt.Sprintf("publish -> all %d hold v+1", r.Subscribers),
		ms(minDuration(r.Broadcast)), ms(bm), gbps(r.Bytes, bm))
	fmt.Fprintf(&b, "  %-34s %10.1f %10.1f\n", "  Publish returned (incl. store put)",
		ms(minDuration(r.Publish)), ms(medianDuration(r.Publish)))
	fmt.Fprintf(&b, "  %-34s %10s %10s %10.2f\n", fmt.Sprintf("  (aggregate, %d copies)", r.Subscribers),
		"", "", gbps(r.Bytes*r.Subscribers, bm))
	fmt.Fprintf(&b, "  %-34s %10.1f %10.1f %10.2f\n", "one copy, loopback TCP",
		ms(minDuration(r.Copy)), ms(cm), gbps(r.Bytes, cm))
	fmt.Fprintf(&b, "  %-34s %10.1f %10.1f\n", "publish -> all hold v+1, bf16 wire",
		ms(minDuration(r.BF16)), ms(medianDuration(r.BF16)))
	verdict := "meets"
	if r.ratio() > 3 {
		verdict = "misses"
	}
	fmt.Fprintf(&b, "  broadcast / copy (medians): %.2fx fp32 (%s the <= 3x aim), %.2fx bf16\n",
		r.ratio(), verdict, round2(medianDuration(r.BF16).Seconds()/cm.Seconds()))
	fmt.Fprintf(&b, "  CPU per fp32 version (publish, server, %d subscribers, store copy): %.2f s, %.2f s of it until all hold it; one loopback copy: %.2f s\n",
		r.Subscribers, medianFloat(r.CPU), medianFloat(r.CPUHold), medianFloat(r.CopyCPU))
	fmt.Fprintf(&b, "  CPU per bf16 version: %.2f s, %.2f s of it until all hold it\n", medianFloat(r.BF16CPU), medianFloat(r.BF16CPUHold))
	fmt.Fprintf(&b, "  deliveries: %d from the fan-out, %d from the object store; %d slow-consumer disconnects\n",
		r.Fanout, r.Store, r.Slow)
	if r.PeakRSSMB > 0 {
		fmt.Fprintf(&b, "  peak RSS: %.0f MB\n", r.PeakRSSMB)
	}
	return b.String()
}
