package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/troupe-rl/troupe/actors"
)

// TestBenchBroadcast runs the broadcast benchmark small (1 Mi values, 2
// subscribers) and checks that it prints its figures; the timings themselves
// are not asserted (a loaded CI machine makes them anything).
func TestBenchBroadcast(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded NATS and 5 x 4 MiB through the object store: skipped with -short")
	}
	before := runtime.NumGoroutine()
	var js, table bytes.Buffer
	if err := runBroadcastBench(1<<20, 2, &js, &table); err != nil {
		t.Fatal(err)
	}
	// One JSON line per transport and dtype: shm (where this machine has a
	// tmpfs), nats and direct, each fp32 then bf16.
	want := []string{"broadcast", "broadcast_bf16", "broadcast_direct", "broadcast_direct_bf16"}
	if actors.DefaultShmDir() != "" {
		want = []string{"broadcast", "broadcast_bf16", "broadcast_nats", "broadcast_nats_bf16", "broadcast_direct", "broadcast_direct_bf16"}
	}
	var lines []map[string]any
	dec := json.NewDecoder(&js)
	for dec.More() {
		var line map[string]any
		if err := dec.Decode(&line); err != nil {
			t.Fatalf("JSON line %d: %v", len(lines)+1, err)
		}
		lines = append(lines, line)
	}
	if len(lines) != len(want) {
		t.Fatalf("%d JSON lines, want %d (%v)", len(lines), len(want), want)
	}
	for i, line := range lines {
		bf16 := strings.HasSuffix(want[i], "_bf16")
		bytes, dtype := float64(4<<20), actors.DTypeFP32
		if bf16 {
			bytes, dtype = 2<<20, actors.DTypeBF16
		}
		for key, v := range map[string]any{"bench": want[i], "dtype": dtype, "params": float64(1 << 20), "bytes": bytes, "copy_bytes": float64(4 << 20),
			"subscribers": float64(2), "rounds": float64(3)} {
			if got := line[key]; got != v {
				t.Errorf("%s: %s: got %v, want %v", want[i], key, got, v)
			}
		}
		// Each case's own copies, timed beside its versions.
		if lo, med := line["copy_ms_min"].(float64), line["copy_ms_median"].(float64); !(med > 0 && lo <= med) {
			t.Errorf("%s: copy_ms_min %v, copy_ms_median %v: want 0 < min <= median", want[i], line["copy_ms_min"], line["copy_ms_median"])
		}
		for _, key := range []string{"broadcast_ms_min", "broadcast_ms_median", "publish_ms_median", "stored_ms_median", "copy_ms_min", "ratio", "broadcast_gb_per_s",
			"copy_gb_per_s", "cpu_s_per_version_median", "cpu_s_to_hold_median", "copy_cpu_s_median", "deliveries_store", "slow_consumers"} {
			if v, ok := line[key].(float64); !ok || v < 0 {
				t.Errorf("%s: %s: got %v, want a number >= 0", want[i], key, line[key])
			}
		}
		// 2 subscribers x 5 versions (2 warm-up, 3 timed), every one
		// delivered once: from the slot on shm (nothing can overwrite it
		// meanwhile), else from the fan-out unless the machine stalls a
		// subscriber for seconds (then the object store).
		const all = 2 * (broadcastWarmup + broadcastRounds)
		f, st, sh := line["deliveries_fanout"].(float64), line["deliveries_store"].(float64), line["deliveries_shm"].(float64)
		switch line["transport"] {
		case "shm":
			if sh != all {
				t.Errorf("%s: deliveries: %v from the slot, %v fan-out, %v store; want %d from the slot", want[i], sh, f, st, all)
			}
			if v, ok := line["socket_floor_ms_median"]; ok {
				t.Errorf("%s: socket_floor_ms_median %v: the floor is timed beside the NATS fan-out only", want[i], v)
			}
		case "nats", "direct":
			if f+st != all || f == 0 || sh != 0 {
				t.Errorf("%s: deliveries: %v from the fan-out, %v from the store, %v from a slot; want %d in all, most from the fan-out", want[i], f, st, sh, all)
			}
			// The socket floor timed beside the fan-out: K copies at
			// once take longer than none and are read against the copy.
			for _, key := range []string{"socket_floor_ms_median", "socket_floor_ratio", "broadcast_over_floor"} {
				if v, ok := line[key].(float64); !ok || v <= 0 {
					t.Errorf("%s: %s: got %v, want a number > 0", want[i], key, line[key])
				}
			}
		default:
			t.Errorf("%s: transport %v", want[i], line["transport"])
		}
	}
	for _, want := range []string{"nats, fp32 on the wire", "nats, bf16 on the wire", "CPU per nats fp32 version", "one copy of the fp32 bytes, loopback TCP", "broadcast / copy (medians), nats fp32:",
		"2 copies at once, loopback TCP (nats fp32)", "direct, fp32 on the wire", "broadcast / copy (medians), direct fp32:"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	t.Logf("\n%s%s", js.String(), table.String())
	// Everything it started (server, connections, subscribers, copy goroutines)
	// is gone; the NATS client's goroutines take a moment to wind down.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: got %d after the benchmark, want <= %d before it", n, before)
	}
}

func TestBenchBroadcastFlags(t *testing.T) {
	for _, args := range [][]string{{"--broadcast", "-1"}, {"--broadcast", "10", "--subscribers", "0"}} {
		if err := runBench(args); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("bench %v: got %v, want a usage error", args, err)
		}
	}
}

// TestBenchWithBroadcastChild: `troupe bench --with-broadcast` runs the
// broadcast in a child process (this test binary as the CLI,
// TROUPE_TEST_PROCESS=troupe) and its result lines land in the run's
// bench.jsonl beside the machine line.
func TestBenchWithBroadcastChild(t *testing.T) {
	if testing.Short() {
		t.Skip("a child process with embedded NATS: skipped with -short")
	}
	t.Setenv("TROUPE_TEST_PROCESS", "troupe")
	dir := t.TempDir()
	if err := runBench([]string{"--config", "", "--torch", "off", "--with-broadcast", "4096", "--subscribers", "2", "--out", dir}); err != nil {
		t.Fatal(err)
	}
	lines, err := readBenchLines(filepath.Join(dir, "bench.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		if b, _ := l["bench"].(string); strings.HasPrefix(b, "broadcast") {
			got = append(got, b)
			if l["params"] != float64(4096) || l["subscribers"] != float64(2) {
				t.Errorf("%s: params %v subscribers %v, want 4096 and 2", b, l["params"], l["subscribers"])
			}
		}
	}
	want := 4 // nats and direct, fp32 and bf16
	if actors.DefaultShmDir() != "" {
		want = 6 // and shm
	}
	if len(got) != want {
		t.Fatalf("broadcast lines %v, want %d", got, want)
	}
}

// TestLoopbackFanout: the copies the broadcast is read against deliver every
// byte of src into each destination, one connection each.
func TestLoopbackFanout(t *testing.T) {
	src := make([]byte, 3<<20+7) // larger than a socket buffer, ragged
	for i := range src {
		src[i] = byte(i*7 + i>>11)
	}
	for _, k := range []int{1, 4} {
		dsts := make([][]byte, k)
		for i := range dsts {
			dsts[i] = make([]byte, len(src))
		}
		d, err := loopbackFanout(src, dsts)
		if err != nil {
			t.Fatal(err)
		}
		if d <= 0 {
			t.Errorf("%d copies: took %v", k, d)
		}
		for i, dst := range dsts {
			if !bytes.Equal(dst, src) {
				t.Errorf("%d copies: destination %d differs from the source", k, i)
			}
		}
	}
}
