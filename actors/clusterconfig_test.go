package actors

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const ppoCluster = `stage: ppo
run_dir: runs/my-run
data: {train: [a]}
reward: {rules: [{type: exact_match}]}
nats: {url: "nats://10.0.0.5:4222, nats://10.0.0.6:4222", user: troupe}
cluster:
  enabled: true
  members: ["10.0.0.7:7701", "10.0.0.8:7701"]
  tls: {cert: certs/w.pem, key: certs/w-key.pem, ca: certs/ca.pem}
generator: {replicas: 0}
`

// Secrets come from the environment (or the file), never reach the saved
// config, and a resumed run needs them from the environment again.
func TestNATSSecretsNotSaved(t *testing.T) {
	const secret = "s3cr3t-pa55"
	t.Setenv(EnvNATSPassword, secret)
	dir := t.TempDir()
	cfg, err := ParseRunConfig(filepath.Join(dir, "run.yaml"), []byte(ppoCluster))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.User != "troupe" || cfg.NATS.Password != secret {
		t.Fatalf("nats user %q password %q, want troupe and the environment's", cfg.NATS.User, cfg.NATS.Password)
	}
	if cfg.Cluster.TLS.CA != filepath.Join(dir, "certs", "ca.pem") || RunIDOf(cfg) != "my-run" || cfg.Cluster.Host != "127.0.0.1" || cfg.Cluster.HealthPort != 7701 {
		t.Fatalf("cluster section %+v, run id %q", cfg.Cluster, RunIDOf(cfg))
	}
	if opts, err := cfg.NATS.Options(); err != nil || len(opts) != 1 {
		t.Fatalf("nats options %d, %v: want the user login", len(opts), err)
	}
	saved := filepath.Join(dir, "runs", "my-run", ConfigFile)
	os.MkdirAll(filepath.Dir(saved), 0o755)
	if err := SaveRunConfig(saved, cfg, "test"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(saved)
	if strings.Contains(string(b), secret) {
		t.Fatalf("the saved config holds the password:\n%s", b)
	}
	if !strings.Contains(string(b), "ca: ../../certs/ca.pem") {
		t.Fatalf("the saved config's TLS paths are not relative to it:\n%s", b)
	}
	back, err := LoadRunConfig(saved)
	if err != nil || back.NATS.Password != secret {
		t.Fatalf("reloaded with the environment: password %q, %v", back.NATS.Password, err)
	}
	t.Setenv(EnvNATSPassword, "")
	if _, err := LoadRunConfig(saved); err == nil || !strings.Contains(err.Error(), "nats.password") || !strings.Contains(err.Error(), EnvNATSPassword) {
		t.Fatalf("reloaded without the environment: got %v, want an error naming nats.password and %s", err, EnvNATSPassword)
	}

	// A token from the environment, and a file's token is not saved either.
	t.Setenv(EnvNATSToken, "tok-123")
	cfg, err = ParseRunConfig(filepath.Join(dir, "run.yaml"), []byte(strings.Replace(ppoCluster, "user: troupe", "token: file-token", 1)))
	if err != nil || cfg.NATS.Token != "file-token" {
		t.Fatalf("token %q, %v: the file's wins over the environment", cfg.NATS.Token, err)
	}
	if err := SaveRunConfig(saved, cfg, "test"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(saved); strings.Contains(string(b), "file-token") {
		t.Fatalf("the saved config holds the token:\n%s", b)
	}
	if RedactURL("nats://u:pw@h:4222,nats://h2:4222") != "nats://u:xxxxx@h:4222,nats://h2:4222" {
		t.Fatalf("RedactURL: %s", RedactURL("nats://u:pw@h:4222,nats://h2:4222"))
	}
}

func TestClusterConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, old, new string
		want           string
	}{
		{"member without a port", `"10.0.0.8:7701"`, `"10.0.0.8"`, `cluster.members[1]: "10.0.0.8": address 10.0.0.8: missing port in address; want host:health_port, e.g. 10.0.0.7:7701`},
		{"bad run id", "enabled: true", "enabled: true\n  run_id: 'a b'", `cluster.run_id: "a b": want 1 to 64 letters, digits, '.', '-' or '_'`},
		{"partial tls", "ca: certs/ca.pem", "ca: ''", "cluster.tls: set cert, key and ca (mutual TLS: each side verifies the other), or none"},
		{"no nats url", `url: "nats://10.0.0.5:4222, nats://10.0.0.6:4222", user: troupe`, `url: ""`, "nats.url: cluster.enabled needs an external NATS server every process reaches (workers fetch the weights there)"},
		{"credentials in the url", "nats://10.0.0.5:4222,", "nats://a:b@10.0.0.5:4222,", "nats.url: holds credentials; put them in nats.user and nats.password (or TROUPE_NATS_PASSWORD), or nats.token (TROUPE_NATS_TOKEN)"},
		{"two logins", "user: troupe", "user: troupe, password: x, token: y", "nats: set one way to log in: user and password, token, creds or nkey_seed"},
		{"no members", `members: ["10.0.0.7:7701", "10.0.0.8:7701"]`, "members: []", "cluster.members: cluster.enabled needs the workers' host:health_port list"},
		{"no workers, no local generator", "enabled: true", "enabled: false", "generator.replicas: must be in [1, 64], got 0"},
		{"bad port", "enabled: true", "enabled: true\n  port: 70000", "cluster.port: must be in [0, 65535] (0 = any free port), got 70000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if strings.Contains(c.new, "user: troupe") || strings.Contains(c.old, "user: troupe") {
				t.Setenv(EnvNATSPassword, "") // only the file's login
			} else {
				t.Setenv(EnvNATSPassword, "pw")
			}
			src := strings.Replace(ppoCluster, c.old, c.new, 1)
			if src == ppoCluster {
				t.Fatalf("%q not in the config", c.old)
			}
			_, err := ParseRunConfig("run.yaml", []byte(src))
			if err == nil {
				t.Fatalf("got no error, want %q", c.want)
			}
			if got := err.Error(); !strings.HasPrefix(got, "run.yaml: ") || !strings.HasSuffix(got, c.want) {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
}
