package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
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
	// Two JSON lines: the fp32 broadcast (with the bf16 figures beside it)
	// and the bf16 broadcast on its own.
	var line, bf map[string]any
	dec := json.NewDecoder(&js)
	if err := dec.Decode(&line); err != nil {
		t.Fatalf("first JSON line: %v", err)
	}
	if err := dec.Decode(&bf); err != nil {
		t.Fatalf("second JSON line: %v", err)
	}
	if dec.More() {
		t.Errorf("more than two JSON lines")
	}
	for key, want := range map[string]any{"bench": "broadcast", "params": float64(1 << 20), "bytes": float64(4 << 20), "subscribers": float64(2), "rounds": float64(3)} {
		if got := line[key]; got != want {
			t.Errorf("%s: got %v, want %v", key, got, want)
		}
	}
	for _, key := range []string{"broadcast_ms_min", "broadcast_ms_median", "copy_ms_min", "copy_ms_median", "ratio", "broadcast_gb_per_s", "copy_gb_per_s",
		"bf16_broadcast_ms_median", "bf16_ratio", "cpu_s_per_version_median", "cpu_s_to_hold_median", "copy_cpu_s_median", "deliveries_store", "slow_consumers"} {
		if v, ok := line[key].(float64); !ok || v < 0 {
			t.Errorf("%s: got %v, want a number >= 0", key, line[key])
		}
	}
	for key, want := range map[string]any{"bench": "broadcast_bf16", "dtype": "bf16", "params": float64(1 << 20), "bytes": float64(2 << 20), "copy_bytes": float64(4 << 20),
		"subscribers": float64(2), "rounds": float64(3), "broadcast_ms_median": line["bf16_broadcast_ms_median"], "ratio": line["bf16_ratio"], "copy_ms_median": line["copy_ms_median"]} {
		if got := bf[key]; got != want {
			t.Errorf("bf16 line %s: got %v, want %v", key, got, want)
		}
	}
	for _, key := range []string{"broadcast_ms_min", "publish_ms_median", "cpu_s_per_version_median", "cpu_s_to_hold_median"} {
		if v, ok := bf[key].(float64); !ok || v < 0 {
			t.Errorf("bf16 line %s: got %v, want a number >= 0", key, bf[key])
		}
	}
	// 2 subscribers x 4 versions x 2 dtypes, every one delivered once: the
	// fan-out carries them unless the machine stalls a subscriber for
	// seconds (then the object store does).
	if f, st := line["deliveries_fanout"].(float64), line["deliveries_store"].(float64); f+st != 16 || f == 0 {
		t.Errorf("deliveries: %v from the fan-out, %v from the store; want 16 in all, most from the fan-out", f, st)
	}
	for _, want := range []string{"publish -> all 2 hold v+1", "bf16 wire", "CPU per fp32 version", "CPU per bf16 version", "one copy, loopback TCP", "broadcast / copy (medians):"} {
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
