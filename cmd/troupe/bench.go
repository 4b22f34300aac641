package main

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/policy"
)

// The PyTorch reference measures the same configs the same way; it is embedded so
// `troupe bench --torch` works from any directory.
//
//go:embed bench_torch.py
var benchTorchScript []byte

func init() {
	register(&command{
		name:    "bench",
		usage:   "bench --config tiny|small|gpt2[,...] [--device cpu|cuda] [--torch auto|on|off] [--repeats N] [--peak] [--memory gpt2] [--scaling rollout,seq] [--with-broadcast N] [--out DIR] | bench --broadcast N [--subscribers K] | bench --table DIR/bench.jsonl",
		summary: "measure training, generation and scoring tokens/s (and PyTorch's, side by side), FMA peak, memory, scaling",
		run:     runBench,
	})
}

// benchShape is one benchmark configuration: the model, and the training batch,
// exactly those of the PyTorch reference (../shared/bench/run_torch.sh).
type benchShape struct {
	cfg        policy.Config
	batch, seq int // training batch (B, T)
	genBatch   int // generation: prompts per batch
	promptLen  int // tokens per prompt
	newTokens  int // new tokens per prompt
}

func benchShapeFor(name string) (benchShape, error) {
	cfg, err := policy.NamedConfig(name)
	if err != nil {
		return benchShape{}, fmt.Errorf("%w: --config %q has no benchmark shape (allowed: tiny, small, gpt2)", errUsage, name)
	}
	s := benchShape{cfg: cfg, genBatch: 8, promptLen: 16, newTokens: 64}
	switch name {
	case "tiny":
		s.batch, s.seq = 16, 128
	case "small":
		s.batch, s.seq = 8, 256
	case "gpt2":
		s.batch, s.seq = 4, 256
		s.cfg.MaxSeqLen = 256 // the reference's 124M shape uses a 256 context
	default:
		return benchShape{}, fmt.Errorf("%w: --config %q has no benchmark shape (allowed: tiny, small, gpt2)", errUsage, name)
	}
	return s, nil
}

// benchResult is one JSON line of output.
type benchResult map[string]any

func runBench(args []string) error {
	c := commands["bench"]
	fs := newFlags(c)
	configs := fs.String("config", "tiny,small", "comma-separated configs: tiny, small, gpt2 (empty: none)")
	what := fs.String("what", "train,generate,score", "comma-separated measurements: train, generate, score")
	steps := fs.Int("steps", 5, "timed steps per measurement (median reported)")
	warmup := fs.Int("warmup", 2, "untimed warm-up steps")
	repeats := fs.Int("repeats", 1, "run troupe and PyTorch alternately this many times; medians are reported")
	torchMode := fs.String("torch", "auto", "run the PyTorch reference beside troupe: auto (if torch is installed), on, off")
	python := fs.String("python", "/usr/bin/python3", "python with torch for the reference")
	threads := fs.Int("threads", runtime.NumCPU(), "threads for troupe and PyTorch")
	device := fs.String("device", "cpu", "where troupe runs: cpu, or cuda (GPU 0, a build with -tags cuda)")
	batch := fs.Int("batch", 0, "training batch in rows of the config's length; 0 = the config's (times 8 on cuda)")
	broadcast := fs.Int("broadcast", 0, "only time a weight broadcast of this many float32 parameters (e.g. 124439808 for gpt2) against one loopback TCP copy: through shared memory, the NATS fan-out and the direct path (nats.weights_direct), the last two also against --subscribers copies at once, the socket floor; 0 = skip")
	subscribers := fs.Int("subscribers", 4, "weight subscribers for --broadcast, each on its own NATS connection")
	outDir := fs.String("out", "runs/bench", "write the JSON lines to DIR/bench.jsonl (and append them to DIR/history.jsonl) and the table to DIR/table.md (empty: stdout only)")
	peak := fs.Bool("peak", false, "measure the machine's FP32 FMA peak on 1 and --threads threads, for the model FLOP/s fraction, and time small's largest product alone, on troupe and on OpenBLAS")
	memory := fs.String("memory", "", "peak RSS of a child process training this config (e.g. gpt2), beside the lower bound; empty = skip")
	scaling := fs.String("scaling", "", "comma-separated: rollout (tokens/s with 1 and 2 generator actors), seq (train and generate cost at each --seqs); empty = neither")
	seqs := fs.String("seqs", "128,256,512,1024", "sequence lengths for --scaling (at most 1024)")
	rolloutIters := fs.Int("rollout-iters", 3, "PPO iterations per --scaling rollout run (the first is warm-up)")
	gpt2Repeats := fs.Int("gpt2-repeats", 0, "repeats for gpt2 (a repeat takes minutes); 0 = --repeats")
	gpt2Steps := fs.Int("gpt2-steps", 0, "timed steps for gpt2 (its warm-up is then 1); 0 = --steps and --warmup")
	withBroadcast := fs.Int("with-broadcast", 0, "also time a weight broadcast of this many parameters to --subscribers (as --broadcast) among this run's results; 0 = skip")
	table := fs.String("table", "", "only print the table of an earlier run's bench.jsonl (times nothing)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *table != "" {
		lines, err := readBenchLines(*table)
		if err != nil {
			return err
		}
		_, err = io.WriteString(os.Stdout, renderBenchTable(lines))
		return err
	}
	if *broadcast < 0 || *subscribers < 1 {
		return fmt.Errorf("%w: --broadcast must be >= 0 (0 = skip) and --subscribers >= 1", errUsage)
	}
	if *broadcast > 0 {
		return runBroadcastBench(*broadcast, *subscribers, os.Stdout, os.Stderr) // bench_broadcast.go
	}
	if *device != "cpu" && *device != "cuda" {
		return fmt.Errorf("%w: --device %q: allowed values are cpu, cuda", errUsage, *device)
	}
	if *batch < 0 {
		return fmt.Errorf("%w: --batch must be >= 0 (0 = the config's)", errUsage)
	}
	if *device != "cpu" && *torchMode == "auto" {
		*torchMode = "off" // the reference runs PyTorch on the CPU: beside a GPU run it only costs time
	}
	if *steps < 1 || *warmup < 0 || *repeats < 1 || *threads < 1 || *rolloutIters < 2 || *gpt2Repeats < 0 || *gpt2Steps < 0 || *withBroadcast < 0 {
		return fmt.Errorf("%w: --steps, --repeats and --threads must be >= 1, --warmup, --gpt2-repeats, --gpt2-steps and --with-broadcast >= 0, --rollout-iters >= 2", errUsage)
	}
	whats := strings.Split(*what, ",")
	for _, w := range whats {
		if w != "train" && w != "generate" && w != "score" {
			return fmt.Errorf("%w: --what %q: allowed values are train, generate, score", errUsage, w)
		}
	}
	var names []string
	if *configs != "" {
		names = strings.Split(*configs, ",")
	}
	shapes := map[string]benchShape{}
	for _, name := range names {
		shape, err := benchShapeFor(name)
		if err != nil {
			return err
		}
		shapes[name] = shape
	}
	if *memory != "" {
		if _, err := benchShapeFor(*memory); err != nil {
			return fmt.Errorf("--memory: %w", err)
		}
	}
	seqList, err := parseSeqs(*seqs)
	if err != nil {
		return err
	}
	var scaleRollout, scaleSeq bool
	if *scaling != "" {
		for _, k := range strings.Split(*scaling, ",") {
			switch k {
			case "rollout":
				scaleRollout = true
			case "seq":
				scaleSeq = true
			default:
				return fmt.Errorf("%w: --scaling %q: allowed values are rollout, seq", errUsage, k)
			}
		}
	}
	var torchOK bool
	switch *torchMode {
	case "off":
	case "on", "auto":
		err := exec.Command(*python, "-c", "import torch").Run()
		torchOK = err == nil
		if !torchOK && *torchMode == "on" {
			return fmt.Errorf("--torch on: %s cannot import torch (apt-get install python3-torch): %v", *python, err)
		}
		if !torchOK {
			log.Warn().Str("python", *python).Msg("PyTorch not found: reference skipped (apt-get install python3-torch to compare)")
		}
	default:
		return fmt.Errorf("%w: --torch %q: allowed values are auto, on, off", errUsage, *torchMode)
	}
	kernels.SpareP(*threads) // *threads per op, GOMAXPROCS one more (see SpareP)
	out, err := newBenchOut(os.Stdout, *outDir)
	if err != nil {
		return err
	}
	defer out.close()
	out.emit(machineLine(*threads))
	if *peak {
		if err := benchPeak(out, *threads); err != nil {
			return err
		}
	}
	tc := torchRunner{python: *python, ok: torchOK}
	for _, name := range names {
		shape := shapes[name]
		if *batch > 0 {
			shape.batch = *batch
		} else if *device != "cpu" {
			shape.batch *= gpuBatchScale
		}
		reps, st, wu := *repeats, *steps, *warmup
		if name == "gpt2" && *gpt2Repeats > 0 {
			reps = *gpt2Repeats
		}
		if name == "gpt2" && *gpt2Steps > 0 {
			st, wu = *gpt2Steps, min(wu, 1)
		}
		ours := map[string][]benchResult{}
		theirs := map[string][]benchResult{}
		cfgStart := time.Now()
		for r := 0; r < reps; r++ {
			returnMemory()
			res, err := benchTroupe(name, shape, whats, st, wu, *threads, *device)
			if err != nil {
				return err
			}
			for _, x := range res {
				out.emit(x)
				ours[x["bench"].(string)] = append(ours[x["bench"].(string)], x)
			}
			if torchOK {
				res, err := tc.run(name, whats, st, wu, *threads)
				if err != nil {
					return err
				}
				for _, x := range res {
					out.emit(x)
					theirs[x["bench"].(string)] = append(theirs[x["bench"].(string)], x)
				}
			}
			logRepeat(name, r+1, reps, time.Since(cfgStart))
		}
		for _, w := range whats {
			out.emit(benchSummary(name, shape, w, reps, ours[w], theirs[w]))
		}
		if *peak && *device == "cpu" {
			if err := benchPeakRounds(out, *threads, peakRecheckRounds, "after "+name); err != nil {
				return err
			}
			benchGemmCeiling(out, *threads, "after "+name)
		}
	}
	if scaleRollout {
		if err := benchRolloutScaling(out, *rolloutIters); err != nil {
			return err
		}
	}
	if scaleSeq {
		if err := benchSeqScaling(out, tc, seqList, *threads); err != nil {
			return err
		}
	}
	// The measurements that take gigabytes run last, each in child processes:
	// after the broadcast's (~10 GB, freed when its child exits) `small`'s
	// training read 6-27% fewer tokens/s, in 4 of 4 alternating pairs of
	// `troupe bench --config small --what train` with and without
	// --with-broadcast, in a child or not, and troupe runs first in each repeat.
	if *memory != "" {
		if err := benchMemory(out, tc, *memory, *threads); err != nil {
			return err
		}
	}
	if *withBroadcast > 0 {
		if err := benchBroadcastChild(out, *withBroadcast, *subscribers); err != nil { // bench_broadcast.go
			return err
		}
	}
	return out.finish()
}

// logRepeat logs that repeat done of a config's reps is measured, with the
// time since the config started and, from the repeats' mean, the time its
// remaining repeats will take (gpt2's repeats take minutes each).
func logRepeat(name string, done, reps int, elapsed time.Duration) {
	e := log.Info().Str("config", name).Int("repeat", done).Int("of", reps).Str("elapsed", elapsed.Round(time.Second).String())
	if done < reps {
		e = e.Str("eta", (elapsed / time.Duration(done) * time.Duration(reps-done)).Round(time.Second).String())
	}
	e.Msgf("bench: %s, repeat %d of %d measured", name, done, reps)
}

// benchSummary is the summary line of one config's measurement w: troupe's and
// PyTorch's medians over the repeats and their ratio; for training also both
// model GFLOP/s (the same FLOP count for both).
func benchSummary(name string, shape benchShape, w string, repeats int, ours, theirs []benchResult) benchResult {
	key := "tokens_per_s"
	if w == "generate" {
		key = "new_tokens_per_s"
	}
	mine := medianOf(ours, key)
	line := benchResult{"impl": "summary", "config": name, "bench": w, "repeats": repeats, "troupe_" + key: mine}
	fpt := trainFLOPsPerToken(shape.cfg, shape.seq)
	if w == "train" {
		line["batch"], line["seq"] = shape.batch, shape.seq
		line["troupe_model_gflops_per_s"] = round1(fpt * mine / 1e9)
		var best float64
		for _, r := range ours {
			if v, ok := num(r, "best_model_gflops_per_s"); ok {
				best = max(best, v)
			}
		}
		if best > 0 {
			line["troupe_best_model_gflops_per_s"] = best
		}
	}
	if len(theirs) > 0 {
		p := medianOf(theirs, key)
		line["pytorch_"+key] = p
		if w == "train" {
			line["pytorch_model_gflops_per_s"] = round1(fpt * p / 1e9)
		}
		if p > 0 {
			line["ratio"] = round2(mine / p)
		}
	} else {
		line["pytorch"] = "skipped (--torch off, or torch not installed)"
	}
	return line
}

// trainFLOPsPerToken is a training step's model FLOPs per token as PaLM counts
// them: 6*(non-embedding params + LM head) + 12*L*T*C (the attention term over
// the full T, not the causal T/2).
func trainFLOPsPerToken(cfg policy.Config, T int) float64 {
	C, L, V := cfg.Channels, cfg.NumLayers, cfg.VocabSize
	nonEmb := cfg.NewLayout().Total - V*C - cfg.MaxSeqLen*C
	return 6*float64(nonEmb+V*C) + 12*float64(L*T*C)
}

func medianOf(rs []benchResult, key string) float64 {
	var v []float64
	for _, r := range rs {
		if f, ok := r[key].(float64); ok {
			v = append(v, f)
		}
	}
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }
func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }
func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

func medianDuration(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

// scoreStepsFactor multiplies the timed steps of the score measurement, here
// and in bench_torch.py (--score-steps-factor).
const scoreStepsFactor = 4

// timeSteps runs fn warmup times untimed, then steps times, and returns the median.
func timeSteps(warmup, steps int, fn func() error) (time.Duration, error) {
	med, _, err := timeStepsBest(warmup, steps, fn)
	return med, err
}

// timeStepsBest is timeSteps also returning the fastest step.
func timeStepsBest(warmup, steps int, fn func() error) (med, best time.Duration, err error) {
	for i := 0; i < warmup; i++ {
		if err := fn(); err != nil {
			return 0, 0, err
		}
	}
	ts := make([]time.Duration, steps)
	for i := range ts {
		t0 := time.Now()
		if err := fn(); err != nil {
			return 0, 0, err
		}
		ts[i] = time.Since(t0)
	}
	return medianDuration(ts), slices.Min(ts), nil
}

// gpuBatchScale multiplies the configs' CPU training batch on a GPU, which the
// CPU's batch (1024 tokens for gpt2) leaves mostly idle between kernel launches.
const gpuBatchScale = 8

// benchDevice opens the device named by --device.
func benchDevice(name string, threads int) (kernels.Device, error) {
	if name == "cuda" {
		return newCUDADevice() // device_cuda.go, or device_nocuda.go's error
	}
	return kernels.NewCPU(threads), nil
}

func benchTroupe(name string, s benchShape, whats []string, steps, warmup, threads int, device string) ([]benchResult, error) {
	dev, err := benchDevice(device, threads)
	if err != nil {
		return nil, err
	}
	m, err := policy.New(s.cfg, dev)
	if err != nil {
		return nil, err
	}
	m.Init(1)
	rng := rand.New(rand.NewPCG(1, 2))
	randTokens := func(n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32(rng.IntN(s.cfg.VocabSize))
		}
		return t
	}
	cfg := s.cfg
	base := func(bench string) benchResult {
		return benchResult{"impl": "troupe", "device": dev.Name(), "config": name, "threads": threads, "bench": bench,
			"params": m.NumParams()}
	}
	var res []benchResult
	if slices.Contains(whats, "train") {
		log.Info().Str("config", name).Msg("bench: train (forward + backward + AdamW)")
		opt := policy.NewAdamW(m, policy.AdamWConfig{LR: 3e-4, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradClip: 1})
		x, y := randTokens(s.batch*s.seq), randTokens(s.batch*s.seq)
		med, best, err := timeStepsBest(warmup, steps, func() error {
			m.ZeroGrad()
			m.LossAndBackward(x, y, nil, s.batch, s.seq)
			opt.Update(m, 3e-4)
			dev.Sync() // a GPU step is done when its queued kernels are
			return nil
		})
		if err != nil {
			return nil, err
		}
		tps := float64(s.batch*s.seq) / med.Seconds()
		flops := trainFLOPsPerToken(cfg, s.seq)
		r := base("train")
		r["batch"], r["seq"] = s.batch, s.seq
		r["ms_per_step"] = round1(float64(med.Microseconds()) / 1e3)
		r["tokens_per_s"] = round1(tps)
		r["model_gflops_per_s"] = round1(flops * tps / 1e9)
		// The fastest step too: on a shared machine the median carries the
		// other tenants' load, the best step what the kernels do on a quiet one.
		r["best_ms_per_step"] = round1(float64(best.Microseconds()) / 1e3)
		r["best_model_gflops_per_s"] = round1(flops * float64(s.batch*s.seq) / best.Seconds() / 1e9)
		if peak, gpu := devicePeak(dev); gpu != "" {
			r["gpu"] = gpu
			if peak > 0 {
				r["peak_tf32_tflops"] = round1(peak / 1e12)
				r["mfu"] = round3(flops * tps / peak)
			}
		}
		res = append(res, r)
	}
	var seqs [][]int32
	if slices.Contains(whats, "generate") || slices.Contains(whats, "score") {
		log.Info().Str("config", name).Msg("bench: generate (KV cache, sampling)")
		prompts := make([][]int32, s.genBatch)
		for i := range prompts {
			prompts[i] = randTokens(s.promptLen)
		}
		opt := policy.SampleOptions{MaxNewTokens: s.newTokens, Temperature: 1, Seed: 1}
		var newTok int
		med, err := timeSteps(1, genSteps(steps), func() error {
			samples, err := m.Generate(prompts, opt)
			if err != nil {
				return err
			}
			newTok = 0
			seqs = seqs[:0]
			for i, smp := range samples {
				newTok += len(smp.Tokens)
				seqs = append(seqs, append(slices.Clone(prompts[i]), smp.Tokens...))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if slices.Contains(whats, "generate") {
			r := base("generate")
			r["batch"], r["prompt_len"], r["new_tokens"] = s.genBatch, s.promptLen, s.newTokens
			r["ms"] = round1(float64(med.Microseconds()) / 1e3)
			r["new_tokens_per_s"] = round1(float64(newTok) / med.Seconds())
			res = append(res, r)
		}
	}
	if slices.Contains(whats, "score") {
		log.Info().Str("config", name).Msg("bench: score (log-probs of every next token)")
		var n int
		for _, q := range seqs {
			n += len(q) - 1
		}
		// A scoring step is short (~0.1 s for small), so it is timed
		// scoreStepsFactor times as often as the others for a steadier median
		// (the PyTorch reference does the same).
		med, err := timeSteps(1, scoreStepsFactor*steps, func() error {
			_, err := m.LogProbs(seqs)
			return err
		})
		if err != nil {
			return nil, err
		}
		r := base("score")
		r["batch"], r["seq"] = len(seqs), len(seqs[0])-1
		r["ms"] = round1(float64(med.Microseconds()) / 1e3)
		r["tokens_per_s"] = round1(float64(n) / med.Seconds())
		res = append(res, r)
	}
	return res, nil
}

// genSteps is how many generation calls a measurement times (each side): as
// many as the other measurements' steps, at least 3. It was max(2, steps/2), so
// a median of two calls (their mean) carried a single slow one whole on this
// shared VM, where the same build's repeats ranged 1185-1795 new tokens/s.
func genSteps(steps int) int { return max(3, steps) }

// openBLASCore is the OpenBLAS kernel set a CPU backend description names
// ("openblas SkylakeX + ..." -> "SkylakeX"), or "" for another backend.
func openBLASCore(backend string) string {
	rest, ok := strings.CutPrefix(backend, "openblas ")
	if !ok {
		return ""
	}
	core, _, _ := strings.Cut(rest, " ")
	return core
}

// torchRunner runs the embedded PyTorch reference (bench_torch.py) when ok.
type torchRunner struct {
	python string
	ok     bool
}

// run measures config name's whats with the reference.
func (t torchRunner) run(name string, whats []string, steps, warmup, threads int) ([]benchResult, error) {
	res, _, err := t.exec([]string{"--config", name, "--what", strings.Join(whats, ","),
		"--steps", fmt.Sprint(steps), "--warmup", fmt.Sprint(warmup), "--gen-steps", fmt.Sprint(genSteps(steps)),
		"--score-steps-factor", fmt.Sprint(scoreStepsFactor)}, threads)
	return res, err
}

// exec runs the reference with args (and --threads) in a child process and
// returns its JSON lines and the child's peak RSS in bytes (0 where unknown).
func (t torchRunner) exec(args []string, threads int) ([]benchResult, int64, error) {
	dir, err := os.MkdirTemp("", "troupe-bench-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "bench_torch.py")
	if err := os.WriteFile(script, benchTorchScript, 0o644); err != nil {
		return nil, 0, err
	}
	log.Info().Strs("args", args).Msg("bench: PyTorch reference")
	cmd := exec.Command(t.python, append([]string{script, "--threads", fmt.Sprint(threads)}, args...)...)
	// torch's OpenMP pool and OpenBLAS's threads otherwise spin against each other.
	cmd.Env = append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE")
	// Debian's torch links the same OpenBLAS, which falls back to pre-AVX kernels on
	// CPUs newer than it knows; troupe re-selects the right kernel set for itself
	// (kernels/gemm_blas.go), so give PyTorch the same one: the comparison is then
	// of the two implementations, not of a misdetected CPU.
	if core := openBLASCore(kernels.NewCPU(1).Backend()); core != "" && os.Getenv("OPENBLAS_CORETYPE") == "" {
		cmd.Env = append(cmd.Env, "OPENBLAS_CORETYPE="+core)
	}
	stdout, rss, err := runChild(cmd)
	if err != nil {
		return nil, 0, fmt.Errorf("pytorch reference failed: %w", err)
	}
	res, err := parseBenchLines(stdout)
	if err != nil {
		return nil, 0, fmt.Errorf("pytorch reference: %w", err)
	}
	return res, rss, nil
}

// parseBenchLines reads JSON lines (blank lines skipped); a bad line is an
// error naming it.
func parseBenchLines(b []byte) ([]benchResult, error) {
	var res []benchResult
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r benchResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("line %d is not a JSON object (%q): %v", n, sc.Text(), err)
		}
		res = append(res, r)
	}
	return res, sc.Err()
}

// returnMemory collects what earlier measurements left (the last repeat's
// model; the broadcast's ~7 GB of buffers, when it ran in this process) and
// hands the freed memory back to the OS now, before the next measurement,
// instead of letting the runtime's background scavenger return it while that
// measurement runs. On the 2-vCPU VM each page handed back also costs the
// VM's page-table bookkeeping, and after ~7 GB of garbage the scavenger
// returned 3.6 GB during the first `small` repeat. Four fresh `small` models
// stepped right after 7 GB had been freed: median steps ~530 and ~494 ms
// with the background scavenger, ~470 and ~498 with this first.
func returnMemory() { debug.FreeOSMemory() } // a collection, then the freed memory returned
