package actors

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// ErrNATS is wrapped by every failure to start or reach a NATS server.
var ErrNATS = errors.New("actors: nats")

// EmbeddedMaxPending is the embedded server's max_pending: the bytes it
// queues for one client before it disconnects it as a slow consumer.
const EmbeddedMaxPending = 1 << 30

// tempStores remembers the store directories StartEmbeddedNATS created itself,
// so that ShutdownNATS can remove them.
var tempStores sync.Map // *server.Server -> string

// StartEmbeddedNATS starts an in-process nats-server with JetStream on a random
// free port on 127.0.0.1 (never on other interfaces), storing JetStream data in
// storeDir ("" = a temporary directory that ShutdownNATS removes). It returns
// the server and its client URL, e.g. "nats://127.0.0.1:41234". The server logs
// nothing; Run routes its logs into zerolog.
func StartEmbeddedNATS(storeDir string) (*server.Server, string, error) {
	return startEmbeddedNATS(storeDir, nil)
}

func startEmbeddedNATS(storeDir string, log *zerolog.Logger) (*server.Server, string, error) {
	return startEmbeddedNATSTuned(storeDir, log, nil)
}

// startEmbeddedNATSTuned is startEmbeddedNATS with tune applied to the
// server's options last (tests: a fixed port to restart on, small limits).
func startEmbeddedNATSTuned(storeDir string, log *zerolog.Logger, tune func(*server.Options)) (*server.Server, string, error) {
	temp := ""
	if storeDir == "" {
		d, err := os.MkdirTemp("", "troupe-nats-")
		if err != nil {
			return nil, "", fmt.Errorf("%w: store dir: %v", ErrNATS, err)
		}
		storeDir, temp = d, d
	} else if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return nil, "", fmt.Errorf("%w: store dir: %v", ErrNATS, err)
	}
	fail := func(err error) (*server.Server, string, error) {
		if temp != "" {
			os.RemoveAll(temp)
		}
		return nil, "", err
	}
	opts := &server.Options{
		ServerName: "troupe-embedded",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true, // the CLI owns SIGINT/SIGTERM
		NoLog:      log == nil,
		// The weights travel in chunks under the default 1 MiB max_payload,
		// left alone on purpose (it is what an external server has).
		//
		// The weights fan-out sends a whole version (500 MB for GPT-2 124M)
		// to every subscriber at once; a subscriber on a busy machine may
		// fall that far behind. With the default 64 MiB the server would cut
		// it off as a slow consumer (it then reconnects and fetches the
		// version from the object store: correct, but slow). An external
		// server wants the same max_pending.
		MaxPending: EmbeddedMaxPending,
	}
	if tune != nil {
		tune(opts)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fail(fmt.Errorf("%w: embedded server: %v", ErrNATS, err))
	}
	if log != nil {
		srv.SetLogger(natsLogger{log.With().Str("lib", "nats-server").Logger()}, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fail(fmt.Errorf("%w: embedded server not ready after 10s", ErrNATS))
	}
	if temp != "" {
		tempStores.Store(srv, temp)
	}
	return srv, srv.ClientURL(), nil
}

// ShutdownNATS stops an embedded server, waits for it, and removes its store
// directory if StartEmbeddedNATS created it.
func ShutdownNATS(srv *server.Server) {
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	if d, ok := tempStores.LoadAndDelete(srv); ok {
		os.RemoveAll(d.(string))
	}
}

// ConnectInProcess connects to srv, a server running in this process (as
// StartEmbeddedNATS starts), over an in-memory pipe instead of a loopback
// socket: one copy of each message into the server instead of a send and a
// receive through the kernel. A run's learner publishes its weights on such
// a connection when it runs the embedded server, so the subscribers that take
// the fan-out (without a shared-memory slot: nats.weights_shm: off, or no
// /dev/shm) get each chunk through one socket, their own. `troupe bench
// --broadcast 124439808` with its publisher connected this way, 4
// subscribers on 2 cores, alternating runs: 10-15% less time until all hold
// an fp32 version, 5-10% for bf16. opts as for Connect, less any dialer or
// TLS: nothing leaves the process.
func ConnectInProcess(srv *server.Server, opts ...nats.Option) (*nats.Conn, error) {
	return Connect(srv.ClientURL(), append(opts, nats.InProcessServer(srv))...)
}

// Connect connects to the NATS server at url (or a comma-separated list of
// a cluster's servers) with reconnects (the weights stream tolerates a short
// outage: a subscriber catches up on the latest version). opts add
// credentials and TLS (NATSConfig.Options). Close the connection with Close
// (or Drain).
func Connect(url string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name("troupe"),
		nats.Timeout(5 * time.Second),
		nats.MaxReconnects(60),
		nats.ReconnectWait(time.Second),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: connect %s: %v", ErrNATS, RedactURL(url), err)
	}
	return nc, nil
}
