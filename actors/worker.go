package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// ErrWorker is wrapped by a worker that cannot start.
var ErrWorker = errors.New("actors: worker")

// WorkerRoles builds the role values a worker hosts; learner.RLRoles does.
type WorkerRoles interface {
	NewGenerator(name string, threads int) (*learner.Generator, error)
	NewReference(threads int) (*learner.Reference, error)
	NewScoring(threads int) (*learner.Scoring, error)
}

// WorkerOptions is one worker process: role actors for an RL run hosted
// outside the learner's process (`troupe worker`).
type WorkerOptions struct {
	Roles WorkerRoles
	// Generator, Reference, Reward: the roles to host, one actor each (at
	// least one).
	Generator, Reference, Reward bool
	Threads                      int    // CPU threads of each role's model, e.g. 1 (0 = 1)
	Model                        string // weights name on NATS, default "policy"

	// Evaluator, if set, is hosted as an evaluator actor: it follows the
	// weights on NATS (every EvalEvery-th version, the first and the final
	// one, skipping to the newest when behind, as the learner's own
	// evaluators) and sends each result to the learner that greeted the
	// worker, which writes it to RUN_DIR/metrics.jsonl (and samples.jsonl)
	// under the evaluator's name, "evaluator@host:port". Results finished
	// before a learner greets the worker wait for it (the newest
	// maxHeldEvals).
	Evaluator learner.Evaluator
	EvalEvery int // default 1

	NATSURL     string        // the run's NATS server(s), required
	NATSOptions []nats.Option // credentials and TLS (NATSConfig.Options)

	// Cluster: RunID (required), Host, AdvertisedHost, Port, HealthPort
	// (this worker's health endpoint, one of Members), Members, TLS.
	Cluster ClusterConfig

	Logger zerolog.Logger
	// Serving, if set, is called once the worker is in the cluster, with
	// its remoting address (tests wait for it).
	Serving func(addr string)
	// StopTimeout bounds the wait for work in progress at shutdown, default 30s.
	StopTimeout time.Duration
}

// RunWorker hosts the roles opt names until ctx is cancelled: it connects to
// NATS, builds each role's model, joins the cluster as a member (its health
// endpoint on Host:HealthPort, its remoting on Host:Port), and answers the
// learner of its run. A generator follows the policy's weights from the
// version current when it starts. Requests carrying another run id are
// refused, as is another run's learner. A crashed role actor is restarted
// (and retries its request) as in the learner's process. On cancel it leaves
// the cluster first, so the learner re-queues its requests at once.
func RunWorker(ctx context.Context, opt WorkerOptions) error {
	switch {
	case opt.Roles == nil:
		return fmt.Errorf("%w: no roles builder", ErrWorker)
	case !opt.Generator && !opt.Reference && !opt.Reward && opt.Evaluator == nil:
		return fmt.Errorf("%w: no role to host: want generator, reference, reward or evaluator", ErrWorker)
	case opt.NATSURL == "":
		return fmt.Errorf("%w: nats.url is required: the learner publishes the weights there", ErrWorker)
	case !validRunID.MatchString(opt.Cluster.RunID):
		return fmt.Errorf("%w: run id %q: want 1 to 64 letters, digits, '.', '-' or '_'", ErrWorker, opt.Cluster.RunID)
	}
	if opt.Model == "" {
		opt.Model = "policy"
	}
	if err := checkModel(opt.Model); err != nil {
		return err
	}
	if opt.StopTimeout <= 0 {
		opt.StopTimeout = 30 * time.Second
	}
	if opt.EvalEvery <= 0 {
		opt.EvalEvery = 1
	}
	log := opt.Logger
	threads := max(opt.Threads, 1)

	nc, err := Connect(opt.NATSURL, slices.Concat(opt.NATSOptions, natsLogging(log))...)
	if err != nil {
		return err
	}
	defer nc.Close()

	// Models first (the slow part), named once the address is known.
	var inflight sync.WaitGroup
	fs := &faults{}
	w := &workerRun{runID: opt.Cluster.RunID, log: log}
	var gen *genRun
	var ref *refRun
	var rew *rewardRun
	if opt.Generator {
		g, err := opt.Roles.NewGenerator("generator", threads)
		if err != nil {
			return fmt.Errorf("%w: generator: %w", ErrWorker, err)
		}
		gen = &genRun{runID: w.runID, gen: g, nc: nc, model: opt.Model, inflight: &inflight, faults: fs}
	}
	if opt.Reference {
		rf, err := opt.Roles.NewReference(threads)
		if err != nil {
			return fmt.Errorf("%w: reference: %w", ErrWorker, err)
		}
		ref = &refRun{runID: w.runID, ref: rf, inflight: &inflight, faults: fs}
	}
	if opt.Reward {
		sc, err := opt.Roles.NewScoring(threads)
		if err != nil {
			return fmt.Errorf("%w: reward: %w", ErrWorker, err)
		}
		rew = &rewardRun{runID: w.runID, sc: sc, inflight: &inflight, faults: fs}
	}
	var ev *evalRun
	if opt.Evaluator != nil {
		ev = &evalRun{ev: opt.Evaluator, nc: nc, model: opt.Model, evalEvery: opt.EvalEvery, inflight: &inflight}
	}

	sys := actor.NewActorSystem(actor.WithLoggerFactory(quietClusterLogs(log)))
	defer sys.Shutdown()
	node, err := startCluster(sys, opt.Cluster, true)
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			node.stop()
		}
	}()
	addr := node.Address()
	named := func(role string) (string, zerolog.Logger) {
		name := role + "@" + addr
		return name, log.With().Str("actor", name).Logger()
	}
	if gen != nil {
		gen.name, gen.log = named(roleGenerator.String())
		gen.gen.Name = gen.name
		w.actors = append(w.actors, workerChild{role: roleGenerator.String(), producer: newGeneratorProducer(gen)})
	}
	if ref != nil {
		ref.name, ref.log = named(roleReference.String())
		w.actors = append(w.actors, workerChild{role: roleReference.String(), producer: newReferenceProducer(ref)})
	}
	if rew != nil {
		rew.name, rew.log = named(roleReward.String())
		w.actors = append(w.actors, workerChild{role: roleReward.String(), producer: newRewarderProducer(rew)})
	}
	if ev != nil {
		ev.name, ev.log = named(evaluatorRole)
		w.actors = append(w.actors, workerChild{role: evaluatorRole, producer: newEvaluatorProducer(ev)})
	}
	for i := range w.actors {
		w.actors[i].name, _ = named(w.actors[i].role)
	}

	defer logSupervision(sys, log)()
	pid, err := spawnSupervisor(sys, workerActorID, func() actor.Actor { return &workerActor{run: w} })
	if err != nil {
		return fmt.Errorf("%w: spawn: %v", ErrWorker, err)
	}
	var roles []string
	for _, a := range w.actors {
		roles = append(roles, a.name)
	}
	// A pause long enough to miss a health poll: rejoin under a new id.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go watchPauses(watchCtx, pauseTick, pauseThreshold, time.Now, func(gap time.Duration) {
		id := node.rejoin()
		log.Warn().Dur("paused", gap).Str("member_id", id).
			Msg("worker was paused past a health poll: rejoining the cluster under a new member id")
	})
	log.Info().Str("address", addr).Strs("actors", roles).Str("run_id", w.runID).Strs("members", opt.Cluster.Members).
		Int("health_port", opt.Cluster.HealthPort).Str("nats", RedactURL(opt.NATSURL)).Msg("worker serving")
	if opt.Serving != nil {
		opt.Serving(addr)
	}

	<-ctx.Done()
	stopWatch()
	log.Info().Msg("worker stopping: leaving the cluster")
	node.stop() // the learner sees it leave at its next poll
	stopped = true
	if _, err := sys.Root.StopFuture(pid).Result(); err != nil {
		log.Warn().Err(err).Msg("worker actors did not stop in time")
	}
	if !waitTimeout(&inflight, opt.StopTimeout) {
		log.Warn().Dur("timeout", opt.StopTimeout).Msg("work still running at shutdown")
	}
	return nil
}

// workerRun is what the worker actor knows of its process.
type workerRun struct {
	runID   string
	log     zerolog.Logger
	actors  []workerChild
	learner string // address of the last learner that greeted it

	held []*messages.EvalDone // evaluations waiting for a learner, oldest first
}

type workerChild struct {
	role     string // "generator", "reference", "reward" or "evaluator"
	name     string // e.g. "generator@10.0.0.7:7711"
	producer actor.Producer
	pid      *actor.PID
}

// evaluatorRole is the role name of a worker's evaluator (WorkerActor.role).
const evaluatorRole = "evaluator"

// rlTopologyID is the actor id of the RL run's root actor in the learner's
// process (RunRL spawns it): where a worker's evaluations go.
const rlTopologyID = "troupe"

// maxHeldEvals bounds the evaluations a worker keeps while no learner is
// attached.
const maxHeldEvals = 64

// workerActor is a worker process's root: the supervisor of its role actors
// (one-for-one, as in the learner's process), and the actor a learner greets
// (WorkerHello) to learn which run the worker serves and where its role
// actors are.
type workerActor struct{ run *workerRun }

var _ actor.Actor = (*workerActor)(nil)

func (a *workerActor) Receive(ctx actor.Context) {
	w := a.run
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		for i := range w.actors {
			c := &w.actors[i]
			pid, err := ctx.SpawnNamed(actor.PropsFromProducer(c.producer), c.role)
			if err != nil {
				panic(fmt.Errorf("worker: spawn %s: %w", c.role, err))
			}
			c.pid = pid
		}
	case *messages.WorkerHello:
		if msg.GetRunId() != w.runID {
			w.log.Error().Str("learner", msg.GetLearner()).Str("learner_run_id", msg.GetRunId()).Str("run_id", w.runID).
				Msg("learner of another run refused")
			ctx.Respond(&messages.WorkerWelcome{RunId: w.runID,
				Error: fmt.Sprintf("this worker serves run %q, the learner's is %q", w.runID, msg.GetRunId())})
			return
		}
		if msg.GetLearner() != w.learner {
			w.learner = msg.GetLearner()
			w.log.Info().Str("learner", w.learner).Msg("learner attached")
		}
		welcome := &messages.WorkerWelcome{RunId: w.runID}
		for _, c := range w.actors {
			if c.pid != nil {
				welcome.Actors = append(welcome.Actors, &messages.WorkerActor{Role: c.role, Id: c.pid.GetId(), Name: c.name})
			}
		}
		ctx.Respond(welcome)
		// Evaluations that waited for a learner go to this one (after the
		// welcome, which tells it this worker's evaluator).
		for _, d := range w.held {
			ctx.Send(actor.NewPID(w.learner, rlTopologyID), d)
		}
		w.held = nil
	case *messages.EvalDone:
		// From this worker's evaluator: to the learner of the run.
		ev := w.log.Info()
		if msg.GetError() != "" {
			ev = w.log.Warn().Str("error", msg.GetError())
		}
		ev.Str("actor", msg.GetEvaluator()).Int64("version", msg.GetVersion()).Int64("step", msg.GetStep()).
			Bool("final", msg.GetFinal()).Float64("seconds", msg.GetSeconds()).Interface("metrics", msg.GetMetrics()).
			Bool("held", w.learner == "").Msg("evaluation done")
		if w.learner == "" {
			if len(w.held) == maxHeldEvals {
				w.held = w.held[1:]
			}
			w.held = append(w.held, msg)
			return
		}
		ctx.Send(actor.NewPID(w.learner, rlTopologyID), msg)
	}
}
