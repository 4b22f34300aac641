package actors

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// The environment variables NATSConfig reads (see its fields).
const (
	EnvNATSURL      = "TROUPE_NATS_URL"
	EnvNATSUser     = "TROUPE_NATS_USER"
	EnvNATSPassword = "TROUPE_NATS_PASSWORD"
	EnvNATSToken    = "TROUPE_NATS_TOKEN"
	EnvNATSCreds    = "TROUPE_NATS_CREDS"
	EnvNATSNkeySeed = "TROUPE_NATS_NKEY_SEED"
	EnvNATSTLSCA    = "TROUPE_NATS_TLS_CA"
	EnvNATSTLSCert  = "TROUPE_NATS_TLS_CERT"
	EnvNATSTLSKey   = "TROUPE_NATS_TLS_KEY"
)

// fromEnv fills the fields the file left empty from the environment.
func (c *NATSConfig) fromEnv(getenv func(string) string) {
	for _, f := range []struct {
		field *string
		env   string
	}{
		{&c.URL, EnvNATSURL}, {&c.User, EnvNATSUser}, {&c.Password, EnvNATSPassword}, {&c.Token, EnvNATSToken},
		{&c.Creds, EnvNATSCreds}, {&c.NkeySeed, EnvNATSNkeySeed},
		{&c.TLS.CA, EnvNATSTLSCA}, {&c.TLS.Cert, EnvNATSTLSCert}, {&c.TLS.Key, EnvNATSTLSKey},
	} {
		if *f.field == "" {
			*f.field = getenv(f.env)
		}
	}
}

// withoutSecrets is c with the password and the token blanked: what a saved
// config holds (a resumed run reads them from the environment again).
func (c NATSConfig) withoutSecrets() NATSConfig {
	c.Password, c.Token = "", ""
	return c
}

// natsSchemes are the URL schemes nats.go dials.
var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

func (c NATSConfig) validate() error {
	bad := func(path, format string, args ...any) error {
		return &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	if c.URL != "" {
		for _, u := range strings.Split(c.URL, ",") {
			u = strings.TrimSpace(u)
			scheme, _, ok := strings.Cut(u, "://")
			switch {
			case !ok:
				return bad("nats.url", "%q is not a URL; want e.g. nats://host:4222 (a cluster: a comma-separated list), or empty for an embedded server", u)
			case !natsSchemes[scheme]:
				return bad("nats.url", "scheme %q; allowed: nats, tls, ws, wss (or empty for an embedded server)", scheme)
			}
			if p, err := url.Parse(u); err == nil && p.User != nil {
				// The URL is saved with the run and logged: no secrets in it.
				return bad("nats.url", "holds credentials; put them in nats.user and nats.password (or %s), or nats.token (%s)", EnvNATSPassword, EnvNATSToken)
			}
		}
	} else if c.User != "" || c.Password != "" || c.Token != "" || c.Creds != "" || c.NkeySeed != "" || c.TLS != (TLSConfig{}) {
		return bad("nats.url", "credentials and TLS are for an external server: set nats.url (the embedded server takes no login)")
	}
	logins := 0
	for _, set := range []bool{c.User != "" || c.Password != "", c.Token != "", c.Creds != "", c.NkeySeed != ""} {
		if set {
			logins++
		}
	}
	switch {
	case logins > 1:
		return bad("nats", "set one way to log in: user and password, token, creds or nkey_seed")
	case (c.User == "") != (c.Password == ""):
		return bad("nats.password", "user and password go together (password: the file or %s)", EnvNATSPassword)
	}
	return c.TLS.validate("nats.tls", false)
}

// validate checks a TLS section; whole = cert, key and ca are all required
// when any is set.
func (t TLSConfig) validate(path string, whole bool) error {
	if t == (TLSConfig{}) {
		return nil
	}
	if (t.Cert == "") != (t.Key == "") {
		return &ConfigError{Path: path + ".key", Msg: "cert and key go together"}
	}
	if whole && (t.Cert == "" || t.CA == "") {
		return &ConfigError{Path: path, Msg: "set cert, key and ca (mutual TLS: each side verifies the other), or none"}
	}
	return nil
}

var validRunID = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func (c ClusterConfig) validate(stage, natsURL string) error {
	bad := func(path, format string, args ...any) error {
		return &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	if c.RunID != "" && !validRunID.MatchString(c.RunID) {
		return bad("cluster.run_id", "%q: want 1 to 64 letters, digits, '.', '-' or '_'", c.RunID)
	}
	if c.Port < 0 || c.Port > 65535 {
		return bad("cluster.port", "must be in [0, 65535] (0 = any free port), got %d", c.Port)
	}
	if c.HealthPort < 1 || c.HealthPort > 65535 {
		return bad("cluster.health_port", "must be in [1, 65535], got %d", c.HealthPort)
	}
	if c.Host == "" {
		return bad("cluster.host", "must not be empty (127.0.0.1 = this machine only)")
	}
	for i, m := range c.Members {
		if err := checkHostPort(m); err != nil {
			return bad(fmt.Sprintf("cluster.members[%d]", i), "%q: %v; want host:health_port, e.g. 10.0.0.7:7701", m, err)
		}
	}
	if err := c.TLS.validate("cluster.tls", true); err != nil {
		return err
	}
	if !c.Enabled {
		return nil
	}
	switch {
	case stage != "ppo":
		return bad("cluster.enabled", "only the ppo stage runs roles on workers, this is %s", stage)
	case natsURL == "":
		return bad("nats.url", "cluster.enabled needs an external NATS server every process reaches (workers fetch the weights there)")
	case len(c.Members) == 0:
		return bad("cluster.members", "cluster.enabled needs the workers' host:health_port list")
	}
	return nil
}

func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("no host")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q", port)
	}
	return nil
}

// RunIDOf is the run id a config's learner and workers use: cluster.run_id,
// or run_dir's base name.
func RunIDOf(c RunConfig) string {
	if c.Cluster.RunID != "" {
		return c.Cluster.RunID
	}
	id := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(filepath.Base(c.RunDir), "_")
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

// Options are nats.go's options for c's credentials and TLS (the URL is
// Connect's argument).
func (c NATSConfig) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NkeySeed != "":
		o, err := nats.NkeyOptionFromSeed(c.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("%w: nats.nkey_seed: %v", ErrNATS, err)
		}
		opts = append(opts, o)
	}
	if c.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CA))
	}
	if c.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(c.TLS.Cert, c.TLS.Key))
	}
	if c.TLS != (TLSConfig{}) {
		opts = append(opts, nats.Secure())
	}
	return opts, nil
}

// tlsConfigs are the gRPC remoting's server and client TLS configurations
// for t: each side presents t's certificate and requires the other's to
// chain to t's CA.
func (t TLSConfig) tlsConfigs() (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cluster.tls: %v", ErrCluster, err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cluster.tls.ca: %v", ErrCluster, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%w: cluster.tls.ca: no PEM certificate in %s", ErrCluster, t.CA)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client, nil
}

// RedactURL is u with any password replaced by "xxxxx", for logs.
func RedactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		if pu, err := url.Parse(strings.TrimSpace(p)); err == nil && pu.User != nil {
			parts[i] = pu.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
