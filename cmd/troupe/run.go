package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/troupe-rl/troupe/actors"
	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner"
)

func init() {
	register(&command{
		name:    "run",
		usage:   "run CONFIG.yaml [--resume] | run RUN_DIR --resume",
		summary: "train one stage (pretrain, sft, rm) as the config describes: learner and evaluator actors, weights over NATS, a run directory with metrics, samples, checkpoints and plots",
		run:     runRun,
	})
}

// jobConstructors builds a stage's job; every stage has the same signature.
var jobConstructors = map[string]func(learner.ModelConfig, learner.DataConfig, learner.TrainConfig, uint64, kernels.Device) (learner.Job, error){
	"pretrain": learner.NewPretrain,
	"sft":      learner.NewSFT,
	"rm":       learner.NewRM,
}

// runOptions are the knobs of a run that are not in its config (tests set them).
type runOptions struct {
	resume    bool
	plotEvery time.Duration   // plot refresh, e.g. 30s
	ctx       context.Context // nil = cancelled by SIGINT/SIGTERM
	stdout    io.Writer       // the final figures
	afterStep func(step int)  // called after every step's records are written, e.g. to cancel ctx
}

// stepHookSink calls a function after each OnStep (tests stop runs with it).
type stepHookSink struct {
	actors.Sink
	fn func(step int)
}

func (s stepHookSink) OnStep(m learner.StepMetrics, version int64) {
	s.Sink.OnStep(m, version)
	s.fn(m.Step)
}

// runRun is `troupe run`: load and check the config, build the stage's job
// (before touching the run directory, so a bad data file leaves nothing
// behind), restore the latest checkpoint when resuming, then run the learner
// and evaluator actors until the job is done or Ctrl-C, and print the final
// figures.
func runRun(args []string) error {
	c := commands["run"]
	fs := newFlags(c)
	resume := fs.Bool("resume", false, "continue from the run directory's latest checkpoint (optimizer, step, RNG and data position restored)")
	plotEvery := fs.Duration("plot-every", 30*time.Second, "redraw RUN_DIR/plots this often while the run goes")
	// Flags may follow the argument (`troupe run x.yaml --resume`): parse twice.
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: want CONFIG.yaml or RUN_DIR", errUsage)
	}
	target := fs.Arg(0)
	if err := parseFlags(fs, fs.Args()[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return runStage(target, runOptions{resume: *resume, plotEvery: *plotEvery, stdout: os.Stdout})
}

func runStage(target string, o runOptions) error {
	cfgPath, cfg, err := loadForRun(target, o.resume)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		log.Warn().Msg(w)
	}
	if err := cfg.CheckFiles(); err != nil {
		var ce *actors.ConfigError
		if errors.As(err, &ce) {
			ce.File = cfgPath
		}
		return err
	}

	natsOpts, err := cfg.NATS.Options()
	if err != nil {
		return err
	}

	// The run directory: usable (checked now, before the job is built, which
	// may take minutes of data loading); fresh runs need it empty; --resume
	// on an empty one starts afresh (so a script can always pass --resume).
	if err := actors.CheckRunDir(cfg.RunDir); err != nil {
		return err
	}
	empty, err := actors.IsEmptyDir(cfg.RunDir)
	if err != nil {
		return err
	}
	var ckptDir string
	resumeStep := 0
	switch {
	case !o.resume && !empty:
		return fmt.Errorf("run directory %s is not empty: continue it with `troupe run %s --resume`, or set run_dir to a new directory", cfg.RunDir, cfg.RunDir)
	case o.resume && empty:
		log.Info().Str("run_dir", cfg.RunDir).Msg("nothing to resume: starting afresh")
		o.resume = false
	case o.resume:
		ckptDir, resumeStep, err = actors.LatestCheckpoint(cfg.RunDir)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("nothing to resume in %s: it has no checkpoints/latest (the run stopped before its first checkpoint); remove the directory to start again", cfg.RunDir)
		} else if err != nil {
			return err
		}
		if err := checkResumeConfig(cfg); err != nil {
			return err
		}
	}

	mc := cfg.Model
	if mc.Init != "" {
		if mc.Init, err = initCheckpoint("model.init", mc.Init); err != nil {
			return err
		}
		log.Info().Str("init", mc.Init).Msg("model starts from a checkpoint")
	}
	dev, err := learnerDevice(cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	job, err := buildJob(cfg, mc, dev)
	if err != nil {
		return fmt.Errorf("building the %s job: %w", cfg.Stage, err)
	}
	report := job.DataReport()
	logDataReport(cfg.Stage, report, time.Since(start))
	if o.resume {
		if err := job.Restore(ckptDir); err != nil {
			return fmt.Errorf("resuming from %s: %w", ckptDir, err)
		}
		if job.done() != resumeStep {
			return fmt.Errorf("resuming from %s: the checkpoint says step %d, its directory name step %d", ckptDir, job.done(), resumeStep)
		}
		log.Info().Int("step", resumeStep).Str("checkpoint", ckptDir).Msg("resumed")
	}

	if !o.resume {
		if err := os.MkdirAll(cfg.RunDir, 0o755); err != nil {
			return err
		}
	}
	header := fmt.Sprintf("resolved run config (defaults filled in, paths relative to this directory)\nwritten by troupe run %s at %s", target, time.Now().UTC().Format(time.RFC3339))
	if err := actors.SaveRunConfig(filepath.Join(cfg.RunDir, actors.ConfigFile), cfg, header); err != nil {
		return err
	}

	// Progress: a live line on a terminal, which log lines then step around;
	// periodic log lines otherwise.
	logger := log
	popt := actors.ProgressOptions{Logger: log, Stage: cfg.Stage, Total: job.total(), Start: job.done()}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		popt.Terminal = os.Stderr
	}
	prog := actors.NewProgress(popt)
	if popt.Terminal != nil {
		logger = zerolog.New(prog.LogWriter(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly})).
			Level(log.GetLevel()).With().Timestamp().Logger()
	}

	rd, err := actors.OpenRunDir(cfg.RunDir, actors.RunDirOptions{Stage: cfg.Stage, Keep: cfg.Checkpoint.Keep,
		Resume: o.resume, ResumeStep: resumeStep, PlotEvery: o.plotEvery, Logger: logger})
	if err != nil {
		return err
	}

	// Ctrl-C (or SIGTERM) cancels the context: the learner finishes its step,
	// writes a checkpoint, and Run returns.
	ctx, stopSignals := o.ctx, context.CancelFunc(func() {})
	if ctx == nil {
		ctx, stopSignals = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stopSignals()
	}
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			stopSignals() // a second Ctrl-C kills the process the usual way
			logger.Warn().Msg("stopping: writing a checkpoint (Ctrl-C again to abort without one)")
		case <-finished:
		}
	}()

	sink := actors.WithProgress(rd, prog)
	if o.afterStep != nil {
		sink = stepHookSink{Sink: sink, fn: o.afterStep}
	}
	model := "policy"
	if cfg.Stage == "rm" {
		model = "reward"
	}
	evalOpts := learner.EvalOptions{Prompts: cfg.Evaluator.Prompts, MaxNewTokens: cfg.Evaluator.MaxNewTokens,
		Temperature: cfg.Evaluator.Temperature, Seed: cfg.Seed}
	// The starting point is always measured: evaluator actors follow the newest
	// weights and may skip the initial version when the learner outruns them, so
	// a fresh run evaluates its initial weights here, once, before training (the
	// "initial" figures, recorded as version 0 at step 0).
	if !o.resume && cfg.Evaluator.Replicas > 0 {
		ev, err := job.NewEvaluator(evalOpts)
		if err != nil {
			return err
		}
		r, err := ev.Evaluate(job.Weights())
		if err != nil {
			return fmt.Errorf("evaluating the initial weights: %w", err)
		}
		sink.OnEval("initial", 0, 0, r)
	}
	var cluster *actors.ClusterConfig
	if cfg.Cluster.Enabled {
		cc := cfg.Cluster
		cc.RunID = actors.RunIDOf(cfg)
		cluster = &cc
	}
	var runErr error
	switch j := job.(type) {
	case rlStage:
		runErr = actors.RunRL(ctx, actors.RLOptions{
			Job: j.RLJob, Model: model,
			NATSURL: cfg.NATS.URL, NATSDir: filepath.Join(cfg.RunDir, actors.NATSDir), NATSOptions: natsOpts, Weights: cfg.NATS.Weights(), Cluster: cluster,
			Generators: cfg.Generator.Replicas, References: cfg.Reference.Replicas, Rewards: cfg.Reward.Replicas,
			Threads: cfg.Generator.Threads, CheckpointEvery: cfg.Checkpoint.Every,
			Evaluators: cfg.Evaluator.Replicas, EvalEvery: cfg.Evaluator.Every, EvalOptions: evalOpts,
			MaxStaleness: cfg.PPO.MaxStaleness, MaxNonFinite: cfg.MaxNonFinite,
			Sink: sink, Logger: logger, StopTimeout: 2 * time.Minute,
		})
	case lmStage:
		runErr = actors.Run(ctx, actors.Options{
			Job: j.Job, Model: model,
			NATSURL: cfg.NATS.URL, NATSDir: filepath.Join(cfg.RunDir, actors.NATSDir), NATSOptions: natsOpts, Weights: cfg.NATS.Weights(),
			PublishEvery: cfg.Publish.Every, CheckpointEvery: cfg.Checkpoint.Every, MaxNonFinite: cfg.MaxNonFinite,
			Evaluators: cfg.Evaluator.Replicas, EvalEvery: cfg.Evaluator.Every,
			EvalOptions: evalOpts,
			Sink:        sink, Logger: logger, StopTimeout: 2 * time.Minute,
		})
	}
	prog.Finish()
	if err := rd.Close(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		if errors.Is(runErr, context.Canceled) {
			_, step, err := actors.LatestCheckpoint(cfg.RunDir)
			if err != nil {
				return fmt.Errorf("interrupted, and no checkpoint was written: %v", err)
			}
			return fmt.Errorf("interrupted: checkpoint at step %d written; continue with `troupe run %s --resume`", step, cfg.RunDir)
		}
		return runErr
	}
	return printFigures(o.stdout, cfg, report)
}

// stageJob is what runStage needs of a job, whatever the stage.
type stageJob interface {
	DataReport() learner.DataReport
	Restore(dir string) error
	NewEvaluator(learner.EvalOptions) (learner.Evaluator, error)
	Weights() []float32
	done() int  // optimizer steps (pretrain, sft, rm) or iterations (ppo) done
	total() int // ... configured
}

type lmStage struct{ learner.Job }

func (j lmStage) done() int  { return j.StepsDone() }
func (j lmStage) total() int { return j.TotalSteps() }

type rlStage struct{ learner.RLJob }

func (j rlStage) done() int  { return j.IterationsDone() }
func (j rlStage) total() int { return j.TotalIterations() }

// learnerDevice is the device the config's `device` names for the learner's
// model: the CPU with `threads` threads, or GPU 0.
func learnerDevice(cfg actors.RunConfig) (kernels.Device, error) {
	if cfg.Device != "cuda" {
		return kernels.NewCPU(cfg.Threads), nil
	}
	dev, err := newCUDADevice() // device_cuda.go, or device_nocuda.go's error
	if err != nil {
		return nil, fmt.Errorf("device: cuda: %w", err)
	}
	return dev, nil
}

// buildJob builds the stage's job; mc is cfg.Model with init resolved.
func buildJob(cfg actors.RunConfig, mc learner.ModelConfig, dev kernels.Device) (stageJob, error) {
	if cfg.Stage != "ppo" {
		j, err := jobConstructors[cfg.Stage](mc, cfg.Data, cfg.Train, cfg.Seed, dev)
		if err != nil {
			return nil, err
		}
		return lmStage{j}, nil
	}
	rc, cc := cfg.Reward, cfg.Critic
	var err error
	if rc.Model != "" {
		if rc.Model, err = initCheckpoint("reward.model", rc.Model); err != nil {
			return nil, err
		}
		log.Info().Str("reward_model", rc.Model).Msg("reward model")
	}
	if cc.Init != "policy" && cc.Init != "reward" {
		if cc.Init, err = initCheckpoint("critic.init", cc.Init); err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(cc.Init, learner.CriticDir)); err == nil {
			cc.Init = filepath.Join(cc.Init, learner.CriticDir) // a ppo checkpoint: its critic
		}
	}
	j, err := learner.NewPPO(learner.RLConfig{Model: mc, Data: cfg.Data, PPO: cfg.PPO, Critic: cc, Reward: rc, Seed: cfg.Seed}, dev)
	if err != nil {
		return nil, err
	}
	return rlStage{j}, nil
}

// loadForRun loads the config that target names: a CONFIG.yaml, or (with
// --resume) a run directory's saved config.yaml. It returns the file's path.
func loadForRun(target string, resume bool) (string, actors.RunConfig, error) {
	st, err := os.Stat(target)
	if err != nil {
		return "", actors.RunConfig{}, err
	}
	if st.IsDir() {
		if !resume {
			return "", actors.RunConfig{}, fmt.Errorf("%w: %s is a directory: continue a run with `troupe run %s --resume`, or start one from a CONFIG.yaml", errUsage, target, target)
		}
		target = filepath.Join(target, actors.ConfigFile)
	}
	cfg, err := actors.LoadRunConfig(target)
	return target, cfg, err
}

// checkResumeConfig compares the config of a resumed run with the one its
// directory saved: the stage, seed, model, data and train sections must
// match (the job's Restore refuses a checkpoint of another config, since the
// losses would no longer be those of one run); the rest (checkpoint,
// publish, evaluator, nats, threads) may change, with a warning.
func checkResumeConfig(cfg actors.RunConfig) error {
	saved, err := actors.LoadRunConfig(filepath.Join(cfg.RunDir, actors.ConfigFile))
	if err != nil {
		return fmt.Errorf("resuming %s: %w", cfg.RunDir, err)
	}
	a, b := reflect.ValueOf(saved), reflect.ValueOf(cfg)
	for i := 0; i < a.NumField(); i++ {
		if reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			continue
		}
		key, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("yaml"), ",")
		switch key {
		case "stage", "seed", "model", "data", "train", "ppo", "critic", "reward":
			return fmt.Errorf("resuming %s: %s differs from the run's saved config.yaml; a checkpoint continues only the run that wrote it (run_dir names a new run to start one)", cfg.RunDir, key)
		}
		log.Warn().Str("section", key).Msg("resuming with a config that differs from the run's saved config.yaml; the new one is saved")
	}
	return nil
}

// initCheckpoint returns the checkpoint directory that model.init names: the
// directory itself, or for a run directory its best checkpoint (else its latest).
func initCheckpoint(field, dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, actors.CheckpointsDir)); err != nil {
		return dir, nil // a checkpoint directory; the job checks it
	}
	if ckpt, _, err := actors.BestCheckpoint(dir); err == nil {
		return ckpt, nil
	}
	ckpt, _, err := actors.LatestCheckpoint(dir)
	if err != nil {
		return "", fmt.Errorf("%s: run directory %s has no checkpoint: %w", field, dir, err)
	}
	return ckpt, nil
}

// logDataReport logs what the job read, every malformed line included.
func logDataReport(stage string, r learner.DataReport, took time.Duration) {
	ev := log.Info().Strs("files", r.Files).Int("lines", r.Lines).Int("bad_lines", r.Bad).
		Int("train_items", r.TrainItems).Int("val_items", r.ValItems).Str("took", took.Round(time.Millisecond).String())
	if stage == "pretrain" {
		ev = ev.Float64("unigram_entropy_nats", r.UnigramEntropy)
	}
	ev.Msg("data loaded")
	for _, e := range r.BadLines {
		log.Warn().Msg(e.Error())
	}
	if r.Bad > len(r.BadLines) {
		log.Warn().Int("not_listed", r.Bad-len(r.BadLines)).Msg("more malformed lines than listed")
	}
}

// printFigures prints the stage's final figures from metrics.jsonl, and where
// the plots and checkpoints are.
func printFigures(w io.Writer, cfg actors.RunConfig, report learner.DataReport) error {
	m, err := actors.ReadMetrics(filepath.Join(cfg.RunDir, actors.MetricsFile))
	if err != nil {
		return err
	}
	first, okFirst := m.FirstEval()
	last, okLast := m.LastEval()
	fmt.Fprintf(w, "%s run finished: %s\n", cfg.Stage, cfg.RunDir)
	if n := len(m.Steps); n > 0 {
		s := m.Steps[n-1]
		if cfg.Stage == "ppo" {
			fmt.Fprintf(w, "  iterations %d, final reward %.4f (score %.4f, KL %.4f), %.1f s\n", s.Step, s.Extra["reward_mean"], s.Extra["score_mean"], s.Extra["kl"], s.Elapsed)
		} else {
			fmt.Fprintf(w, "  steps %d, final train loss %.4f, %.1f s of training\n", s.Step, s.Loss, s.Elapsed)
		}
	}
	if !okLast {
		fmt.Fprintf(w, "  no evaluations (evaluator.replicas is 0)\n")
	} else {
		switch cfg.Stage {
		case "pretrain":
			if v, ok := last.Eval["val_loss"]; ok {
				h := report.UnigramEntropy
				fmt.Fprintf(w, "  final val loss     %.4f nats/token (step %d)\n", v, last.Step)
				fmt.Fprintf(w, "  unigram entropy    %.4f nats/token (same tokenizer)\n", h)
				fmt.Fprintf(w, "  below unigram by   %.4f nats\n", h-v)
			}
		case "sft":
			v0, ok0 := first.Eval["val_loss"]
			v1, ok1 := last.Eval["val_loss"]
			if okFirst && ok0 && ok1 {
				fmt.Fprintf(w, "  held-out response loss: initial %.4f (step %d, version %d) -> final %.4f (step %d): %+.4f\n",
					v0, first.Step, first.Version, v1, last.Step, v1-v0)
			}
		case "rm":
			if v, ok := last.Eval["val_accuracy"]; ok {
				fmt.Fprintf(w, "  held-out pairwise accuracy %.2f%% (step %d)\n", 100*v, last.Step)
			}
		case "ppo":
			if okFirst {
				printRLComparison(w, first, last)
			}
		}
		names := make([]string, 0, len(last.Eval))
		for k := range last.Eval {
			names = append(names, k)
		}
		sort.Strings(names)
		fmt.Fprintf(w, "  final evaluation (step %d, version %d):\n", last.Step, last.Version)
		for _, k := range names {
			fmt.Fprintf(w, "    %-32s %.4f\n", k, last.Eval[k])
		}
	}
	if dir, _, err := actors.LatestCheckpoint(cfg.RunDir); err == nil {
		fmt.Fprintf(w, "  last checkpoint    %s\n", dir)
	}
	if dir, _, err := actors.BestCheckpoint(cfg.RunDir); err == nil {
		fmt.Fprintf(w, "  best checkpoint    %s\n", dir)
	}
	fmt.Fprintf(w, "  plots              %s (and loss, lr, throughput, accuracy .png/.svg beside it)\n",
		filepath.Join(cfg.RunDir, actors.PlotsDir, "overview.png"))
	fmt.Fprintf(w, "  samples            %s\n", filepath.Join(cfg.RunDir, actors.SamplesFile))
	return nil
}

// printRLComparison prints the starting policy (the first evaluation, of the
// initial weights) and the trained one side by side on the held-out prompts.
func printRLComparison(w io.Writer, first, last actors.EvalRecord) {
	rows := []struct{ key, label string }{
		{"val_exact_match", "exact-match accuracy (greedy)"},
		{"val_score", "reward score (greedy)"},
		{"val_score_rm", "reward-model score (greedy)"},
		{"val_kl", "KL to the reference (nats/sample)"},
		{"val_entropy", "entropy (nats/token)"},
		{"val_distinct1", "distinct-1 of samples"},
		{"val_distinct2", "distinct-2 of samples"},
		{"val_response_len", "response length (tokens)"},
	}
	fmt.Fprintf(w, "  held-out prompts       %-34s %10s %10s %10s\n", "", "start", "trained", "change")
	for _, r := range rows {
		a, okA := first.Eval[r.key]
		b, okB := last.Eval[r.key]
		if !okA || !okB {
			continue
		}
		fmt.Fprintf(w, "    %-53s %10.4f %10.4f %+10.4f\n", r.label, a, b, b-a)
	}
}
