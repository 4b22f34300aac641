package actors

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-rl/troupe/actors/messages"
	"github.com/troupe-rl/troupe/learner"
)

// rlRole names a pool.
type rlRole int

const (
	roleGenerator rlRole = iota
	roleReference
	roleReward
)

func (r rlRole) String() string { return [...]string{"generator", "reference", "reward"}[r] }

// poolMember is the learner's view of one member of a pool.
type poolMember struct {
	name string
	pid  *actor.PID
	busy int64  // request it is working on (0 = idle); it stays busy after a timeout until it answers
	lost bool   // stopped for good by its supervisor, gone from the cluster, or refusing this run
	node string // cluster member id of the worker hosting it ("" = in this process)
}

// rlPool is one role's members and the requests waiting for a free one.
type rlPool struct {
	role    rlRole
	members []*poolMember
	queue   []int64 // request ids, oldest first (a timed-out one goes to the front)
}

func (p *rlPool) member(name string) *poolMember {
	for _, m := range p.members {
		if m.name == name {
			return m
		}
	}
	return nil
}

// idle is a free member, preferring one other than avoid (nil if none).
func (p *rlPool) idle(avoid string) *poolMember {
	var fallback *poolMember
	for _, m := range p.members {
		if m.lost || m.busy != 0 {
			continue
		}
		if m.name != avoid {
			return m
		}
		fallback = m
	}
	return fallback
}

func (p *rlPool) live() int {
	n := 0
	for _, m := range p.members {
		if !m.lost {
			n++
		}
	}
	return n
}

// rlRequest is one request the learner has made of a pool, until its first
// answer arrives (later answers to it are discarded).
type rlRequest struct {
	id      int64
	role    rlRole
	iter    int // iteration
	chunk   int // chunk of the iteration
	lo, hi  int // the chunk's rollouts a reference or reward request covers
	msg     proto.Message
	parts   map[string]*rolloutParts // a generator's answer arriving in parts, by member
	member  string                   // member it was last sent to ("" = waiting in the pool's queue)
	avoid   string                   // member it timed out on or was lost with
	attempt int                      // sends so far
	timer   *time.Timer
}

// rlChunk is a contiguous run of an iteration's prompts that one generator
// request samples; its rollouts then go to one reference and one reward
// request.
type rlChunk struct {
	first    int // index of prompts[0] in the iteration
	prompts  []learner.RLPrompt
	rollouts []learner.Rollout // SamplesPerPrompt per prompt, in prompt order, once generated
	// stages done, by role: rollouts sampled, RefLogProbs filled, Score
	// filled (the last two with the last of their requests' answers)
	done [roleReward + 1]bool
	// reference and reward requests not answered yet, by role (a chunk's
	// rollouts go in more than one when a request would pass maxMessageBytes)
	left [roleReward + 1]int
}

// rlIteration is one iteration between its rollout requests and its update.
type rlIteration struct {
	it         int
	minVersion int64 // oldest weights version its rollouts may come from
	chunks     []*rlChunk
	left       int // chunks not through all three stages

	requested time.Time // first rollout request queued
	generated time.Time // last rollout batch arrived
	tokens    int       // response tokens sampled

	busySec [roleReward + 1]float64 // members' working seconds by role, summed
	waitSec float64                 // generators' seconds waiting for weights, summed
	retries int64                   // requests retried after a crash, a timeout or a lost member
}

// rlRun is the RL learner's state that outlives one actor incarnation. Only
// the learner actor's goroutine touches it; while training is true, the job
// and the publisher belong to the training goroutine.
type rlRun struct {
	job      learner.RLJob
	pub      *WeightPublisher
	sink     Sink
	log      zerolog.Logger
	inflight *sync.WaitGroup

	gens, refs, rewards rlPool // members filled in by the topology before the learner starts (workers' ones as they join)
	runID               string // carried by every request ("" = a run in one process)
	clustered           bool   // workers may join: an empty pool waits for them instead of failing
	waitNoted           int    // 1 + the iteration whose wait for a generator was logged

	maxStaleness    int
	maxNonFinite    int // consecutive non-finite iterations that end the run
	nonFinite       int // consecutive non-finite iterations so far
	lastGoodCkpt    string
	timeout         time.Duration
	chunkSize       int // 0 = ceil(prompts / generators)
	checkpointEvery int

	phase          learnerPhase
	stopReason     string
	total, samples int   // iterations configured, completions per prompt
	startIter      int   // iterations done when the run started
	startVersion   int64 // version of the weights published at the start
	version        int64 // last published version
	finalVersion   int64 // version published with final=true (0 = none)
	lastCheckpoint int   // iterations done at the last checkpoint (the resumed ones count)

	trainNext int // next iteration to train
	nextIter  int // next iteration to request rollouts for
	iters     map[int]*rlIteration
	reqs      map[int64]*rlRequest // outstanding requests by id
	lastID    int64
	training  bool  // a training goroutine is running (possibly started by a crashed incarnation)
	discarded int64 // late answers discarded so far
}

func newRLRun(opt RLOptions, pub *WeightPublisher, inflight *sync.WaitGroup) *rlRun {
	return &rlRun{
		job: opt.Job, pub: pub, sink: opt.Sink, log: opt.Logger.With().Str("actor", "learner").Logger(), inflight: inflight,
		gens: rlPool{role: roleGenerator}, refs: rlPool{role: roleReference}, rewards: rlPool{role: roleReward},
		maxStaleness: opt.MaxStaleness, maxNonFinite: opt.MaxNonFinite, timeout: opt.RolloutTimeout, chunkSize: opt.ChunkSize, checkpointEvery: opt.CheckpointEvery,
		iters: map[int]*rlIteration{}, reqs: map[int64]*rlRequest{},
		runID: opt.runID(), clustered: opt.Cluster != nil,
	}
}

func (r *rlRun) pool(role rlRole) *rlPool {
	return [...]*rlPool{&r.gens, &r.refs, &r.rewards}[role]
}

// pools is every pool, by role.
func (r *rlRun) pools() []*rlPool {
	return []*rlPool{&r.gens, &r.refs, &r.rewards}
}

// minVersion is the oldest version iteration j's rollouts may be sampled
// with: the version j would train on synchronously, less MaxStaleness.
func (r *rlRun) minVersion(j int) int64 {
	return max(r.startVersion, r.startVersion+int64(j-r.startIter-r.maxStaleness))
}

// RLLearner drives a learner.RLJob: each iteration it asks the generator
// pool for rollouts of the job's prompts, chunk by chunk, passes every chunk
// on to the reference and reward pools as it arrives, trains once every
// prompt has its rollouts, log-probs and scores, and publishes the new
// weights. It keeps up to MaxStaleness iterations' rollouts in flight ahead
// of the one training, and refuses (fails the run) to train on a rollout
// more than MaxStaleness versions old. Requests go to idle members; one
// unanswered after the timeout, or held by a member that is lost, is re-sent
// to another, and the first answer wins.
//
// Training (Train, publish, checkpoint) runs off the actor's goroutine so
// that rollouts of later iterations keep flowing; a panic there crashes the
// actor and the restarted incarnation trains the same rollouts again.
//
// Behaviours: starting (publish the initial weights) → running → stopping
// (final checkpoint once the update in progress is done).
type RLLearner struct {
	run      *rlRun
	behavior actor.Behavior
}

var _ actor.Actor = (*RLLearner)(nil)

// Messages the learner sends itself; they never leave the process.
type (
	requestTimeout struct {
		id      int64
		attempt int
	}
	trainDone struct {
		it          int
		m           learner.StepMetrics
		err         error
		skipped     error // a learner.ErrNonFinite iteration: nothing trained, the run goes on
		announce    *messages.WeightsAnnounce
		checkpoint  string // directory written, "" = none
		done        bool   // the job is done
		iterations  int    // iterations done after this update
		train, pub  float64
		ckptSeconds float64
	}
	trainPanicked struct {
		it     int
		reason any
		stack  []byte
	}
)

func newRLLearnerProducer(run *rlRun) actor.Producer {
	return func() actor.Actor {
		l := &RLLearner{run: run, behavior: actor.NewBehavior()}
		l.behavior.Become(l.starting)
		return l
	}
}

// Receive stops the request timers on Stopping, then dispatches to the
// behaviour.
func (l *RLLearner) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*actor.Stopping); ok {
		for _, q := range l.run.reqs {
			if q.timer != nil {
				q.timer.Stop()
			}
		}
		return
	}
	l.behavior.Receive(ctx)
}

func (l *RLLearner) starting(ctx actor.Context) {
	r := l.run
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		switch r.phase {
		case phaseStarting:
			r.total, r.samples = r.job.TotalIterations(), max(1, r.job.SamplesPerPrompt())
			r.startIter = r.job.IterationsDone()
			r.trainNext, r.nextIter, r.lastCheckpoint = r.startIter, r.startIter, r.startIter
			if !r.clustered && (r.gens.live() == 0 || r.refs.live() == 0 || r.rewards.live() == 0) {
				l.fail(ctx, fmt.Errorf("empty pool: %d generators, %d references, %d rewards", r.gens.live(), r.refs.live(), r.rewards.live()))
				return
			}
			// Version 1 on a fresh store: the weights every iteration-0
			// rollout is sampled with, and the evaluators' starting figures.
			a, err := l.publish(r.job.IterationsDone(), r.job.Done())
			if err != nil {
				l.fail(ctx, err)
				return
			}
			r.startVersion = a.Version
			r.phase = phaseTraining
			fallthrough
		case phaseTraining:
			l.behavior.Become(l.running)
			l.advance(ctx)
		case phaseStopping:
			l.behavior.Become(l.stopping)
			if !r.training {
				l.stop(ctx)
			}
		case phaseFinished:
			l.behavior.Become(l.stopping)
		}
	default:
		r.log.Debug().Str("message", fmt.Sprintf("%T", msg)).Msg("learner: message before start ignored")
	}
}

func (l *RLLearner) running(ctx actor.Context) {
	r := l.run
	switch msg := ctx.Message().(type) {
	case *messages.RolloutBatch:
		l.onRollouts(ctx, msg)
	case *messages.RefResult:
		l.onStage(ctx, roleReference, msg, func(rs []learner.Rollout) error { return setRefLogProbs(rs, msg.GetLogprobs()) })
	case *messages.ScoreResult:
		l.onStage(ctx, roleReward, msg, func(rs []learner.Rollout) error { return setScores(rs, msg.GetScores()) })
	case *requestTimeout:
		l.onTimeout(ctx, msg)
	case *messages.MemberLost:
		l.onLost(ctx, msg)
	case *workerJoined:
		l.onWorkerJoined(ctx, msg)
	case *workerLeft:
		l.onWorkerLeft(ctx, msg)
	case *trainDone:
		l.onTrained(ctx, msg)
	case *trainPanicked:
		r.training = false
		panic(fmt.Errorf("learner: Train of iteration %d panicked: %v\n%s", msg.it, msg.reason, msg.stack))
	case *messages.Stop:
		r.phase, r.stopReason = phaseStopping, msg.GetReason()
		l.behavior.Become(l.stopping)
		if !r.training {
			l.stop(ctx)
		}
	case *actor.Restarting:
		r.log.Warn().Int("iteration", r.trainNext).Msg("learner restarting; its update is retried")
	}
}

// stopping waits for the update in progress, then writes the stop
// checkpoint; everything else is ignored.
func (l *RLLearner) stopping(ctx actor.Context) {
	r := l.run
	switch msg := ctx.Message().(type) {
	case *trainDone:
		if !l.onTrained(ctx, msg) {
			return
		}
		if r.phase == phaseStopping {
			l.stop(ctx)
		}
	case *trainPanicked:
		r.training = false
		panic(fmt.Errorf("learner: Train of iteration %d panicked while stopping: %v\n%s", msg.it, msg.reason, msg.stack))
	}
}

// advance is what the learner does whenever something changed: request the
// rollouts now allowed, hand out queued requests, and train (or finish) when
// the next iteration is complete.
func (l *RLLearner) advance(ctx actor.Context) {
	r := l.run
	if r.phase != phaseTraining || r.training {
		l.dispatchAll(ctx)
		return
	}
	if r.job.Done() {
		l.finish(ctx)
		return
	}
	if err := l.schedule(); err != nil {
		l.fail(ctx, err)
		return
	}
	l.dispatchAll(ctx)
	l.maybeTrain(ctx)
}

// schedule requests rollouts for every iteration allowed now: up to
// MaxStaleness past the one to train next. Only while no update runs (it
// asks the job for prompts).
func (l *RLLearner) schedule() error {
	r := l.run
	for r.nextIter < r.total && r.nextIter <= r.trainNext+r.maxStaleness && r.minVersion(r.nextIter) <= r.version {
		if r.clustered && r.gens.live() == 0 {
			// Chunks are sized by the generators there are: wait for one.
			if r.waitNoted != r.nextIter+1 {
				r.waitNoted = r.nextIter + 1
				r.log.Info().Int("iteration", r.nextIter).Msg("waiting for a generator: none in this process, no worker has joined")
			}
			return nil
		}
		j := r.nextIter
		prompts := r.job.Prompts(j)
		if len(prompts) == 0 {
			return fmt.Errorf("iteration %d has no prompts", j)
		}
		it := &rlIteration{it: j, minVersion: r.minVersion(j), requested: time.Now()}
		size := r.chunkSize
		if size <= 0 {
			// Every generator there is (the local ones, lost or not, as
			// before workers existed; the workers' live ones).
			n := 0
			for _, m := range r.gens.members {
				if m.node == "" || !m.lost {
					n++
				}
			}
			size = (len(prompts) + n - 1) / max(n, 1)
		}
		seed := r.job.RolloutSeed(j)
		req := func(ps []learner.RLPrompt, first int) *messages.RolloutRequest {
			return &messages.RolloutRequest{Iteration: int64(j), Prompts: promptsToProto(ps),
				Seed: chunkSeed(seed, first), MinVersion: it.minVersion, FirstIndex: int64(first), RunId: r.runID}
		}
		for size > 1 && proto.Size(req(prompts[:size], 0)) > maxMessageBytes-messageSlack {
			size = (size + 1) / 2
		}
		for first := 0; first < len(prompts); first += size {
			ch := &rlChunk{first: first, prompts: prompts[first:min(first+size, len(prompts))]}
			it.chunks = append(it.chunks, ch)
			id := l.newRequest(roleGenerator, j, len(it.chunks)-1)
			m := req(ch.prompts, first)
			m.RequestId = id
			r.reqs[id].msg = m
		}
		it.left = len(it.chunks)
		r.iters[j] = it
		r.nextIter++
		r.log.Debug().Int("iteration", j).Int("prompts", len(prompts)).Int("chunks", len(it.chunks)).
			Int64("min_version", it.minVersion).Int64("version", r.version).Msg("rollouts requested")
	}
	return nil
}

// newRequest queues a request (its message set by the caller) on role's pool.
func (l *RLLearner) newRequest(role rlRole, iter, chunk int) int64 {
	r := l.run
	r.lastID++
	r.reqs[r.lastID] = &rlRequest{id: r.lastID, role: role, iter: iter, chunk: chunk}
	p := r.pool(role)
	p.queue = append(p.queue, r.lastID)
	return r.lastID
}

func (l *RLLearner) dispatchAll(ctx actor.Context) {
	for _, p := range l.run.pools() {
		l.dispatch(ctx, p)
	}
}

// dispatch sends p's queued requests to its idle members, each with a
// timeout.
func (l *RLLearner) dispatch(ctx actor.Context, p *rlPool) {
	r := l.run
	self, root := ctx.Self(), ctx.ActorSystem().Root
	for len(p.queue) > 0 {
		q := r.reqs[p.queue[0]]
		if q == nil || q.member != "" { // answered meanwhile
			p.queue = p.queue[1:]
			continue
		}
		m := p.idle(q.avoid)
		if m == nil {
			return
		}
		p.queue = p.queue[1:]
		m.busy, q.member = q.id, m.name
		q.attempt++
		ctx.Request(m.pid, q.msg)
		id, attempt := q.id, q.attempt
		q.timer = time.AfterFunc(r.timeout, func() { root.Send(self, &requestTimeout{id: id, attempt: attempt}) })
	}
}

// answered records an answer to request id from member: the member is free
// again, and the request is returned, or nil when it was answered before
// (the answer is a duplicate and is discarded).
func (l *RLLearner) answered(p *rlPool, id int64, member string) *rlRequest {
	r := l.run
	if m := p.member(member); m != nil && m.busy == id {
		m.busy = 0
	}
	q := r.reqs[id]
	if q == nil || q.role != p.role {
		r.discarded++
		r.log.Debug().Str("role", p.role.String()).Str("member", member).Int64("request", id).Msg("late answer discarded")
		return nil
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	delete(r.reqs, id)
	return q
}

func (l *RLLearner) onRollouts(ctx actor.Context, b *messages.RolloutBatch) {
	r := l.run
	if b.GetRefused() != "" {
		l.onRefused(ctx, &r.gens, b.GetGenerator(), b.GetRequestId(), b.GetRefused())
		return
	}
	if b.GetTotal() > 0 {
		// A part: keep it until the member's whole answer is in.
		q := r.reqs[b.GetRequestId()]
		if q == nil || q.role != roleGenerator {
			return // a part of an answer already had (the whole is discarded when its last part comes)
		}
		if q.parts == nil {
			q.parts = map[string]*rolloutParts{}
		}
		rp := q.parts[b.GetGenerator()]
		if rp == nil {
			rp = &rolloutParts{}
			q.parts[b.GetGenerator()] = rp
		}
		if b = rp.add(b); b == nil {
			return
		}
	}
	q := l.answered(&r.gens, b.GetRequestId(), b.GetGenerator())
	if q == nil {
		l.advance(ctx)
		return
	}
	it := r.iters[q.iter]
	ch := it.chunks[q.chunk]
	if b.GetError() != "" {
		l.fail(ctx, fmt.Errorf("%s: iteration %d, prompts %d..%d: %s", b.GetGenerator(), q.iter, ch.first, ch.first+len(ch.prompts)-1, b.GetError()))
		return
	}
	rs := rolloutsFromProto(b.GetRollouts())
	if err := l.checkRollouts(it, ch, b.GetGenerator(), rs); err != nil {
		l.fail(ctx, err)
		return
	}
	ch.rollouts, ch.done[roleGenerator] = rs, true
	it.generated = time.Now()
	for i := range rs {
		it.tokens += len(rs[i].Response)
	}
	it.busySec[roleGenerator] += b.GetSeconds()
	it.waitSec += b.GetWaitSeconds()
	it.retries += b.GetRetries()

	l.requestStage(q, ch, roleReference, refRollouts(rs), func(id int64, part []*messages.Rollout) proto.Message {
		return &messages.RefRequest{Iteration: int64(q.iter), RequestId: id, Rollouts: part, RunId: r.runID}
	})
	l.requestStage(q, ch, roleReward, rolloutsToProto(rs, false), func(id int64, part []*messages.Rollout) proto.Message {
		return &messages.ScoreRequest{Iteration: int64(q.iter), RequestId: id, Rollouts: part, RunId: r.runID}
	})
	l.advance(ctx)
}

// requestStage queues role's requests for the rollouts of q's chunk ch (rs,
// as that role's requests carry them): one request, or more where one would
// pass maxMessageBytes. msg is the request for id covering part.
func (l *RLLearner) requestStage(q *rlRequest, ch *rlChunk, role rlRole, rs []*messages.Rollout, msg func(id int64, part []*messages.Rollout) proto.Message) {
	r := l.run
	for _, rg := range requestRanges(role, rs) {
		id := l.newRequest(role, q.iter, q.chunk)
		r.reqs[id].lo, r.reqs[id].hi = rg[0], rg[1]
		r.reqs[id].msg = msg(id, rs[rg[0]:rg[1]])
		ch.left[role]++
	}
}

// refRollouts is what a reference needs of each rollout: its tokens.
func refRollouts(rs []learner.Rollout) []*messages.Rollout {
	out := make([]*messages.Rollout, len(rs))
	for i := range rs {
		out[i] = &messages.Rollout{PromptId: rs[i].PromptID, Prompt: rs[i].Prompt, Response: rs[i].Response}
	}
	return out
}

// checkRollouts refuses a batch that does not match its request: every prompt
// SamplesPerPrompt times, in order, sampled with min_version or newer.
func (l *RLLearner) checkRollouts(it *rlIteration, ch *rlChunk, gen string, rs []learner.Rollout) error {
	r := l.run
	if len(rs) != len(ch.prompts)*r.samples {
		return fmt.Errorf("%s: iteration %d: %d rollouts for %d prompts × %d samples", gen, it.it, len(rs), len(ch.prompts), r.samples)
	}
	for i := range rs {
		switch {
		case rs[i].PromptID != ch.prompts[i/r.samples].ID:
			return fmt.Errorf("%s: iteration %d: rollout %d is for prompt %d, want %d", gen, it.it, i, rs[i].PromptID, ch.prompts[i/r.samples].ID)
		case rs[i].Version < it.minVersion:
			return fmt.Errorf("%s: iteration %d: rollout sampled with version %d, older than the %d requested", gen, it.it, rs[i].Version, it.minVersion)
		case len(rs[i].LogProbs) != len(rs[i].Response):
			return fmt.Errorf("%s: iteration %d: %d log-probs for %d response tokens", gen, it.it, len(rs[i].LogProbs), len(rs[i].Response))
		}
	}
	return nil
}

// stageAnswer is what a reference's and a reward's answers share.
type stageAnswer interface {
	GetMember() string
	GetRequestId() int64
	GetRefused() string
	GetError() string
	GetSeconds() float64
	GetRetries() int64
}

// onStage records a reference's or a reward's answer (role's): fill writes
// it into the rollouts its request covered, or says why it does not fit
// them.
func (l *RLLearner) onStage(ctx actor.Context, role rlRole, res stageAnswer, fill func(rs []learner.Rollout) error) {
	r := l.run
	p := r.pool(role)
	if res.GetRefused() != "" {
		l.onRefused(ctx, p, res.GetMember(), res.GetRequestId(), res.GetRefused())
		return
	}
	q := l.answered(p, res.GetRequestId(), res.GetMember())
	if q == nil {
		l.advance(ctx)
		return
	}
	it := r.iters[q.iter]
	ch := it.chunks[q.chunk]
	if res.GetError() != "" {
		l.fail(ctx, fmt.Errorf("%s: iteration %d: %s", res.GetMember(), q.iter, res.GetError()))
		return
	}
	if err := fill(ch.rollouts[q.lo:q.hi]); err != nil {
		l.fail(ctx, fmt.Errorf("%s: iteration %d: %w", res.GetMember(), q.iter, err))
		return
	}
	ch.left[role]--
	ch.done[role] = ch.left[role] == 0
	it.busySec[role] += res.GetSeconds()
	it.retries += res.GetRetries()
	l.chunkStage(it, ch)
	l.advance(ctx)
}

// setRefLogProbs writes a reference's answer into the rollouts it covered.
func setRefLogProbs(rs []learner.Rollout, lps []*messages.LogProbs) error {
	if len(lps) != len(rs) {
		return fmt.Errorf("%d log-prob rows for %d rollouts", len(lps), len(rs))
	}
	for i, lp := range lps {
		if len(lp.GetValues()) != len(rs[i].Response) {
			return fmt.Errorf("%d reference log-probs for %d response tokens", len(lp.GetValues()), len(rs[i].Response))
		}
		rs[i].RefLogProbs = lp.GetValues()
	}
	return nil
}

// setScores writes a reward's answer into the rollouts it covered.
func setScores(rs []learner.Rollout, scores []*messages.RolloutScore) error {
	if len(scores) != len(rs) {
		return fmt.Errorf("%d scores for %d rollouts", len(scores), len(rs))
	}
	for i, sc := range scores {
		rs[i].Score, rs[i].ScoreParts = sc.GetTotal(), sc.GetParts()
	}
	return nil
}

// chunkStage counts ch as complete once all three stages are in.
func (l *RLLearner) chunkStage(it *rlIteration, ch *rlChunk) {
	if ch.done[roleGenerator] && ch.done[roleReference] && ch.done[roleReward] {
		it.left--
	}
}

// onTimeout re-sends a request its member has not answered in time. The
// member stays busy until it answers (its answer may still come first).
func (l *RLLearner) onTimeout(ctx actor.Context, msg *requestTimeout) {
	r := l.run
	q := r.reqs[msg.id]
	if q == nil || q.attempt != msg.attempt || q.member == "" {
		return
	}
	r.log.Warn().Str("role", q.role.String()).Str("member", q.member).Int64("request", q.id).Int("iteration", q.iter).
		Dur("timeout", r.timeout).Msg("no answer in time; request re-sent to another member")
	l.requeue(q)
	l.advance(ctx)
}

// requeue puts q at the front of its pool's queue, away from its member.
func (l *RLLearner) requeue(q *rlRequest) {
	r := l.run
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
	r.iters[q.iter].retries++
	delete(q.parts, q.member) // what it sent of an answer in parts
	q.avoid, q.member = q.member, ""
	p := r.pool(q.role)
	p.queue = append([]int64{q.id}, p.queue...)
}

// onLost takes a member out of its pool; its request goes to another.
func (l *RLLearner) onLost(ctx actor.Context, msg *messages.MemberLost) {
	r := l.run
	p := r.poolNamed(msg.GetRole())
	if p == nil {
		return
	}
	m := p.member(msg.GetName())
	if m == nil || m.lost {
		return
	}
	m.lost = true
	if q := r.reqs[m.busy]; q != nil && q.member == m.name {
		l.requeue(q)
	}
	m.busy = 0
	if p.live() == 0 {
		if !r.clustered {
			l.fail(ctx, fmt.Errorf("every %s stopped after repeated failures", p.role))
			return
		}
		r.log.Warn().Str("role", p.role.String()).Msg("no live member left in this pool: its work waits for a worker to join")
	}
	l.advance(ctx)
}

// onRefused takes out of its pool a member that refused a request (it
// serves another run); the request goes to another.
func (l *RLLearner) onRefused(ctx actor.Context, p *rlPool, name string, id int64, why string) {
	r := l.run
	r.log.Error().Str("role", p.role.String()).Str("member", name).Str("why", why).Msg("member refused this run's request: taken out of the pool")
	if m := p.member(name); m != nil && !m.lost {
		l.onLost(ctx, &messages.MemberLost{Role: p.role.String(), Name: name})
		return
	}
	if q := r.reqs[id]; q != nil && q.member == name {
		l.requeue(q)
	}
	l.advance(ctx)
}

// onWorkerJoined adds a worker's role actors to their pools (a worker that
// comes back under the same name takes its old place), then hands them work.
func (l *RLLearner) onWorkerJoined(ctx actor.Context, w *workerJoined) {
	r := l.run
	var names []string
	for _, a := range w.actors {
		p := r.poolNamed(a.GetRole())
		if p == nil {
			r.log.Warn().Str("role", a.GetRole()).Str("worker", w.addr).Msg("worker hosts a role this learner does not use")
			continue
		}
		pid := actor.NewPID(w.addr, a.GetId())
		if m := p.member(a.GetName()); m != nil {
			// The same name again: a restarted worker on the same address.
			// Whatever its previous incarnation held is not coming back.
			if q := r.reqs[m.busy]; q != nil && q.member == m.name {
				l.requeue(q)
			}
			m.pid, m.node, m.lost, m.busy = pid, w.node, false, 0
		} else {
			p.members = append(p.members, &poolMember{name: a.GetName(), pid: pid, node: w.node})
		}
		names = append(names, a.GetName())
	}
	r.log.Info().Str("worker", w.addr).Strs("members", names).Msg("worker joined: its actors take work")
	l.advance(ctx)
}

// onWorkerLeft takes a worker's actors out of their pools at once: the
// cluster says it is gone, so its requests go to the others now rather than
// after RolloutTimeout.
func (l *RLLearner) onWorkerLeft(ctx actor.Context, w *workerLeft) {
	r := l.run
	requeued := 0
	var names []string
	for _, p := range r.pools() {
		for _, m := range p.members {
			if m.node != w.node || m.lost {
				continue
			}
			m.lost = true
			if q := r.reqs[m.busy]; q != nil && q.member == m.name {
				l.requeue(q)
				requeued++
			}
			m.busy = 0
			names = append(names, m.name)
		}
	}
	if len(names) == 0 {
		return
	}
	r.log.Warn().Strs("members", names).Int("requeued", requeued).Msg("worker left the cluster: its requests go to the others")
	for _, p := range r.pools() {
		if p.live() == 0 {
			r.log.Warn().Str("role", p.role.String()).Msg("no live member left in this pool: its work waits for a worker to join")
		}
	}
	l.advance(ctx)
}

func (r *rlRun) poolNamed(role string) *rlPool {
	for _, p := range r.pools() {
		if p.role.String() == role {
			return p
		}
	}
	return nil
}

// maybeTrain starts the update of the next iteration once it is complete.
func (l *RLLearner) maybeTrain(ctx actor.Context) {
	r := l.run
	it := r.iters[r.trainNext]
	if it == nil || it.left > 0 {
		return
	}
	rs := make([]learner.Rollout, 0, len(it.chunks)*r.samples)
	for _, ch := range it.chunks {
		rs = append(rs, ch.rollouts...)
	}
	// The PPO ratio is taken against each rollout's own behaviour log-probs,
	// so a stale rollout is fine up to the bound, and an error past it.
	for i := range rs {
		if lag := r.version - rs[i].Version; lag < 0 || lag > int64(r.maxStaleness) {
			l.fail(ctx, fmt.Errorf("iteration %d: rollout of prompt %d sampled with version %d, the learner is at %d: lag %d outside 0..%d (max_staleness)",
				it.it, rs[i].PromptID, rs[i].Version, r.version, lag, r.maxStaleness))
			return
		}
	}
	r.training = true
	job, pub, sink, version, every := r.job, r.pub, r.sink, r.version, r.checkpointEvery
	self, root, n := ctx.Self(), ctx.ActorSystem().Root, it.it
	r.inflight.Add(1)
	go func() {
		defer r.inflight.Done()
		defer func() {
			if p := recover(); p != nil {
				root.Send(self, &trainPanicked{it: n, reason: p, stack: debug.Stack()})
			}
		}()
		d := &trainDone{it: n}
		start := time.Now()
		d.m, d.err = job.Train(n, rs, version)
		d.train = time.Since(start).Seconds()
		if errors.Is(d.err, learner.ErrNonFinite) {
			// The iteration counts (its prompts are used up) and its version is
			// published as usual, since versions pace the generators; it is not
			// checkpointed.
			d.skipped, d.err = d.err, nil
		}
		if d.err != nil {
			root.Send(self, d)
			return
		}
		d.done, d.iterations = job.Done(), job.IterationsDone()
		start = time.Now()
		d.announce, d.err = publishWeights(r.log, pub, d.iterations, d.done, job.Weights())
		d.pub = time.Since(start).Seconds()
		if d.err != nil {
			root.Send(self, d)
			return
		}
		if d.skipped == nil && (d.done || (every > 0 && d.iterations%every == 0)) {
			start = time.Now()
			dir := sink.CheckpointDir(d.iterations)
			if err := job.SaveCheckpoint(dir); err != nil {
				os.RemoveAll(dir) // a staging directory: the last good checkpoint stays
				d.err = fmt.Errorf("checkpoint iteration %d not written: %w", d.iterations, err)
			} else {
				d.checkpoint = dir
			}
			d.ckptSeconds = time.Since(start).Seconds()
		}
		root.Send(self, d)
	}()
}

// publishTry bounds one try of a weights publish; a failed try (NATS down
// or restarting: nats.go reconnects meanwhile) is retried until
// publishTimeout has passed.
const (
	publishTry     = time.Minute
	publishBackoff = time.Second
)

// publishWeights stores and announces w. Unlike the single-learner run, a
// publish that keeps failing ends the run: generators wait for every version.
// A retried try stores the same version again (the object is replaced); an
// announcement that went out twice is the same version, which subscribers
// take once.
func publishWeights(log zerolog.Logger, pub *WeightPublisher, step int, final bool, w []float32) (*messages.WeightsAnnounce, error) {
	deadline := time.Now().Add(publishTimeout)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), min(publishTry, time.Until(deadline)))
		a, err := pub.Publish(ctx, step, final, w)
		cancel()
		if a != nil {
			// Stored and announced; only an old blob's delete may have failed.
			return a, nil
		}
		if time.Until(deadline) < publishBackoff {
			return nil, fmt.Errorf("publish weights after iteration %d: %w", step, err)
		}
		log.Warn().Err(err).Int("try", try).Int("iteration", step).Msg("weights publish failed; retrying (NATS unreachable?)")
		time.Sleep(publishBackoff)
	}
}

// onTrained records an update: reports it, then asks for what comes next. It
// returns false when the update failed (the run is ending).
func (l *RLLearner) onTrained(ctx actor.Context, d *trainDone) bool {
	r := l.run
	r.training = false
	if d.err != nil {
		l.fail(ctx, fmt.Errorf("iteration %d: %w", d.it, d.err))
		return false
	}
	if d.skipped != nil {
		r.nonFinite++
		if r.nonFinite >= r.maxNonFinite {
			last := r.lastGoodCkpt
			if last == "" {
				last = "none"
			}
			l.fail(ctx, fmt.Errorf("%d consecutive non-finite iterations at iteration %d; last good checkpoint: %s: %w", r.nonFinite, d.iterations, last, d.skipped))
			return false
		}
		r.log.Warn().Err(d.skipped).Int("iteration", d.it).Int("in_a_row", r.nonFinite).Msg("iteration skipped: non-finite loss or gradients")
	} else {
		r.nonFinite = 0
	}
	it := r.iters[d.it]
	trainedOn := r.version
	r.version = d.announce.Version
	if d.announce.Final {
		r.finalVersion = d.announce.Version
	}
	delete(r.iters, d.it)
	r.trainNext++

	m := d.m
	if m.Extra == nil {
		m.Extra = map[string]float64{}
	}
	var maxLag, sumLag int64
	n := 0
	for _, ch := range it.chunks {
		for i := range ch.rollouts {
			lag := trainedOn - ch.rollouts[i].Version
			maxLag, sumLag, n = max(maxLag, lag), sumLag+lag, n+1
		}
	}
	genWall := it.generated.Sub(it.requested).Seconds()
	for k, v := range map[string]float64{
		"rollouts":              float64(n),
		"rollout_tokens":        float64(it.tokens),
		"rollout_tokens_per_s":  float64(it.tokens) / max(genWall, 1e-9),
		"generate_seconds":      genWall,
		"generate_busy_seconds": it.busySec[roleGenerator],
		"weights_wait_seconds":  it.waitSec,
		"reference_seconds":     it.busySec[roleReference],
		"reward_seconds":        it.busySec[roleReward],
		"train_seconds":         d.train,
		"publish_seconds":       d.pub,
		"iteration_seconds":     time.Since(it.requested).Seconds(),
		"weights_version":       float64(trainedOn),
		"max_version_lag":       float64(maxLag),
		"mean_version_lag":      float64(sumLag) / float64(max(n, 1)),
		"retries":               float64(it.retries),
		"discarded_answers":     float64(r.discarded),
	} {
		m.Extra[k] = v
	}
	if d.skipped == nil { // a skipped iteration has no figures (NaN is not JSON)
		r.sink.OnStep(m, r.version)
	}
	r.sink.OnPublish(d.announce.Version, d.iterations, int(d.announce.Size), announceChecksum(d.announce))
	if d.checkpoint != "" {
		committed, err := r.sink.OnCheckpoint(d.iterations, d.checkpoint)
		if err != nil {
			l.fail(ctx, fmt.Errorf("checkpoint iteration %d not committed (the last good one stays: %s): %w", d.iterations, r.lastGoodCkpt, err))
			return false
		}
		r.lastCheckpoint, r.lastGoodCkpt = d.iterations, committed
	}
	r.log.Info().Int("iteration", d.it).Int64("version", r.version).Int64("max_lag", maxLag).Int64("retries", it.retries).
		Float64("tokens_per_s", m.Extra["rollout_tokens_per_s"]).Float64("train_s", d.train).Float64("loss", m.Loss).Msg("iteration trained")
	if r.phase == phaseTraining {
		l.advance(ctx)
	}
	return true
}

// checkpoint writes the job's checkpoint (once per iteration count).
func (l *RLLearner) checkpoint() error {
	r := l.run
	done := r.job.IterationsDone()
	if r.lastCheckpoint == done {
		return nil
	}
	dir := r.sink.CheckpointDir(done)
	if err := r.job.SaveCheckpoint(dir); err != nil {
		os.RemoveAll(dir) // a staging directory: the last good checkpoint stays
		return fmt.Errorf("checkpoint iteration %d not written (the last good one stays: %s): %w", done, r.lastGoodCkpt, err)
	}
	committed, err := r.sink.OnCheckpoint(done, dir)
	if err != nil {
		return fmt.Errorf("checkpoint iteration %d not committed (the last good one stays: %s): %w", done, r.lastGoodCkpt, err)
	}
	r.lastCheckpoint, r.lastGoodCkpt = done, committed
	return nil
}

// publish publishes the current weights from the actor (initial and final
// ones only; updates publish from the training goroutine).
func (l *RLLearner) publish(iterations int, final bool) (*messages.WeightsAnnounce, error) {
	r := l.run
	a, err := publishWeights(r.log, r.pub, iterations, final, r.job.Weights())
	if err != nil {
		return nil, err
	}
	r.version = a.Version
	if final {
		r.finalVersion = a.Version
	}
	r.sink.OnPublish(a.Version, iterations, int(a.Size), announceChecksum(a))
	return a, nil
}

// stop writes the stop checkpoint and tells the parent.
func (l *RLLearner) stop(ctx actor.Context) {
	r := l.run
	r.log.Info().Int("iteration", r.job.IterationsDone()).Str("reason", r.stopReason).Msg("learner stopping")
	done := &messages.LearnerDone{Step: int64(r.job.IterationsDone()), Version: r.version, Stopped: true, FinalVersion: r.finalVersion}
	if r.job.IterationsDone() > 0 {
		if err := l.checkpoint(); err != nil {
			done.Error = err.Error()
		}
	}
	r.phase = phaseFinished
	ctx.Send(ctx.Parent(), done)
}

// finish is the end of a job that ran all its iterations.
func (l *RLLearner) finish(ctx actor.Context) {
	r := l.run
	l.behavior.Become(l.stopping)
	done := &messages.LearnerDone{Step: int64(r.job.IterationsDone())}
	if r.finalVersion == 0 {
		if _, err := l.publish(r.job.IterationsDone(), true); err != nil {
			done.Error = err.Error()
		}
	}
	if err := l.checkpoint(); err != nil && done.Error == "" {
		done.Error = err.Error()
	}
	done.Version, done.FinalVersion = r.version, r.finalVersion
	r.phase = phaseFinished
	ctx.Send(ctx.Parent(), done)
}

// fail ends the run with an error (not a panic: errors are not retried). An
// update still running finishes on its own; its result is ignored.
func (l *RLLearner) fail(ctx actor.Context, err error) {
	r := l.run
	r.log.Error().Err(err).Msg("rl learner failed")
	l.behavior.Become(l.failed)
	r.phase = phaseFinished
	// r.trainNext, not the job: an update may still be running on it.
	ctx.Send(ctx.Parent(), &messages.LearnerDone{Step: int64(r.trainNext), Version: r.version, Error: err.Error(), FinalVersion: r.finalVersion})
}

// failed ignores everything.
func (l *RLLearner) failed(actor.Context) {}
