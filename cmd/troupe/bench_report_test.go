package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/troupe-rl/troupe/policy"
)

// The lower bound for tiny at its bench shape (B16 T128), counted by hand:
// parameters wte 256*128 + wpe 128*128 + 4 blocks of (2 LayerNorms 2*2*128,
// c_attn 128*384+384, attn proj 128*128+128, fc 128*512+512, mlp proj
// 512*128+128) + ln_f 2*128 = 842,496; activations with N = 2048 rows:
// encoded 262,144; per block 16*N*C = 4,194,304 + 4N = 8,192 + B*NH*T*T =
// 1,048,576, four blocks 21,004,288; ln_f 262,144 + 4,096; logits N*V = 524,288;
// 22,056,960 floats in all.
func TestTrainMemoryLowerBoundTiny(t *testing.T) {
	cfg, err := policy.NamedConfig("tiny")
	if err != nil {
		t.Fatal(err)
	}
	got := trainMemoryLowerBound(cfg, 16, 128)
	const params, acts = 842_496, 22_056_960
	if got.Params != params || got.ParamBytes != 4*params || got.GradBytes != 4*params || got.AdamBytes != 8*params {
		t.Fatalf("parameter terms %+v, want %d params at 4+4+8 bytes", got, params)
	}
	if got.ActBytes != 4*acts {
		t.Fatalf("activations %d bytes, want %d", got.ActBytes, 4*acts)
	}
	if got.Total() != 16*params+4*acts {
		t.Fatalf("total %d", got.Total())
	}
	// The attention weights grow with T*T: doubling T at the same B more than doubles the activations.
	if long := trainMemoryLowerBound(policy.Config{VocabSize: 256, MaxSeqLen: 256, NumLayers: 4, NumHeads: 4, Channels: 128}, 16, 256); long.ActBytes <= 2*got.ActBytes {
		t.Fatalf("T=256 activations %d, not more than twice T=128's %d", long.ActBytes, got.ActBytes)
	}
}

// A run's lines, as bench.jsonl holds them, drawn as the table: every figure
// the issue asks for in its row, ratios and fractions as stated, targets beside.
func TestRenderBenchTable(t *testing.T) {
	jsonl := `{"bench":"machine","cpu":"Test CPU","cores":2,"threads":2,"backend":"openblas X","go":"go1.26","os":"linux","arch":"amd64","time":"2026-11-27T05:00:00Z"}
{"bench":"peak_fma","isa":"avx512","threads":1,"gflops":110}
{"bench":"peak_fma","isa":"avx512","threads":2,"gflops":200}
{"bench":"peak_gemm","threads":2,"shape":"2048x384x1536","gflops":150,"calls":40}
{"impl":"troupe","bench":"train","config":"small","tokens_per_s":2000}
{"impl":"summary","config":"small","bench":"train","batch":8,"seq":256,"troupe_tokens_per_s":2000,"pytorch_tokens_per_s":1600,"ratio":1.25,"troupe_model_gflops_per_s":130,"pytorch_model_gflops_per_s":104,"troupe_best_model_gflops_per_s":150}
{"impl":"summary","config":"small","bench":"generate","troupe_new_tokens_per_s":2500,"pytorch_new_tokens_per_s":800,"ratio":3.12}
{"impl":"summary","config":"tiny","bench":"score","troupe_tokens_per_s":40000,"pytorch":"skipped"}

{"bench":"memory","config":"gpt2","batch":4,"seq":256,"troupe_peak_rss_mb":3500,"pytorch_peak_rss_mb":3000,"lower_bound_mb":2800}
{"impl":"summary","bench":"rollout","config":"small","generators":1,"tokens_per_s":1000}
{"impl":"summary","bench":"rollout","config":"small","generators":2,"tokens_per_s":1800,"speedup":1.8}
{"impl":"summary","bench":"train_seq","config":"small-1k","seq":1024,"batch":2,"troupe_tokens_per_s":1000,"pytorch_tokens_per_s":500,"ratio":2,"troupe_cost_vs_first":2.1}
{"impl":"summary","bench":"generate_seq","config":"small-1k","seq":512,"batch":4,"troupe_new_tokens_per_s":700}
{"impl":"troupe","bench":"broadcast","params":124439808,"subscribers":4,"broadcast_ms_median":900,"copy_ms_median":300,"ratio":3,"target_ratio":3}
{"impl":"troupe","bench":"broadcast_bf16","dtype":"bf16","params":124439808,"subscribers":4,"broadcast_ms_median":600,"copy_ms_median":300,"ratio":2,"target_ratio":3}
{"impl":"troupe","bench":"broadcast","transport":"shm","dtype":"fp32","params":124439808,"subscribers":4,"broadcast_ms_median":450,"copy_ms_median":300,"ratio":1.5,"target_ratio":3}
{"impl":"troupe","bench":"broadcast_nats","transport":"nats","dtype":"fp32","params":124439808,"subscribers":4,"broadcast_ms_median":1500,"copy_ms_median":300,"ratio":5,"target_ratio":3,"socket_floor_ms_median":1200,"socket_floor_ratio":4,"broadcast_over_floor":1.25}
{"impl":"troupe","bench":"broadcast_direct","transport":"direct","dtype":"fp32","params":124439808,"subscribers":4,"broadcast_ms_median":700,"copy_ms_median":300,"ratio":2.33,"target_ratio":3,"socket_floor_ms_median":1150,"socket_floor_ratio":3.83,"broadcast_over_floor":0.61}
{"impl":"troupe","bench":"broadcast_nats_bf16","transport":"nats","dtype":"bf16","params":124439808,"subscribers":4,"broadcast_ms_median":750,"copy_ms_median":300,"ratio":2.5,"target_ratio":3,"socket_floor_ms_median":1100,"socket_floor_ratio":3.67,"broadcast_over_floor":0.68}
`
	path := filepath.Join(t.TempDir(), benchJSONL)
	if err := os.WriteFile(path, []byte(jsonl), 0o644); err != nil {
		t.Fatal(err)
	}
	lines, err := readBenchLines(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 19 {
		t.Fatalf("%d lines read, want 19 (blank lines skipped)", len(lines))
	}
	table := renderBenchTable(lines)
	for _, want := range []string{
		"on Test CPU (linux/amd64, 2 cores, 2 threads, openblas X, go1.26)",
		"| figure | troupe | PyTorch | ratio | target |",
		"| FP32 FMA peak GFLOP/s, 1 thread, avx512 | 110 | – |  |  |",
		"| FP32 FMA peak GFLOP/s, 2 threads, avx512 | 200 | – |  |  |",
		"| sgemm GFLOP/s alone, 2048×384×1536, 2 threads, best of 40 (% of the 2-thread peak) | 150 (75%) | – |  |  |",
		"| train tokens/s, small (B8 T256) | 2000 | 1600 | 1.25× | ≥ 1.3× |",
		"| train model GFLOP/s, small (% of the 2-thread peak) | 130 (65%) | 104 (52%) |  | ≥ 65% of peak |",
		"| train model GFLOP/s, small, fastest step of the run (% of the 2-thread peak) | 150 (75%) | – |  |  |",
		"| generate new tokens/s, small (batch 8, 64 new) | 2500 | 800 | 3.12× | ≥ 3× |",
		"| score tokens/s, tiny | 40,000 | – | – |  |",
		"| peak RSS MB, train gpt2 B4 T256 | 3500 (1.25× bound) | 3000 | 1.17× | lower bound 2800 |",
		"| rollout tokens/s, 1 generator, small | 1000 | – |  |  |",
		"| rollout tokens/s, 2 generators, small (1.80× of 1) | 1800 | – |  |  |",
		"| train tokens/s, small-1k T1024 B2, cost/token 2.10× | 1000 | 500 | 2.00× |  |",
		"| generate new tokens/s, small-1k, 16→512 tokens (batch 4) | 700 | – | – |  |",
		"| weight broadcast ms, 124M params to 4 subscribers | 900 (1 TCP copy: 300) | – | 3.00× of a copy | ≤ 3× one copy |",
		"| weight broadcast ms, 124M params to 4 subscribers, bf16 on the wire | 600 (1 TCP copy of the fp32 bytes: 300) | – | 2.00× of an fp32 copy |  |",
		"| weight broadcast ms, 124M params to 4 subscribers on the learner's machine (shared memory) | 450 (1 TCP copy: 300) | – | 1.50× of a copy | ≤ 3× one copy |",
		"| weight broadcast ms, 124M params to 4 subscribers on other machines (NATS fan-out, over loopback here), bf16 on the wire | 750 (1 TCP copy of the fp32 bytes: 300) | – | 2.50× of an fp32 copy |  |",
		"| weight broadcast ms, 124M params to 4 subscribers on other machines (NATS fan-out, over loopback here) | 1500 (1 TCP copy: 300) | – | 5.00× of a copy | ≤ 3× one copy |",
		"| 4 loopback TCP copies of the fp32 bytes at once, ms: the floor of any socket fan-out to 4 here | 1200 (1 TCP copy: 300) | – | 4.00× of a copy |  |",
		"| weight broadcast ms, 124M params to 4 subscribers on other machines (straight from the learner over TCP, nats.weights_direct; over loopback here) | 700 (1 TCP copy: 300) | – | 2.33× of a copy | ≤ 3× one copy |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	// The socket floor is drawn once, from the NATS fp32 fan-out's line.
	if n := strings.Count(table, "loopback TCP copies of the fp32 bytes at once"); n != 1 {
		t.Errorf("socket floor drawn %d times, want once:\n%s", n, table)
	}
	// The per-run troupe line is not a row: only summaries are.
	if strings.Count(table, "train tokens/s, small (") != 1 {
		t.Errorf("small's training row drawn more than once:\n%s", table)
	}

	// A GPU run: model TFLOP/s against the GPU's TF32 peak, no CPU targets.
	gpuLines, err := parseBenchLines([]byte(`{"batch":32,"bench":"train","config":"gpt2","device":"cuda:0","gpu":"NVIDIA H200","impl":"troupe","mfu":0.339,"model_gflops_per_s":167712.5,"peak_tf32_tflops":494.7,"seq":256,"tokens_per_s":217742.9}
{"batch":32,"bench":"train","config":"gpt2","impl":"summary","pytorch":"skipped","seq":256,"troupe_model_gflops_per_s":167712.5,"troupe_tokens_per_s":217742.9}
{"batch":8,"bench":"generate","config":"small","device":"cuda:0","impl":"troupe","new_tokens_per_s":1324.1}
{"bench":"generate","config":"small","impl":"summary","troupe_new_tokens_per_s":1324.1}
`))
	if err != nil {
		t.Fatal(err)
	}
	gpuTable := renderBenchTable(gpuLines)
	for _, want := range []string{
		"| train tokens/s, gpt2 (B32 T256) | 217,743 | – | – |  |",
		"| train model TFLOP/s, gpt2, NVIDIA H200 (% of its 495 TFLOP/s TF32 peak) | 168 (33.9%) | – |  | ≥ 40% of the TF32 peak (aim) |",
		"| generate new tokens/s, small (batch 8, 64 new) | 1324 | – | – |  |",
	} {
		if !strings.Contains(gpuTable, want) {
			t.Errorf("GPU table lacks %q:\n%s", want, gpuTable)
		}
	}
	if strings.Contains(gpuTable, "65% of peak") || strings.Contains(gpuTable, "GFLOP/s") {
		t.Errorf("GPU table shows CPU figures or targets:\n%s", gpuTable)
	}

	// A peak measured again later in the run counts at its best, in one row,
	// and the fractions are of that best.
	rechecked, err := parseBenchLines([]byte(`{"bench":"machine","cpu":"Test CPU","cores":2,"threads":2}
{"bench":"peak_fma","isa":"avx512","threads":2,"gflops":171,"rounds":10,"when":"start"}
{"impl":"summary","config":"small","bench":"train","batch":8,"seq":256,"troupe_tokens_per_s":2000,"troupe_model_gflops_per_s":163}
{"bench":"peak_fma","isa":"avx512","threads":2,"gflops":326,"rounds":5,"when":"after small"}
{"bench":"peak_gemm","threads":2,"shape":"2048x384x1536","gflops":300,"gflops_median":280,"calls":50,"when":"start"}
{"bench":"peak_gemm_openblas","threads":2,"shape":"2048x384x1536","gflops":250,"gflops_median":240,"calls":30,"when":"start"}
{"bench":"peak_gemm","threads":2,"shape":"2048x384x1536","gflops":260,"gflops_median":231.6,"calls":41,"when":"after small"}
{"bench":"peak_gemm_openblas","threads":2,"shape":"2048x384x1536","gflops":230,"gflops_median":200,"calls":28,"when":"after small"}
`))
	if err != nil {
		t.Fatal(err)
	}
	rt := renderBenchTable(rechecked)
	for _, want := range []string{
		"| FP32 FMA peak GFLOP/s, 2 threads, avx512, best of 15 rounds at 2 points of the run | 326 | – |  |  |",
		"| train model GFLOP/s, small (% of the 2-thread peak) | 163 (50%) | – |  | ≥ 65% of peak |",
		"| sgemm GFLOP/s alone, 2048×384×1536, 2 threads, best of 50 (% of the 2-thread peak) | 300 (92%) | – |  |  |",
		"| sgemm GFLOP/s alone, median of each ~1 s probe (start, after small) | 280 → 232 | – |  |  |",
		"| OpenBLAS sgemm GFLOP/s alone, 2048×384×1536, its own pool of 2 threads, best of 30 (% of the 2-thread peak) | 250 (77%) | – |  |  |",
		"| OpenBLAS sgemm GFLOP/s alone, median of each probe | 240 → 200 | – |  |  |",
	} {
		if !strings.Contains(rt, want) {
			t.Errorf("re-measured peak: table lacks %q:\n%s", want, rt)
		}
	}
	if strings.Count(rt, "| sgemm GFLOP/s alone, 2048") != 1 || strings.Count(rt, "| OpenBLAS sgemm GFLOP/s alone, 2048") != 1 {
		t.Errorf("re-measured sgemm drawn more than once:\n%s", rt)
	}
	// A build without OpenBLAS says so in the OpenBLAS row.
	noBLAS, err := parseBenchLines([]byte(`{"bench":"peak_gemm_openblas","threads":2,"shape":"2048x384x1536","available":false,"reason":"no OpenBLAS in this build","when":"start"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if nb := renderBenchTable(noBLAS); !strings.Contains(nb, "| OpenBLAS sgemm GFLOP/s alone: not in this build | – | – |  |  |") {
		t.Errorf("no OpenBLAS: table lacks its row:\n%s", nb)
	}
	if strings.Contains(table, "median of each") {
		t.Errorf("one sgemm probe drew a row of medians:\n%s", table)
	}
	if want := "Slow stretch: the sgemm probe's median fell to 83% (after small) of its median at the start"; !strings.Contains(rt, want) {
		t.Errorf("slowed sgemm probe: table lacks %q:\n%s", want, rt)
	}
	if strings.Contains(table, "Slow stretch") {
		t.Errorf("one sgemm probe noted a slow stretch:\n%s", table)
	}
	steady, err := parseBenchLines([]byte(`{"bench":"peak_gemm","threads":2,"shape":"2048x384x1536","gflops":300,"gflops_median":280,"calls":50,"when":"start"}
{"bench":"peak_gemm","threads":2,"shape":"2048x384x1536","gflops":290,"gflops_median":250,"calls":45,"when":"after tiny"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if st := renderBenchTable(steady); strings.Contains(st, "Slow stretch") || !strings.Contains(st, "| 280 → 250 |") {
		t.Errorf("sgemm probe at 89%% of its start: want its medians and no slow-stretch note:\n%s", st)
	}
	if strings.Count(rt, "FP32 FMA peak") != 1 {
		t.Errorf("re-measured peak drawn more than once:\n%s", rt)
	}

	// A probe whose median fell well below the run's best says the machine
	// was busy; one near it does not.
	for _, c := range []struct {
		median float64
		busy   bool
	}{{100, true}, {290, false}} {
		lines, err := parseBenchLines([]byte(fmt.Sprintf(`{"bench":"machine","cpu":"Test CPU","cores":2,"threads":2}
{"bench":"peak_fma","isa":"avx512","threads":2,"gflops":300,"gflops_median":295,"rounds":10,"when":"start"}
{"bench":"peak_fma","isa":"avx512","threads":2,"gflops":150,"gflops_median":%g,"rounds":5,"when":"after tiny"}
`, c.median)))
		if err != nil {
			t.Fatal(err)
		}
		table := renderBenchTable(lines)
		want := "Busy machine: the 2-thread FMA probe's median fell to 33% (after tiny) of the run's best (300 GFLOP/s)"
		if got := strings.Contains(table, want); got != c.busy || c.busy != strings.Contains(table, "Busy machine") {
			t.Errorf("probe median %g: busy note %v, want %v (%q):\n%s", c.median, got, c.busy, want, table)
		}
	}

	if _, err := parseBenchLines([]byte("{\"a\":1}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: got %v, want an error naming line 2", err)
	}
}

// benchOut writes what it emits to the file and keeps it for the table, the
// same values either way.
func TestBenchOut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bench")
	var stdout bytes.Buffer
	o, err := newBenchOut(&stdout, dir)
	if err != nil {
		t.Fatal(err)
	}
	o.emit(benchResult{"impl": "summary", "config": "tiny", "bench": "train", "batch": 16, "seq": 128, "troupe_tokens_per_s": 12345.6})
	// Another measurement's JSON lines, written in pieces, join the run's.
	lw := &benchLineWriter{out: o}
	if _, err := lw.Write([]byte("{\"bench\":\"broadcast\",\"para")); err != nil {
		t.Fatal(err)
	}
	if _, err := lw.Write([]byte("ms\":1000}\n{\"bench\":\"x\"}")); err != nil || len(o.lines) != 2 {
		t.Fatalf("%v, %d lines", err, len(o.lines))
	}
	if err := lw.flush(); err != nil || len(o.lines) != 3 || o.lines[1]["params"] != 1000.0 {
		t.Fatalf("%v, %v", err, o.lines)
	}
	if _, err := lw.Write([]byte("oops\n")); err == nil {
		t.Fatal("a line that is not JSON was taken")
	}
	if err := o.finish(); err != nil {
		t.Fatal(err)
	}
	lines, err := readBenchLines(filepath.Join(dir, benchJSONL))
	if err != nil || len(lines) != 3 {
		t.Fatalf("bench.jsonl: %v, %d lines", err, len(lines))
	}
	table, err := os.ReadFile(filepath.Join(dir, benchTable))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(table), "| train tokens/s, tiny (B16 T128) | 12,346 | – | – |  |") {
		t.Fatalf("table.md:\n%s", table)
	}
	if !strings.HasSuffix(stdout.String(), string(table)) || !strings.HasPrefix(stdout.String(), "{") {
		t.Fatalf("stdout is not the JSON lines then the table:\n%s", stdout.String())
	}
	// A second run replaces bench.jsonl; the history keeps both.
	o2, err := newBenchOut(io.Discard, dir)
	if err != nil {
		t.Fatal(err)
	}
	o2.emit(benchResult{"bench": "machine"})
	if err := o2.finish(); err != nil {
		t.Fatal(err)
	}
	if lines, err := readBenchLines(filepath.Join(dir, benchJSONL)); err != nil || len(lines) != 1 {
		t.Fatalf("second run's bench.jsonl: %v, %d lines", err, len(lines))
	}
	if lines, err := readBenchLines(filepath.Join(dir, benchHistory)); err != nil || len(lines) != 4 {
		t.Fatalf("history.jsonl: %v, %d lines, want 3 + 1", err, len(lines))
	}
	if got := string(jsonLinesOf(stdout.Bytes())); strings.Count(got, "\n") != 2 || !strings.HasPrefix(got, "{") {
		t.Fatalf("jsonLinesOf kept %q", got)
	}
}

func TestParseSeqs(t *testing.T) {
	got, err := parseSeqs("128,256, 512,1024")
	if err != nil || len(got) != 4 || got[3] != 1024 {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "16", "128,2048", "256,128", "128,x"} {
		if _, err := parseSeqs(bad); !errors.Is(err, errUsage) {
			t.Errorf("--seqs %q: got %v, want a usage error", bad, err)
		}
	}
}

// Flags are checked before anything is timed.
func TestBenchFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--config", "huge", "--torch", "off", "--out", ""},
		{"--memory", "huge", "--config", "", "--torch", "off", "--out", ""},
		{"--seqs", "128,4096", "--config", "", "--torch", "off", "--out", ""},
		{"--rollout-iters", "1", "--config", "", "--torch", "off", "--out", ""},
		{"--scaling", "rollout,speed", "--config", "", "--torch", "off", "--out", ""},
	} {
		if err := runBench(args); !errors.Is(err, errUsage) {
			t.Errorf("bench %v: got %v, want a usage error", args, err)
		}
	}
}

// A child's peak RSS is its own: a child that holds 300 MB reads at least
// that, one that holds nothing far less.
func TestRunChildPeakRSS(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no python3 to run as the child")
	}
	_, big, err := runChild(exec.Command(py, "-c", "import time; x = bytearray(300 << 20); time.sleep(0.3)"))
	if err != nil {
		t.Fatal(err)
	}
	_, small, err := runChild(exec.Command(py, "-c", "import time; time.sleep(0.3)"))
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" && (big < 300<<20 || small > 100<<20) {
		t.Fatalf("peak RSS %d MB for the 300 MB child, %d MB for the idle one", big>>20, small>>20)
	}
	if _, _, err := runChild(exec.Command(py, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)")); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("failing child: got %v, want its stderr in the error", err)
	}
}

func TestOpenBLASCore(t *testing.T) {
	for in, want := range map[string]string{
		"openblas SkylakeX":                       "SkylakeX",
		"openblas SkylakeX + avx512 packed sgemm": "SkylakeX",
		"openblas Haswell":                        "Haswell",
		"pure go":                                 "",
		"openblas ":                               "",
	} {
		if got := openBLASCore(in); got != want {
			t.Errorf("openBLASCore(%q) = %q, want %q", in, got, want)
		}
	}
}
