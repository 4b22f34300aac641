package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/troupe-rl/troupe/actors"
	"github.com/troupe-rl/troupe/kernels"
	"github.com/troupe-rl/troupe/learner"
)

func init() {
	register(&command{
		name:  "worker",
		usage: "worker --config CONFIG.yaml [--roles generator[,reference,reward,evaluator]] [--host H] [--port P] [--health-port HP]",
		summary: "host RL role actors for a ppo run in another process or on another host: join the learner's cluster " +
			"(cluster section), follow its weights over NATS (nats.url), answer its requests until Ctrl-C",
		run: runWorker,
	})
}

// workerRoles are the roles a worker can host.
var workerRoles = []string{"generator", "reference", "reward", "evaluator"}

// runWorker is `troupe worker`: load the run's config (the learner's own
// file, or its run directory's config.yaml), build only the roles asked for,
// and serve them until SIGINT/SIGTERM.
func runWorker(args []string) error {
	c := commands["worker"]
	fs := newFlags(c)
	cfgPath := fs.String("config", "", "the run's config (the learner's CONFIG.yaml, or RUN_DIR/config.yaml); required")
	roles := fs.String("roles", "generator", "roles to host, comma-separated: "+strings.Join(workerRoles, ", "))
	host := fs.String("host", "", "address to listen on (remoting and health endpoint), default cluster.host")
	advertised := fs.String("advertised-host", "", "address the learner reaches this worker at, default cluster.advertised_host or --host")
	port := fs.Int("port", -1, "remoting port, default cluster.port (0 = any free port)")
	healthPort := fs.Int("health-port", 0, "health endpoint port (this worker's entry in cluster.members), default cluster.health_port")
	threads := fs.Int("threads", 0, "CPU threads of each role's model, default generator.threads")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *cfgPath == "" {
		return fmt.Errorf("%w: --config is required", errUsage)
	}
	want := map[string]bool{}
	for _, r := range strings.Split(*roles, ",") {
		r = strings.TrimSpace(r)
		switch r {
		case "generator", "reference", "reward", "evaluator":
			want[r] = true
		default:
			return fmt.Errorf("%w: --roles: %q is not a role; allowed: %s", errUsage, r, strings.Join(workerRoles, ", "))
		}
	}

	cfg, err := actors.LoadRunConfig(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.Stage != "ppo" {
		return fmt.Errorf("%s: stage %s: workers host the roles of a ppo run", *cfgPath, cfg.Stage)
	}
	cc := cfg.Cluster
	cc.RunID = actors.RunIDOf(cfg)
	if *host != "" {
		cc.Host = *host
	}
	if *advertised != "" {
		cc.AdvertisedHost = *advertised
	}
	if *port >= 0 {
		cc.Port = *port
	}
	if *healthPort != 0 {
		cc.HealthPort = *healthPort
	}
	if *threads <= 0 {
		*threads = max(cfg.Generator.Threads, 1)
	}
	natsOpts, err := cfg.NATS.Options()
	if err != nil {
		return err
	}

	mc, rc := cfg.Model, cfg.Reward
	if mc.Init != "" {
		if mc.Init, err = initCheckpoint("model.init", mc.Init); err != nil {
			return err
		}
	}
	if want["reward"] && rc.Model != "" {
		if rc.Model, err = initCheckpoint("reward.model", rc.Model); err != nil {
			return err
		}
	}
	rl, err := learner.NewRLRoles(learner.RLConfig{Model: mc, PPO: cfg.PPO, Reward: rc, Seed: cfg.Seed})
	if err != nil {
		return fmt.Errorf("building the roles: %w", err)
	}
	// An evaluator measures what the learner's own evaluators measure (the
	// same held-out prompts, reward and reference), so it is built from the
	// whole job, as `troupe run` builds it.
	var ev learner.Evaluator
	if want["evaluator"] {
		job, err := buildJob(cfg, mc, kernels.NewCPU(*threads))
		if err != nil {
			return fmt.Errorf("building the evaluator: %w", err)
		}
		ev, err = job.NewEvaluator(learner.EvalOptions{Prompts: cfg.Evaluator.Prompts, MaxNewTokens: cfg.Evaluator.MaxNewTokens,
			Temperature: cfg.Evaluator.Temperature, Seed: cfg.Seed})
		if err != nil {
			return fmt.Errorf("building the evaluator: %w", err)
		}
	}
	log.Info().Strs("roles", keys(want)).Int("params", rl.Params()).Str("run_id", cc.RunID).Msg("roles built")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return actors.RunWorker(ctx, actors.WorkerOptions{
		Roles: rl, Generator: want["generator"], Reference: want["reference"], Reward: want["reward"],
		Evaluator: ev, EvalEvery: cfg.Evaluator.Every,
		Threads: *threads, NATSURL: cfg.NATS.URL, NATSOptions: natsOpts, Cluster: cc, Logger: log,
	})
}

func keys(m map[string]bool) []string {
	var out []string
	for _, r := range workerRoles {
		if m[r] {
			out = append(out, r)
		}
	}
	return out
}
