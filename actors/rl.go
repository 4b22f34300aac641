package actors

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// RLOptions is one RL (PPO) topology: an RL learner actor driving Job, pools
// of generator, reference and reward actors it hands work to, N evaluators
// that follow the policy weights over NATS, and a Sink that records what
// happens (the run directory).
type RLOptions struct {
	Job   learner.RLJob
	Model string // weights name on NATS, default "policy"

	NATSURL     string        // "" = start an embedded nats-server with JetStream
	NATSDir     string        // JetStream storage for the embedded server, e.g. RUN_DIR/nats
	NATSOptions []nats.Option // credentials and TLS for NATSURL (NATSConfig.Options)
	Weights     WeightsConfig // how weights travel: nats.weights_dtype, weights_shm, weights_direct (NATSConfig.Weights)

	// Cluster, when set, lets `troupe worker` processes join the run (see
	// ClusterConfig; its RunID must be set, e.g. RunIDOf): the learner joins
	// the cluster as a client, and every worker that joins adds its role
	// actors to the pools beside the local ones until it leaves. nil = every
	// role in this process.
	Cluster *ClusterConfig

	Generators int // generator replicas, e.g. 2 (0 = 1; with Cluster, 0 = none here)
	References int // reference replicas, e.g. 1 (0 = 1; with Cluster, 0 = none here)
	Rewards    int // reward replicas, e.g. 1 (0 = 1; with Cluster, 0 = none here)
	Threads    int // CPU threads of each role's model, e.g. 1 (0 = 1)

	// CheckpointEvery: checkpoint every N iterations (and after the last / on
	// stop), e.g. 10; <= 0 = only at the end.
	CheckpointEvery int

	Evaluators  int                 // evaluator replicas, e.g. 1 (0 = none)
	EvalEvery   int                 // evaluate every k-th published version, default 1
	EvalOptions learner.EvalOptions // what evaluators sample

	// MaxStaleness k > 0 lets iteration j's rollouts be requested while
	// iterations j-k..j-1 still train, sampled with weights at most k versions
	// behind the ones j trains on (asynchronous); 0 = synchronous.
	MaxStaleness int
	// RolloutTimeout: a request (rollout, reference or reward) with no answer
	// within it is re-sent to another member of the pool, default 10m.
	RolloutTimeout time.Duration
	// ChunkSize: prompts per generator request, default ceil(prompts of an
	// iteration / Generators).
	ChunkSize int

	// MaxNonFinite is how many iterations in a row may be refused for a NaN
	// or Inf (learner.ErrNonFinite: skipped, logged) before the run stops,
	// default 5.
	MaxNonFinite int

	Fault FaultInjection // failures on purpose, for tests and demos (zero = none)

	Sink   Sink
	Logger zerolog.Logger
	// StopTimeout bounds the final checkpoint and shutdown after a stop, and
	// the wait for the evaluators' final evaluations, default 1m.
	StopTimeout time.Duration
}

// FaultInjection makes pool members fail on purpose. Requests are counted
// over the whole pool of a role as its members start them (a retried request
// counts again); each fault fires once. The zero value injects nothing.
type FaultInjection struct {
	// PanicGeneratorAfter n: the n-th rollout request panics half-way through
	// (after sampling half of its prompts); 0 = never.
	PanicGeneratorAfter int
	// StallGeneratorAfter n: the n-th rollout request answers only after
	// sleeping Stall (a member that is slow or gone); 0 = never.
	StallGeneratorAfter int
	Stall               time.Duration
	// PanicReferenceAfter, PanicRewardAfter n: the n-th reference / reward
	// request panics before it computes; 0 = never.
	PanicReferenceAfter int
	PanicRewardAfter    int
}

// faults counts requests per role for FaultInjection; shared by every member.
type faults struct {
	opt                 FaultInjection
	gens, refs, rewards atomic.Int64
}

// hit counts one request on c and says whether it is the after-th (after > 0).
func hit(c *atomic.Int64, after int) bool { return c.Add(1) == int64(after) && after > 0 }

// withDefaults validates opt and fills its zero values.
func (opt RLOptions) withDefaults() (RLOptions, error) {
	switch {
	case opt.Job == nil:
		return opt, fmt.Errorf("%w: RLOptions.Job is nil", ErrRun)
	case opt.Sink == nil:
		return opt, fmt.Errorf("%w: RLOptions.Sink is nil", ErrRun)
	case opt.Evaluators < 0:
		return opt, fmt.Errorf("%w: evaluator replicas must be >= 0, got %d", ErrRun, opt.Evaluators)
	case opt.Generators < 0 || opt.References < 0 || opt.Rewards < 0:
		return opt, fmt.Errorf("%w: generator, reference and reward replicas must be >= 1 (0 = 1), got %d, %d, %d",
			ErrRun, opt.Generators, opt.References, opt.Rewards)
	case opt.Threads < 0:
		return opt, fmt.Errorf("%w: threads must be >= 0 (0 = 1), got %d", ErrRun, opt.Threads)
	case opt.MaxNonFinite < 0:
		return opt, fmt.Errorf("%w: MaxNonFinite must be >= 0 (0 = %d), got %d", ErrRun, defaultMaxNonFinite, opt.MaxNonFinite)
	case opt.MaxStaleness < 0:
		return opt, fmt.Errorf("%w: max_staleness must be >= 0 (0 = synchronous), got %d", ErrRun, opt.MaxStaleness)
	case opt.ChunkSize < 0:
		return opt, fmt.Errorf("%w: chunk size must be >= 0 (0 = prompts / generators), got %d", ErrRun, opt.ChunkSize)
	}
	if opt.Model == "" {
		opt.Model = "policy"
	}
	if err := checkModel(opt.Model); err != nil {
		return opt, err
	}
	if c := opt.Cluster; c != nil {
		switch {
		case !validRunID.MatchString(c.RunID):
			return opt, fmt.Errorf("%w: cluster run id %q: want 1 to 64 letters, digits, '.', '-' or '_'", ErrRun, c.RunID)
		case opt.NATSURL == "":
			return opt, fmt.Errorf("%w: a cluster needs an external NATS server (workers fetch the weights there)", ErrRun)
		}
	} else {
		opt.Generators, opt.References, opt.Rewards = max(opt.Generators, 1), max(opt.References, 1), max(opt.Rewards, 1)
	}
	opt.Threads = max(opt.Threads, 1)
	if opt.EvalEvery <= 0 {
		opt.EvalEvery = 1
	}
	if opt.MaxNonFinite == 0 {
		opt.MaxNonFinite = defaultMaxNonFinite
	}
	if opt.RolloutTimeout <= 0 {
		opt.RolloutTimeout = 10 * time.Minute
	}
	if opt.StopTimeout <= 0 {
		opt.StopTimeout = time.Minute
	}
	return opt, nil
}

// runID is what every request carries: the cluster's run id, "" without one.
func (opt RLOptions) runID() string {
	if opt.Cluster == nil {
		return ""
	}
	return opt.Cluster.RunID
}

// RunRL runs an RL topology until the job is done or ctx is cancelled: an
// embedded nats-server (or opt.NATSURL), an actor system logging to
// opt.Logger, and under one supervisor (one-for-one, 10 restarts a minute)
// the generator, reference, reward and evaluator actors and the RL learner.
//
// Every iteration, the learner splits the job's prompts into chunks, has the
// generators sample them with the current policy version (or, with
// MaxStaleness k, one at most k versions older), the reference and reward
// actors fill in reference log-probs and scores, trains on the whole batch,
// and publishes the new weights on NATS, where generators and evaluators pick
// them up. A member that crashes is restarted and retries its request; one
// that does not answer within RolloutTimeout has its request re-sent to
// another. Weights never travel in an actor message.
//
// When the job is done, RunRL waits (up to opt.StopTimeout) for every
// evaluator to evaluate the final weights and returns nil. When ctx is
// cancelled, the learner finishes the update in progress, writes a
// checkpoint, and RunRL returns ctx.Err(). Everything RunRL started is stopped
// before it returns.
func RunRL(ctx context.Context, opt RLOptions) error {
	opt, err := opt.withDefaults()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	log := opt.Logger
	job := opt.Job

	w, err := openWeights(ctx, opt.NATSURL, opt.NATSDir, slices.Concat(opt.NATSOptions, natsLogging(log)),
		opt.Model, opt.Weights, log)
	if err != nil {
		return err
	}
	defer w.close() // after the actors stop (the actor system's shutdown is deferred later)
	nc, pub, url := w.nc, w.pub, w.url

	// Every role is built here, before the learner trains: the job is not
	// safe for concurrent use, the roles it returns each own their models.
	var inflight sync.WaitGroup
	fs := &faults{opt: opt.Fault}
	evals, err := newEvalRuns(opt.Evaluators, func() (learner.Evaluator, error) { return job.NewEvaluator(opt.EvalOptions) },
		nc, opt.Model, opt.EvalEvery, log, &inflight)
	if err != nil {
		return err
	}
	gens := make([]*genRun, opt.Generators)
	for i := range gens {
		name := fmt.Sprintf("generator-%d", i)
		g, err := job.NewGenerator(name, opt.Threads)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrRun, name, err)
		}
		gens[i] = &genRun{name: name, runID: opt.runID(), gen: g, nc: nc, model: opt.Model, log: log.With().Str("actor", name).Logger(), inflight: &inflight, faults: fs}
	}
	refs := make([]*refRun, opt.References)
	for i := range refs {
		name := fmt.Sprintf("reference-%d", i)
		ref, err := job.NewReference(opt.Threads)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrRun, name, err)
		}
		refs[i] = &refRun{name: name, runID: opt.runID(), ref: ref, log: log.With().Str("actor", name).Logger(), inflight: &inflight, faults: fs}
	}
	rewards := make([]*rewardRun, opt.Rewards)
	for i := range rewards {
		name := fmt.Sprintf("reward-%d", i)
		sc, err := job.NewScoring(opt.Threads)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrRun, name, err)
		}
		rewards[i] = &rewardRun{name: name, runID: opt.runID(), sc: sc, log: log.With().Str("actor", name).Logger(), inflight: &inflight, faults: fs}
	}
	lrun := newRLRun(opt, pub, &inflight)

	loggers := actorLoggerFactory(log)
	if opt.Cluster != nil {
		loggers = quietClusterLogs(log)
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(loggers))
	defer sys.Shutdown()
	var node *clusterNode
	if opt.Cluster != nil {
		// Before any actor is spawned: their PIDs take the remoting address.
		if node, err = startCluster(sys, *opt.Cluster, false); err != nil {
			return err
		}
		defer node.stop()
	}
	defer logSupervision(sys, log)()

	log.Info().Str("stage", job.Stage()).Str("algorithm", job.Algorithm()).Int("iteration", job.IterationsDone()).
		Int("total", job.TotalIterations()).Int("generators", opt.Generators).Int("references", opt.References).
		Int("rewards", opt.Rewards).Int("evaluators", opt.Evaluators).Int("max_staleness", opt.MaxStaleness).
		Str("nats", RedactURL(url)).Msg("rl run started")
	result := make(chan topologyResult, 1)
	pid, err := spawnSupervisor(sys, rlTopologyID, func() actor.Actor {
		t := &rlTopology{opt: opt, learner: lrun, gens: gens, refs: refs, rewards: rewards, evals: evals, runEnd: runEnd{
			result: result, stopTimeout: opt.StopTimeout, log: opt.Logger, sink: opt.Sink, learnerName: "RL learner"}}
		t.others = t.remoteEvalsCaughtUp
		return t
	})
	if err != nil {
		return fmt.Errorf("%w: spawn topology: %v", ErrRun, err)
	}
	if node != nil {
		// Membership changes from now on, and the members there already are
		// (the topology greets each member once).
		sub := sys.EventStream.Subscribe(func(evt any) {
			if ct, ok := evt.(*cluster.ClusterTopology); ok {
				sys.Root.Send(pid, &clusterChanged{joined: ct.GetJoined(), left: ct.GetLeft()})
			}
		})
		defer sys.EventStream.Unsubscribe(sub)
		sys.Root.Send(pid, &clusterChanged{joined: node.members()})
		log.Info().Str("address", node.Address()).Strs("members", opt.Cluster.Members).Str("run_id", opt.Cluster.RunID).
			Msg("cluster client started: workers join as they come")
	}

	return awaitEnd(ctx, sys, pid, result, &inflight, opt.StopTimeout, log, "iteration")
}

// rlTopology is the RL run's root actor and the supervisor of every other
// (RunRL gives its props the one-for-one strategy). It tells the learner
// where the pools are, forwards a Stop to it, tells it about a member its
// supervision gave up on, relays evaluations to the Sink, and ends the run as
// topology does.
type rlTopology struct {
	runEnd
	opt     RLOptions
	learner *rlRun
	gens    []*genRun
	refs    []*refRun
	rewards []*rewardRun
	evals   []*evalRun

	greeted map[string]bool // cluster members greeted (or being greeted), by member id
	// remoteEvals are workers' evaluators (from their welcomes): member id
	// by name; early holds evaluations from ones not yet welcomed.
	remoteEvals map[string]string
	early       []*messages.EvalDone

	members map[string]*messages.MemberLost // pool members by PID id
}

var _ actor.Actor = (*rlTopology)(nil)

func (t *rlTopology) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		t.start(ctx)
	case *messages.Stop:
		t.onStop(ctx, msg)
	case *messages.LearnerDone:
		t.onLearnerDone(ctx, msg)
	case *messages.EvalDone:
		name := msg.GetEvaluator()
		if t.evalPIDs[name] == nil && t.remoteEvals[name] == "" {
			// A worker's evaluator whose welcome is still on its way (or
			// a stranger's: never welcomed, never recorded).
			if len(t.early) < maxHeldEvals {
				t.early = append(t.early, msg)
			}
			return
		}
		t.onEvalDone(msg)
	case *clusterChanged:
		t.onClusterChanged(ctx, msg)
	case *helloRetry:
		if t.greeted[msg.m.GetId()] && !t.ended {
			t.hello(ctx, msg.m, msg.try)
		}
	case *drainTimeout:
		t.onDrainTimeout()
	case *actor.Terminated:
		who := msg.GetWho()
		switch {
		case t.learnerTerminated(who):
			return
		case t.members[who.GetId()] != nil:
			lost := t.members[who.GetId()]
			delete(t.members, who.GetId())
			if !t.ended && t.done == nil {
				t.opt.Logger.Error().Str("actor", lost.GetName()).Msg("pool member stopped after repeated failures; its work goes to the others")
				ctx.Send(t.learnerPID, lost)
			}
			return
		}
		t.evalTerminated(who)
	case *actor.Stopping:
		t.onStopping()
	}
}

// start spawns evaluators and pool members, then the learner, which finds
// the members' PIDs in its run state.
func (t *rlTopology) start(ctx actor.Context) {
	t.evalPIDs, t.seen, t.members = map[string]*actor.PID{}, map[string]int64{}, map[string]*messages.MemberLost{}
	t.greeted, t.remoteEvals = map[string]bool{}, map[string]string{}
	spawn := func(name string, p actor.Producer) *actor.PID {
		pid, err := ctx.SpawnNamed(actor.PropsFromProducer(p), name)
		if err != nil {
			t.end(topologyResult{err: fmt.Errorf("%w: spawn %s: %v", ErrRun, name, err)})
			return nil
		}
		return pid
	}
	for _, r := range t.evals {
		pid := spawn(r.name, newEvaluatorProducer(r))
		if pid == nil {
			return
		}
		t.evalPIDs[r.name] = pid
	}
	add := func(p *rlPool, name string, pid *actor.PID) {
		p.members = append(p.members, &poolMember{name: name, pid: pid})
		t.members[pid.GetId()] = &messages.MemberLost{Role: p.role.String(), Name: name}
	}
	for _, r := range t.gens {
		pid := spawn(r.name, newGeneratorProducer(r))
		if pid == nil {
			return
		}
		add(&t.learner.gens, r.name, pid)
	}
	for _, r := range t.refs {
		pid := spawn(r.name, newReferenceProducer(r))
		if pid == nil {
			return
		}
		add(&t.learner.refs, r.name, pid)
	}
	for _, r := range t.rewards {
		pid := spawn(r.name, newRewarderProducer(r))
		if pid == nil {
			return
		}
		add(&t.learner.rewards, r.name, pid)
	}
	t.learnerPID = spawn("learner", newRLLearnerProducer(t.learner))
}

// Messages about the cluster, in this process only.
type (
	clusterChanged struct{ joined, left []*cluster.Member }
	helloRetry     struct {
		m   *cluster.Member
		try int
	}
	// workerJoined and workerLeft tell the learner about a worker's actors.
	workerJoined struct {
		node, addr string
		actors     []*messages.WorkerActor
	}
	workerLeft struct{ node string }
)

// onClusterChanged greets members that joined and tells the learner about
// greeted ones that left.
func (t *rlTopology) onClusterChanged(ctx actor.Context, msg *clusterChanged) {
	for _, m := range msg.left {
		if t.greeted[m.GetId()] {
			delete(t.greeted, m.GetId())
			if t.learnerPID != nil {
				ctx.Send(t.learnerPID, &workerLeft{node: m.GetId()})
			}
			for name, node := range t.remoteEvals {
				if node == m.GetId() {
					// Not waited for at the end any more.
					delete(t.remoteEvals, name)
					t.opt.Logger.Warn().Str("actor", name).Msg("worker's evaluator left the cluster")
				}
			}
		}
	}
	t.checkDrained()
	for _, m := range msg.joined {
		if !t.greeted[m.GetId()] && !t.ended {
			t.greeted[m.GetId()] = true
			t.hello(ctx, m, 1)
		}
	}
}

// hello greets member m's worker actor with this run's id; a welcome adds
// its actors to the learner's pools, a refusal (or another run's welcome) is
// logged, silence is retried a few times.
func (t *rlTopology) hello(ctx actor.Context, m *cluster.Member, try int) {
	log := t.opt.Logger
	pid := actor.NewPID(m.Address(), workerActorID)
	runID := t.opt.runID()
	f := ctx.RequestFuture(pid, &messages.WorkerHello{RunId: runID, Learner: ctx.Self().GetAddress()}, helloTimeout)
	ctx.ReenterAfter(f, func(res any, err error) {
		if !t.greeted[m.GetId()] || t.ended {
			return
		}
		w, ok := res.(*messages.WorkerWelcome)
		switch {
		case err != nil || !ok:
			if try < helloTries {
				self, root := ctx.Self(), ctx.ActorSystem().Root
				time.AfterFunc(time.Second, func() { root.Send(self, &helloRetry{m: m, try: try + 1}) })
				return
			}
			log.Warn().Str("worker", m.Address()).Err(err).Msg("cluster member does not answer as a troupe worker: left out")
		case w.GetError() != "":
			log.Error().Str("worker", m.Address()).Str("why", w.GetError()).Msg("worker refused this run")
		case w.GetRunId() != runID:
			log.Error().Str("worker", m.Address()).Str("worker_run_id", w.GetRunId()).Str("run_id", runID).Msg("worker of another run refused")
		default:
			// A worker's evaluator reports to this actor; the rest are pool
			// members of the learner.
			var pool []*messages.WorkerActor
			for _, a := range w.GetActors() {
				if a.GetRole() != evaluatorRole {
					pool = append(pool, a)
					continue
				}
				t.remoteEvals[a.GetName()] = m.GetId()
				log.Info().Str("actor", a.GetName()).Msg("worker's evaluator joined: its evaluations go to metrics.jsonl")
				early := t.early
				t.early = nil
				for _, d := range early {
					if t.remoteEvals[d.GetEvaluator()] != "" {
						t.onEvalDone(d)
					} else {
						t.early = append(t.early, d)
					}
				}
			}
			if len(pool) > 0 && t.learnerPID != nil {
				ctx.Send(t.learnerPID, &workerJoined{node: m.GetId(), addr: m.Address(), actors: pool})
			}
		}
	})
}

// remoteEvalsCaughtUp reports whether every worker's evaluator has reported
// version final (or a newer one): runEnd waits for them too.
func (t *rlTopology) remoteEvalsCaughtUp(final int64) bool {
	for name := range t.remoteEvals {
		if t.seen[name] < final {
			return false
		}
	}
	return true
}

// ---- what every pool member shares ----

// memberJob is one request a pool member has received.
type memberJob struct {
	msg      proto.Message
	replyTo  *actor.PID // the learner (the request's sender)
	received time.Time
	retries  int64 // times an incarnation of the member crashed while working on it
}

// memberQueue is a pool member's requests: the one in hand (kept in the
// member's run state, so the incarnation after a crash retries it) and the
// ones waiting behind it.
type memberQueue struct {
	current *memberJob
	waiting []*memberJob
}

func (q *memberQueue) push(ctx actor.Context) {
	q.waiting = append(q.waiting, &memberJob{msg: ctx.Message().(proto.Message), replyTo: ctx.Sender(), received: time.Now()})
}

// next is the request in hand, taking the oldest waiting one if none (nil if none).
func (q *memberQueue) next() *memberJob {
	if q.current == nil && len(q.waiting) > 0 {
		q.current, q.waiting = q.waiting[0], q.waiting[1:]
	}
	return q.current
}

// reply answers the request in hand (in one message, or in parts) and drops it.
func (q *memberQueue) reply(ctx actor.Context, log zerolog.Logger, answers ...proto.Message) {
	if j := q.current; j.replyTo != nil {
		for _, a := range answers {
			ctx.Send(j.replyTo, a)
		}
	} else {
		log.Error().Str("request", fmt.Sprintf("%T", j.msg)).Msg("request without a sender: answer dropped")
	}
	q.current = nil
}

// Messages a pool member sends itself about the work it runs off its
// goroutine; they carry Go values and never leave the process.
type (
	workDone     struct{ res any }
	workPanicked struct {
		reason any
		stack  []byte
	}
)

// goWork runs fn on its own goroutine (counted in wg) and sends the member a
// workDone with fn's result, or a workPanicked.
func goWork(ctx actor.Context, wg *sync.WaitGroup, fn func() any) {
	self, root := ctx.Self(), ctx.ActorSystem().Root
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if p := recover(); p != nil {
				root.Send(self, &workPanicked{reason: p, stack: debug.Stack()})
			}
		}()
		root.Send(self, &workDone{res: fn()})
	}()
}

// maxMessageBytes is where an actor message gets too big to cross a process
// comfortably (the remote transport is gRPC with a 4 MB limit).
const maxMessageBytes = 1 << 20

// warnIfLarge logs a message that could not cross a process.
func warnIfLarge(log zerolog.Logger, m proto.Message) {
	if n := proto.Size(m); n > maxMessageBytes {
		log.Warn().Str("message", string(m.ProtoReflect().Descriptor().Name())).Int("bytes", n).
			Msg("actor message over 1 MiB: use a smaller chunk_size before moving roles to other processes")
	}
}

// ---- conversions between learner values and messages ----

func promptsToProto(ps []learner.RLPrompt) []*messages.RLPrompt {
	out := make([]*messages.RLPrompt, len(ps))
	for i, p := range ps {
		out[i] = &messages.RLPrompt{Id: p.ID, Text: p.Text, Tokens: p.Tokens, Answer: p.Answer}
	}
	return out
}

func promptsFromProto(ps []*messages.RLPrompt) []learner.RLPrompt {
	out := make([]learner.RLPrompt, len(ps))
	for i, p := range ps {
		out[i] = learner.RLPrompt{ID: p.GetId(), Text: p.GetText(), Tokens: p.GetTokens(), Answer: p.GetAnswer()}
	}
	return out
}

// rolloutToProto carries what the generator fills in; withLogProbs false
// leaves the behaviour log-probs out (the reference and reward roles do not
// need them).
func rolloutToProto(r *learner.Rollout, withLogProbs bool) *messages.Rollout {
	m := &messages.Rollout{PromptId: r.PromptID, PromptText: r.PromptText, Answer: r.Answer, Prompt: r.Prompt,
		Response: r.Response, Stopped: r.Stopped, Version: r.Version, Generator: r.Generator}
	if withLogProbs {
		m.Logprobs = r.LogProbs
	}
	return m
}

func rolloutFromProto(m *messages.Rollout) learner.Rollout {
	return learner.Rollout{PromptID: m.GetPromptId(), PromptText: m.GetPromptText(), Answer: m.GetAnswer(), Prompt: m.GetPrompt(),
		Response: m.GetResponse(), LogProbs: m.GetLogprobs(), Stopped: m.GetStopped(), Version: m.GetVersion(), Generator: m.GetGenerator()}
}

func rolloutsToProto(rs []learner.Rollout, withLogProbs bool) []*messages.Rollout {
	out := make([]*messages.Rollout, len(rs))
	for i := range rs {
		out[i] = rolloutToProto(&rs[i], withLogProbs)
	}
	return out
}

func rolloutsFromProto(ms []*messages.Rollout) []learner.Rollout {
	out := make([]learner.Rollout, len(ms))
	for i, m := range ms {
		out[i] = rolloutFromProto(m)
	}
	return out
}

// chunkSeed is the sampling seed of the chunk whose first prompt is the
// iteration's first-th: the iteration's seed for the first chunk (so a single
// chunk samples exactly what Generator.Rollout(prompts, RolloutSeed(it))
// does), a splitmix64 mix of both otherwise, so chunks draw from unrelated
// streams. Which generator runs a chunk does not change what it samples.
func chunkSeed(seed uint64, first int) uint64 {
	if first == 0 {
		return seed
	}
	z := seed + uint64(first)*0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}
