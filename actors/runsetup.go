package actors

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/learner"
)

// runWeights is the way a run's weights go out, as Run and RunRL open it:
// the NATS connection (to an embedded server when no URL is given) and the
// learner's weight publisher.
type runWeights struct {
	url string // the server's, for the start-up log
	nc  *nats.Conn
	pub *WeightPublisher
	// close releases them in reverse order: the publisher (the last
	// version's durable copy, the shared-memory slots), the connection, the
	// embedded server. Run and RunRL defer it before the actor system's
	// shutdown, so it runs after the actors have stopped.
	close func()
}

// openWeights starts the embedded NATS server when url is "" (JetStream
// under natsDir), connects with opts and makes the publisher of model's
// weights as wc says.
func openWeights(ctx context.Context, url, natsDir string, opts []nats.Option, model string, wc WeightsConfig, log zerolog.Logger) (*runWeights, error) {
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	var srv *server.Server
	if url == "" {
		nlog := log.With().Str("lib", "nats-server").Logger()
		s, u, err := startEmbeddedNATS(natsDir, &nlog)
		if err != nil {
			return nil, err
		}
		srv = s
		closers = append(closers, func() { ShutdownNATS(s) })
		url = u
		log.Debug().Str("url", url).Str("store", natsDir).Msg("embedded nats-server started")
	}
	nc, err := Connect(url, opts...)
	if err != nil {
		closeAll()
		return nil, err
	}
	closers = append(closers, nc.Close)
	// The publisher gets a connection of its own: in-process when the
	// server runs here (ConnectInProcess), so each version's chunks reach
	// the server without a socket. nc stays a socket: its subscribers read
	// chunks straight off theirs (chunkConn), which an in-process
	// connection cannot do.
	pubNC := nc
	if srv != nil {
		if pubNC, err = ConnectInProcess(srv, opts...); err != nil {
			closeAll()
			return nil, err
		}
		closers = append(closers, pubNC.Close)
	}
	setup, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	pub, err := NewWeightPublisher(setup, pubNC, model, publisherOptions(wc, log)...)
	cancelSetup()
	if err != nil {
		closeAll()
		return nil, err
	}
	closers = append(closers, func() { pub.Close() })
	return &runWeights{url: url, nc: nc, pub: pub, close: closeAll}, nil
}

// newEvalRuns builds n evaluators ("evaluator-0", ...) with newEval, each
// following model's weights on nc; before the learner starts, since a job is
// not safe for concurrent use and the evaluators it returns are.
func newEvalRuns(n int, newEval func() (learner.Evaluator, error), nc *nats.Conn, model string, evalEvery int,
	log zerolog.Logger, inflight *sync.WaitGroup) ([]*evalRun, error) {
	evals := make([]*evalRun, n)
	for i := range evals {
		ev, err := newEval()
		if err != nil {
			return nil, fmt.Errorf("%w: evaluator %d: %w", ErrRun, i, err)
		}
		name := fmt.Sprintf("evaluator-%d", i)
		evals[i] = &evalRun{
			name: name, ev: ev, nc: nc, model: model, evalEvery: evalEvery,
			log: log.With().Str("actor", name).Logger(), inflight: inflight,
		}
	}
	return evals, nil
}

// logSupervision logs each supervisor decision about a failed actor; the
// returned func stops it.
func logSupervision(sys *actor.ActorSystem, log zerolog.Logger) func() {
	sub := sys.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*actor.SupervisorEvent); ok {
			log.Warn().Str("actor", e.Child.GetId()).Str("directive", e.Directive.String()).Str("reason", fmt.Sprint(e.Reason)).Msg("actor failed")
		}
	})
	return func() { sys.EventStream.Unsubscribe(sub) }
}

// spawnSupervisor spawns a root actor (a run's topology, a worker) under the
// name, restarting any child of it that fails, up to maxRestarts within
// restartWindow.
func spawnSupervisor(sys *actor.ActorSystem, name string, produce func() actor.Actor) (*actor.PID, error) {
	decider := func(reason any) actor.Directive { return actor.RestartDirective }
	props := actor.PropsFromProducer(produce, actor.WithSupervisor(actor.NewOneForOneStrategy(maxRestarts, restartWindow, decider)))
	return sys.Root.SpawnNamed(props, name)
}
