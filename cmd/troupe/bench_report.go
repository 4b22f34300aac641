package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/troupe-rl/troupe/kernels"
)

// benchOut is where a bench run's results go: each as a JSON line on stdout and
// in DIR/bench.jsonl, kept (as decoded from that JSON, so the table drawn at the
// end is the one `--table DIR/bench.jsonl` draws later) for the table. At the
// end the run's lines are also appended to DIR/history.jsonl (each run starts
// with its "machine" line), so a later partial run does not lose a full one.
type benchOut struct {
	stdout io.Writer
	dir    string
	file   *os.File
	w      *bufio.Writer
	lines  []benchResult
	raw    bytes.Buffer // the lines as written, for the history
}

const (
	benchJSONL   = "bench.jsonl"
	benchTable   = "table.md"
	benchHistory = "history.jsonl"
)

func newBenchOut(stdout io.Writer, dir string) (*benchOut, error) {
	o := &benchOut{stdout: stdout, dir: dir}
	if dir == "" {
		return o, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, benchJSONL))
	if err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	o.file, o.w = f, bufio.NewWriter(f)
	return o, nil
}

// emit writes r as one JSON line to stdout and the file (flushed, so a run cut
// short keeps what it measured).
func (o *benchOut) emit(r benchResult) {
	b, err := json.Marshal(r)
	if err != nil {
		log.Error().Err(err).Msg("bench: result not encodable")
		return
	}
	var back benchResult
	_ = json.Unmarshal(b, &back)
	o.lines = append(o.lines, back)
	b = append(b, '\n')
	_, _ = o.stdout.Write(b)
	o.raw.Write(b)
	if o.w != nil {
		_, _ = o.w.Write(b)
		_ = o.w.Flush()
	}
}

// finish prints the table and writes it beside the JSON lines.
func (o *benchOut) finish() error {
	t := renderBenchTable(o.lines)
	fmt.Fprint(o.stdout, "\n"+t)
	if o.file == nil {
		return nil
	}
	if err := o.w.Flush(); err != nil {
		return err
	}
	err := o.file.Close()
	o.file = nil
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.dir, benchTable), []byte(t), 0o644); err != nil {
		return err
	}
	h, err := os.OpenFile(filepath.Join(o.dir, benchHistory), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := h.Write(o.raw.Bytes()); err != nil {
		h.Close()
		return err
	}
	if err := h.Close(); err != nil {
		return err
	}
	log.Info().Str("jsonl", filepath.Join(o.dir, benchJSONL)).Str("table", filepath.Join(o.dir, benchTable)).Msg("bench: results written")
	return nil
}

// close releases the file of a run that ended early.
func (o *benchOut) close() {
	if o.file != nil {
		_ = o.w.Flush()
		_ = o.file.Close()
		o.file = nil
	}
}

// benchLineWriter takes JSON lines written by another measurement (the weight
// broadcast's) and emits each into out.
type benchLineWriter struct {
	out *benchOut
	buf []byte
}

func (w *benchLineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := w.buf[:i]
		w.buf = w.buf[i+1:]
		if err := w.emit(line); err != nil {
			return len(p), err
		}
	}
}

func (w *benchLineWriter) emit(line []byte) error {
	if len(bytes.TrimSpace(line)) == 0 {
		return nil
	}
	var r benchResult
	if err := json.Unmarshal(line, &r); err != nil {
		return fmt.Errorf("a measurement wrote a line that is not JSON (%q): %v", line, err)
	}
	w.out.emit(r)
	return nil
}

// flush emits a last line written without its newline.
func (w *benchLineWriter) flush() error {
	line := w.buf
	w.buf = nil
	return w.emit(line)
}

// readBenchLines reads a bench.jsonl.
func readBenchLines(path string) ([]benchResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines, err := parseBenchLines(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return lines, nil
}

// machineLine says what the figures were measured on.
func machineLine(threads int) benchResult {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return benchResult{"bench": "machine", "cpu": cpu, "cores": runtime.NumCPU(), "threads": threads,
		"backend": kernels.NewCPU(1).Backend(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
		"time": time.Now().UTC().Format(time.RFC3339)}
}

// parseSeqs parses --seqs: positive lengths up to benchSeqMax, ascending.
func parseSeqs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < benchSeqMin || n > benchSeqMax {
			return nil, fmt.Errorf("%w: --seqs %q: want comma-separated lengths from %d to %d", errUsage, s, benchSeqMin, benchSeqMax)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("%w: --seqs %q: lengths must be ascending", errUsage, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// benchTargets are the goals, by config and measurement.
var benchTargets = map[string]string{
	"small/train":    "≥ 1.3×",
	"gpt2/train":     "≥ 1.2×",
	"small/generate": "≥ 3×",
	"small/score":    "≥ 1.5×",
}

func num(r benchResult, key string) (float64, bool) {
	f, ok := r[key].(float64)
	return f, ok
}

func str(r benchResult, key string) string {
	s, _ := r[key].(string)
	return s
}

// fmtNum prints a figure with as many digits as it needs to be read.
func fmtNum(f float64) string {
	switch {
	case f >= 10000:
		s := strconv.FormatFloat(f, 'f', 0, 64)
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case f >= 100:
		return strconv.FormatFloat(f, 'f', 0, 64)
	default:
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
}

func plural(n float64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%.0f %ss", n, what)
}

func fmtRatio(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) + "×" }

// renderBenchTable draws the figures of a run's JSON lines as a Markdown table:
// figure, troupe, PyTorch, ratio (troupe ÷ PyTorch), target. Lines it does not
// know are left out; a figure PyTorch did not run shows "–".
func renderBenchTable(lines []benchResult) string {
	var b strings.Builder
	type row struct{ fig, ours, theirs, ratio, target string }
	var rows []row
	add := func(fig, ours, theirs, ratio, target string) {
		rows = append(rows, row{fig, ours, theirs, ratio, target})
	}
	dash := "–"
	opt := func(r benchResult, key string, f func(float64) string) string {
		if v, ok := num(r, key); ok {
			return f(v)
		}
		return dash
	}
	// The FMA peak the fractions are of: the run's thread count, else the most threads.
	var peak, peakThreads float64
	threads := 0.0
	for _, r := range lines {
		if str(r, "bench") == "machine" {
			threads, _ = num(r, "threads")
			fmt.Fprintf(&b, "Measured %s on %s (%s/%s, %v cores, %v threads, %s, %s).\n\n",
				strings.TrimSuffix(str(r, "time"), "Z"), str(r, "cpu"), str(r, "os"), str(r, "arch"), r["cores"], r["threads"], str(r, "backend"), str(r, "go"))
		}
	}
	// A peak measured more than once in the run (bench re-measures it after
	// each config) counts at its best: other work on the cores only lowers it.
	peakBest, peakRounds, peakSamples := map[float64]float64{}, map[float64]float64{}, map[float64]int{}
	for _, r := range lines {
		if str(r, "bench") != "peak_fma" {
			continue
		}
		g, _ := num(r, "gflops")
		t, _ := num(r, "threads")
		n, _ := num(r, "rounds")
		peakBest[t] = max(peakBest[t], g)
		peakRounds[t] += n
		peakSamples[t]++
	}
	for t, g := range peakBest {
		if t == threads || (peakThreads != threads && t > peakThreads) {
			peak, peakThreads = g, t
		}
	}
	peakShown := map[float64]bool{}
	// The sgemm probe, timed at the start and again after each config: one
	// row for its best at the start, one for every probe's median in order.
	probes := gemmProbes(lines, "peak_gemm")
	blasProbes := gemmProbes(lines, "peak_gemm_openblas")
	gemmShown, blasShown := false, false
	frac := func(gf float64) string {
		if peak <= 0 {
			return fmtNum(gf)
		}
		return fmt.Sprintf("%s (%.0f%%)", fmtNum(gf), 100*gf/peak)
	}
	// ofPeak is a figure whose values frac shows as a share of the peak.
	ofPeak := func(fig string) string {
		if peak <= 0 {
			return fig
		}
		return fig + fmt.Sprintf(" (%% of the %.0f-thread peak)", peakThreads)
	}
	// A config benched on a GPU (its troupe lines name a cuda device): its model
	// FLOP/s are read against the GPU's TF32 peak, and the CPU targets (ratios
	// to PyTorch on the CPU, 65% of the FMA peak) do not apply.
	gpu := map[string]benchResult{}
	for _, r := range lines {
		if str(r, "impl") == "troupe" && strings.HasPrefix(str(r, "device"), "cuda") {
			if _, seen := gpu[str(r, "config")+"/"+str(r, "bench")]; !seen {
				gpu[str(r, "config")+"/"+str(r, "bench")] = r
			}
		}
	}
	target := func(cfg, bench string) string {
		if _, onGPU := gpu[cfg+"/"+bench]; onGPU {
			return ""
		}
		return benchTargets[cfg+"/"+bench]
	}
	for _, r := range lines {
		bench, impl, cfg := str(r, "bench"), str(r, "impl"), str(r, "config")
		switch {
		case bench == "peak_fma":
			t, _ := num(r, "threads")
			if peakShown[t] {
				continue
			}
			peakShown[t] = true
			fig := fmt.Sprintf("FP32 FMA peak GFLOP/s, %s, %s", plural(t, "thread"), str(r, "isa"))
			if avail, ok := r["available"].(bool); ok && !avail {
				fig = fmt.Sprintf("FP32 FMA peak GFLOP/s, %s: no probe in this build", plural(t, "thread"))
				add(fig, dash, dash, "", "")
				continue
			}
			if peakSamples[t] > 1 {
				fig += fmt.Sprintf(", best of %.0f rounds at %d points of the run", peakRounds[t], peakSamples[t])
			}
			add(fig, fmtNum(peakBest[t]), dash, "", "")
		case bench == "peak_gemm":
			if gemmShown {
				continue
			}
			gemmShown = true
			t, _ := num(r, "threads")
			fig := ofPeak(fmt.Sprintf("sgemm GFLOP/s alone, %s, %s, best of %.0f", strings.ReplaceAll(str(r, "shape"), "x", "×"), plural(t, "thread"), r["calls"]))
			add(fig, opt(r, "gflops", frac), dash, "", "")
			if len(probes) > 1 {
				var whens []string
				for _, p := range probes {
					whens = append(whens, p.when)
				}
				add("sgemm GFLOP/s alone, median of each ~1 s probe ("+strings.Join(whens, ", ")+")", probeMedians(probes), dash, "", "")
			}
		case bench == "peak_gemm_openblas":
			if blasShown {
				continue
			}
			blasShown = true
			t, _ := num(r, "threads")
			if avail, ok := r["available"].(bool); ok && !avail {
				add("OpenBLAS sgemm GFLOP/s alone: not in this build", dash, dash, "", "")
				continue
			}
			fig := ofPeak(fmt.Sprintf("OpenBLAS sgemm GFLOP/s alone, %s, its own pool of %s, best of %.0f", strings.ReplaceAll(str(r, "shape"), "x", "×"), plural(t, "thread"), r["calls"]))
			add(fig, opt(r, "gflops", frac), dash, "", "")
			if len(blasProbes) > 1 {
				add("OpenBLAS sgemm GFLOP/s alone, median of each probe", probeMedians(blasProbes), dash, "", "")
			}
		case impl == "summary" && bench == "train":
			bt, _ := num(r, "batch")
			st, _ := num(r, "seq")
			add(fmt.Sprintf("train tokens/s, %s (B%.0f T%.0f)", cfg, bt, st), opt(r, "troupe_tokens_per_s", fmtNum),
				opt(r, "pytorch_tokens_per_s", fmtNum), opt(r, "ratio", fmtRatio), target(cfg, "train"))
			if g, onGPU := gpu[cfg+"/train"]; onGPU {
				fig := fmt.Sprintf("train model TFLOP/s, %s, %s", cfg, str(g, "gpu"))
				ours := opt(g, "model_gflops_per_s", func(v float64) string { return fmtNum(v / 1e3) })
				if p, ok := num(g, "peak_tf32_tflops"); ok {
					fig += fmt.Sprintf(" (%% of its %s TFLOP/s TF32 peak)", fmtNum(p))
					ours += opt(g, "mfu", func(v float64) string { return fmt.Sprintf(" (%.1f%%)", 100*v) })
				}
				add(fig, ours, opt(r, "pytorch_model_gflops_per_s", func(v float64) string { return fmtNum(v / 1e3) }), "", "≥ 40% of the TF32 peak (aim)")
				continue
			}
			tgt := ""
			if cfg == "small" || cfg == "gpt2" {
				tgt = "≥ 65% of peak"
			}
			add(ofPeak("train model GFLOP/s, "+cfg), opt(r, "troupe_model_gflops_per_s", frac), opt(r, "pytorch_model_gflops_per_s", frac), "", tgt)
			if _, ok := num(r, "troupe_best_model_gflops_per_s"); ok {
				add(ofPeak("train model GFLOP/s, "+cfg+", fastest step of the run"), opt(r, "troupe_best_model_gflops_per_s", frac), dash, "", "")
			}
		case impl == "summary" && bench == "generate":
			add("generate new tokens/s, "+cfg+" (batch 8, 64 new)", opt(r, "troupe_new_tokens_per_s", fmtNum),
				opt(r, "pytorch_new_tokens_per_s", fmtNum), opt(r, "ratio", fmtRatio), target(cfg, "generate"))
		case impl == "summary" && bench == "score":
			add("score tokens/s, "+cfg, opt(r, "troupe_tokens_per_s", fmtNum),
				opt(r, "pytorch_tokens_per_s", fmtNum), opt(r, "ratio", fmtRatio), target(cfg, "score"))
		case bench == "memory":
			bt, _ := num(r, "batch")
			st, _ := num(r, "seq")
			lb, _ := num(r, "lower_bound_mb")
			ours := opt(r, "troupe_peak_rss_mb", fmtNum)
			if v, ok := num(r, "troupe_peak_rss_mb"); ok && lb > 0 {
				ours += fmt.Sprintf(" (%.2f× bound)", v/lb)
			}
			ratio := ""
			if a, ok := num(r, "troupe_peak_rss_mb"); ok {
				if p, ok := num(r, "pytorch_peak_rss_mb"); ok && p > 0 {
					ratio = fmtRatio(a / p)
				}
			}
			add(fmt.Sprintf("peak RSS MB, train %s B%.0f T%.0f", cfg, bt, st), ours, opt(r, "pytorch_peak_rss_mb", fmtNum), ratio,
				"lower bound "+opt(r, "lower_bound_mb", fmtNum))
		case impl == "summary" && bench == "rollout":
			g, _ := num(r, "generators")
			fig := fmt.Sprintf("rollout tokens/s, %s, %s", plural(g, "generator"), cfg)
			if s, ok := num(r, "speedup"); ok {
				fig += fmt.Sprintf(" (%.2f× of 1)", s)
			}
			add(fig, opt(r, "tokens_per_s", fmtNum), dash, "", "")
		case strings.HasPrefix(bench, "broadcast"):
			// One row per transport and wire dtype (bench_broadcast.go); bf16
			// rows are read against the same fp32 copy and have no target.
			dtype, _ := r["dtype"].(string)
			copyOf, wire, of, tgt := "", "", " of a copy", "≤ 3× one copy"
			if t, ok := num(r, "target_ratio"); ok {
				tgt = fmt.Sprintf("≤ %g× one copy", t)
			}
			if dtype == "bf16" || strings.HasSuffix(bench, "_bf16") {
				copyOf, wire, of, tgt = " of the fp32 bytes", ", bf16 on the wire", " of an fp32 copy", ""
			}
			where := ""
			switch r["transport"] {
			case transportShm:
				where = " on the learner's machine (shared memory)"
			case transportNATS:
				where = " on other machines (NATS fan-out, over loopback here)"
			case transportDirect:
				where = " on other machines (straight from the learner over TCP, nats.weights_direct; over loopback here)"
			}
			subs, _ := num(r, "subscribers")
			params, _ := num(r, "params")
			ours := opt(r, "broadcast_ms_median", fmtNum)
			if c, ok := num(r, "copy_ms_median"); ok {
				ours += " (1 TCP copy" + copyOf + ": " + fmtNum(c) + ")"
			}
			add(fmt.Sprintf("weight broadcast ms, %.0fM params to %.0f subscribers%s%s", params/1e6, subs, where, wire), ours, dash,
				opt(r, "ratio", func(f float64) string { return fmtRatio(f) + of }), tgt)
			// The socket floor timed beside the fp32 fan-out: what any
			// fan-out over sockets to K costs on this machine.
			if f, ok := num(r, "socket_floor_ms_median"); ok && wire == "" && r["transport"] == transportNATS {
				fig := fmt.Sprintf("%.0f loopback TCP copies of the fp32 bytes at once, ms: the floor of any socket fan-out to %.0f here", subs, subs)
				c, _ := num(r, "copy_ms_median")
				add(fig, fmtNum(f)+" (1 TCP copy: "+fmtNum(c)+")", dash, opt(r, "socket_floor_ratio", func(f float64) string { return fmtRatio(f) + " of a copy" }), "")
			}
		case impl == "summary" && (bench == "train_seq" || bench == "generate_seq"):
			st, _ := num(r, "seq")
			bt, _ := num(r, "batch")
			key, fig := "tokens_per_s", fmt.Sprintf("train tokens/s, %s T%.0f B%.0f", cfg, st, bt)
			if bench == "generate_seq" {
				key, fig = "new_tokens_per_s", fmt.Sprintf("generate new tokens/s, %s, %d→%.0f tokens (batch %.0f)", cfg, benchSeqPrompt, st, bt)
			}
			if c, ok := num(r, "troupe_cost_vs_first"); ok {
				fig += fmt.Sprintf(", cost/token %.2f×", c)
			}
			add(fig, opt(r, "troupe_"+key, fmtNum), opt(r, "pytorch_"+key, fmtNum), opt(r, "ratio", fmtRatio), "")
		}
	}
	b.WriteString("| figure | troupe | PyTorch | ratio | target |\n|---|---:|---:|---:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.fig, r.ours, r.theirs, r.ratio, r.target)
	}
	b.WriteString("\nratio: troupe ÷ PyTorch, measured in the same run (the broadcast's: its time ÷ one loopback TCP copy of the same bytes); cost/token: time per token relative to the shortest T.\n")
	if busy := busyProbes(lines, peakThreads, peak); len(busy) > 0 {
		fmt.Fprintf(&b, "\nBusy machine: the %.0f-thread FMA probe's median fell to %s of the run's best (%s GFLOP/s): "+
			"other work held the cores then, and what was measured around it reads low, troupe and PyTorch alike; run again for figures to compare.\n",
			peakThreads, strings.Join(busy, ", "), fmtNum(peak))
	}
	if slow := slowProbes(probes); len(slow) > 0 {
		fmt.Fprintf(&b, "\nSlow stretch: the sgemm probe's median fell to %s of its median at the start: "+
			"memory-heavy work ran slower then (model steps, troupe's and PyTorch's alike), which the FMA probe does not see; "+
			"the ratios hold, the fractions of the peak read low.\n", strings.Join(slow, ", "))
	}
	return b.String()
}

// slowFraction is how far below its median at the start the sgemm probe's
// median may fall later in the run before the table notes a slow stretch.
// On the 2-vCPU VM of 2026-11-28 the quiet probes read within ~5% of each
// other, and a stretch that slowed PyTorch's small steps by 11% read 78%.
const slowFraction = 0.85

// gemmProbe is one sgemm probe's median and when it ran.
type gemmProbe struct {
	median float64
	when   string
}

// gemmProbes lists the run's sgemm probes of kind bench (peak_gemm: troupe's,
// peak_gemm_openblas: OpenBLAS's) that have a median, in order.
func gemmProbes(lines []benchResult, bench string) []gemmProbe {
	var ps []gemmProbe
	for _, r := range lines {
		if m, ok := num(r, "gflops_median"); ok && str(r, "bench") == bench {
			ps = append(ps, gemmProbe{m, cmp.Or(str(r, "when"), "start")})
		}
	}
	return ps
}

// probeMedians is the probes' medians in order, "a → b → c".
func probeMedians(probes []gemmProbe) string {
	var meds []string
	for _, p := range probes {
		meds = append(meds, fmtNum(p.median))
	}
	return strings.Join(meds, " → ")
}

// slowProbes lists the probes after the first whose median fell below
// slowFraction of the first one's, each as "N% (when)".
func slowProbes(probes []gemmProbe) []string {
	var slow []string
	for _, p := range probes[min(1, len(probes)):] {
		if p.median < slowFraction*probes[0].median {
			slow = append(slow, fmt.Sprintf("%.0f%% (%s)", 100*p.median/probes[0].median, p.when))
		}
	}
	return slow
}

// busyFraction is how far below the run's best FMA peak a probe's median may
// fall before the table says the machine was busy.
const busyFraction = 0.75

// busyProbes lists the FMA probes on threads threads whose median round fell
// below busyFraction of peak, each as "N% (when)", e.g. "35% (after tiny)".
func busyProbes(lines []benchResult, threads, peak float64) []string {
	var busy []string
	for _, r := range lines {
		t, _ := num(r, "threads")
		med, ok := num(r, "gflops_median")
		if str(r, "bench") != "peak_fma" || t != threads || !ok || peak <= 0 || med >= busyFraction*peak {
			continue
		}
		busy = append(busy, fmt.Sprintf("%.0f%% (%s)", 100*med/peak, cmp.Or(str(r, "when"), "in the run")))
	}
	return busy
}
