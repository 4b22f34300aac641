package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/labstack/echo"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ErrCluster is wrapped by every failure to start or join the cluster.
var ErrCluster = errors.New("actors: cluster")

// An RL run across processes is one protoactor-go cluster: `troupe worker`
// processes are members (the automanaged provider polls each one's health
// endpoint on the static ClusterConfig.Members list), the learner is a
// client (it hosts no kinds and is polled by nobody; it polls the workers).
// The learner greets each member that joins at its "worker" actor
// (WorkerHello); the worker answers with its role actors (WorkerWelcome) or
// refuses another run's learner. Work then goes to member address + actor id,
// as to local pool members; a member the provider reports gone has its
// requests re-queued at once.
const (
	clusterName      = "troupe"
	workerActorID    = "worker"
	clusterRefresh   = 2 * time.Second // automanaged poll period
	helloTimeout     = 5 * time.Second
	helloTries       = 6
	clusterStopGrace = 5 * time.Second
	dialTimeout      = 3 * time.Second // one connection try to a peer
	dialTries        = 2
)

// clusterNode is this process's part of the cluster.
type clusterNode struct {
	c        *cluster.Cluster
	provider *automanaged.AutoManagedProvider
	health   *echo.Echo
	member   bool
	// rejoins counts this member's new identities (rejoin): the id its
	// health endpoint reports is the actor system's, suffixed after a rejoin.
	rejoins atomic.Int64
}

// remoteOptions are the gRPC remoting's options for cc: the listen address
// and, with cc.TLS, mutual TLS both ways.
func remoteOptions(cc ClusterConfig) (*remote.Config, error) {
	var opts []remote.ConfigOption
	creds := insecure.NewCredentials()
	if cc.TLS != (TLSConfig{}) {
		server, client, err := cc.TLS.tlsConfigs()
		if err != nil {
			return nil, err
		}
		opts = append(opts, remote.WithServerOptions(grpc.Creds(credentials.NewTLS(server))))
		creds = credentials.NewTLS(client)
	}
	// A blocking dial with a deadline: protoactor's endpoint writer keeps
	// only its last try's connection, so the connections of failed tries (a
	// peer that is gone, a TLS handshake refused) would otherwise stay open,
	// redialling for ever. A blocking dial that fails closes its own.
	opts = append(opts, remote.WithDialOptions(grpc.WithTransportCredentials(creds), grpc.WithBlock(),
		grpc.WithTimeout(dialTimeout))) //nolint:staticcheck // the Dial API protoactor calls

	port := cc.Port
	if ip := net.ParseIP(cc.Host); cc.AdvertisedHost == "" && ip != nil && ip.IsUnspecified() {
		// Listening everywhere, the address to give out is the host's name
		// (a container's service name under compose).
		name, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("%w: cluster.host %s needs advertised_host: %v", ErrCluster, cc.Host, err)
		}
		cc.AdvertisedHost = name
	}
	if cc.AdvertisedHost != "" {
		// The advertised address is the whole host:port, so the port must be
		// known before the remote listens.
		if port == 0 {
			l, err := net.Listen("tcp", net.JoinHostPort(cc.Host, "0"))
			if err != nil {
				return nil, fmt.Errorf("%w: remoting port on %s: %v", ErrCluster, cc.Host, err)
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		opts = append(opts, remote.WithAdvertisedHost(net.JoinHostPort(cc.AdvertisedHost, strconv.Itoa(port))))
	}
	rc := remote.Configure(cc.Host, port, opts...)
	// Tries per connection before the peer's endpoint is dropped (messages
	// to it are lost: the learner's membership watch and timeouts handle
	// that), each a dial and a 2 s pause; protoactor's default is 5.
	rc.MaxRetryCount = dialTries
	return rc, nil
}

// startCluster joins sys to the cluster: as a member serving its health
// endpoint on cc.Host:cc.HealthPort (a worker), or as a client (the learner).
// The remoting listens on cc.Host:cc.Port, so on loopback unless configured
// otherwise; the provider's own health server would listen on every
// interface, so troupe hands it one bound to cc.Host.
func startCluster(sys *actor.ActorSystem, cc ClusterConfig, member bool) (n *clusterNode, err error) {
	rc, err := remoteOptions(cc)
	if err != nil {
		return nil, err
	}
	n = &clusterNode{member: member, health: echo.New()}
	n.health.HideBanner, n.health.HidePort = true, true
	if member {
		l, err := net.Listen("tcp", net.JoinHostPort(cc.Host, strconv.Itoa(cc.HealthPort)))
		if err != nil {
			return nil, fmt.Errorf("%w: health endpoint: %v", ErrCluster, err)
		}
		n.health.Listener = l
	}
	n.provider = automanaged.NewWithTesting(clusterRefresh, cc.HealthPort, n.health, cc.Members...)
	n.c = cluster.New(sys, cluster.Configure(clusterName, n.provider, disthash.New(), rc))
	if member {
		n.health.GET("/_health", func(ctx echo.Context) error {
			host, port, err := sys.GetHostPort()
			if err != nil {
				return ctx.NoContent(http.StatusServiceUnavailable)
			}
			return ctx.JSON(http.StatusOK, automanaged.NewNode(clusterName, n.memberID(), host, port, cc.HealthPort, n.c.GetClusterKinds()))
		})
	}
	// The library panics where it fails to start (a port in use, say).
	defer func() {
		if p := recover(); p != nil {
			if n.health.Listener != nil {
				n.health.Listener.Close()
			}
			n, err = nil, fmt.Errorf("%w: start: %v", ErrCluster, p)
		}
	}()
	if member {
		n.c.StartMember()
	} else {
		n.c.StartClient()
	}
	return n, nil
}

// Address is this process's remoting address, host:port.
func (n *clusterNode) Address() string { return n.c.ActorSystem.Address() }

// memberID is the id this member's health endpoint reports, which the
// provider takes as its member id: the actor system's id, then after each
// rejoin the same with "~N". (The remoting identifies connections by the
// actor system's id, which never changes; troupe addresses a worker's actors
// by address and name, so only the membership sees the new id.)
func (n *clusterNode) memberID() string {
	id := n.c.ActorSystem.ID
	if r := n.rejoins.Load(); r > 0 {
		id += "~" + strconv.FormatInt(r, 10)
	}
	return id
}

// rejoin gives this member a new member id, and returns it. protoactor's
// automanaged provider takes a member out for good when one health poll of
// it fails (2 s timeout): its id goes on the cluster's block list, which
// nothing ever empties, so a worker that was paused past a poll (SIGSTOP, a
// stall of the machine) would get no work again. Under a new id the learner
// sees a member join at its next poll, greets it and hands it work; if the
// old id had not been dropped, the learner sees it leave in the same poll
// (its request in hand is re-queued, its answer discarded as late).
func (n *clusterNode) rejoin() string {
	n.rejoins.Add(1)
	return n.memberID()
}

// members is the current membership (the learner's view).
func (n *clusterNode) members() []*cluster.Member { return n.c.MemberList.Members().Members() }

// stop leaves the cluster: a member stops answering health polls first (so
// the learner sees it leave at its next poll), then the remoting stops.
func (n *clusterNode) stop() {
	_ = n.provider.Shutdown(true) // stops the polling loop and the health server
	done := make(chan struct{})
	go func() {
		if n.member {
			n.c.Gossip.Shutdown()
		}
		n.c.Remote.Shutdown(true)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(clusterStopGrace):
	}
}

// quietClusterLogs is protoactor's logging for a process in the cluster:
// its info lines (a dozen per membership change; troupe logs the joins and
// leaves that matter itself) and the automanaged provider's per-poll errors
// about a listed member that is not running (normal: workers come and go)
// go to debug; its other warnings and errors are kept.
func quietClusterLogs(log zerolog.Logger) func(*actor.ActorSystem) *slog.Logger {
	return func(sys *actor.ActorSystem) *slog.Logger {
		h := newSlogHandler(log.With().Str("lib", "protoactor").Str("system", sys.ID).Logger())
		return slog.New(&demoteHandler{Handler: h})
	}
}

var noisyClusterMessages = map[string]bool{
	"Bad connection to the node health status": true,
	"Failure reaching nodes":                   true,
	"Automanaged server stopping..!":           true,
	"Bad response from the node health status": true,
	"Bad data from the node health status":     true,
	"Got gossip request from unknown member":   true, // while membership forms
}

type demoteHandler struct{ slog.Handler }

func (h *demoteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, l)
}

func (h *demoteHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level <= slog.LevelInfo || noisyClusterMessages[r.Message] {
		r.Level = slog.LevelDebug
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h *demoteHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &demoteHandler{Handler: h.Handler.WithAttrs(attrs)}
}

func (h *demoteHandler) WithGroup(name string) slog.Handler {
	return &demoteHandler{Handler: h.Handler.WithGroup(name)}
}

// natsLogging logs a NATS connection's outages: a run rides them out
// (Connect reconnects; subscribers resume where they were).
func natsLogging(log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil when the connection is closed on purpose
				log.Warn().Err(err).Msg("nats disconnected; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
	}
}
