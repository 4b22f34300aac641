package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors"
)

func init() {
	register(&command{
		name:  "nats",
		usage: "nats --store DIR [--host H] [--port P] [--user U]",
		summary: "run a NATS server with JetStream (the nats-server module troupe embeds) for runs across processes " +
			"(nats.url); password from " + actors.EnvNATSPassword + "; until Ctrl-C",
		run: runNATS,
	})
}

// runNATS is `troupe nats`: what Debian's nats-server with JetStream and
// one user would be, for a machine without it (make demo-cluster).
func runNATS(args []string) error {
	c := commands["nats"]
	fs := newFlags(c)
	host := fs.String("host", "127.0.0.1", "address to listen on (127.0.0.1 = this machine only)")
	port := fs.Int("port", 4222, "client port")
	store := fs.String("store", "", "JetStream store directory (the weights); required")
	user := fs.String("user", "", "the one login's user name (password from "+actors.EnvNATSPassword+"); empty = no login")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() != 0:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	case *store == "":
		return fmt.Errorf("%w: --store is required (JetStream keeps the weights there)", errUsage)
	case *port < 1 || *port > 65535:
		return fmt.Errorf("%w: --port must be in [1, 65535], got %d", errUsage, *port)
	}
	password := os.Getenv(actors.EnvNATSPassword)
	if (*user == "") != (password == "") {
		return fmt.Errorf("%w: --user and %s go together", errUsage, actors.EnvNATSPassword)
	}
	if err := os.MkdirAll(*store, 0o755); err != nil {
		return fmt.Errorf("nats store: %w", err)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "troupe-nats", Host: *host, Port: *port, JetStream: true, StoreDir: *store,
		NoSigs: true, Username: *user, Password: password,
	})
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	srv.SetLogger(zerologNATS{log.With().Str("lib", "nats-server").Logger()}, false, false)
	srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats server on %s not ready after 20s (port in use?)", net.JoinHostPort(*host, strconv.Itoa(*port)))
	}
	log.Info().Str("url", srv.ClientURL()).Str("store", *store).Bool("login", *user != "").Msg("nats server ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	log.Info().Msg("nats server stopping")
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}

// zerologNATS is nats-server's Logger writing into zerolog (notices at debug).
type zerologNATS struct{ log zerolog.Logger }

func (l zerologNATS) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l zerologNATS) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l zerologNATS) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l zerologNATS) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l zerologNATS) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l zerologNATS) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
