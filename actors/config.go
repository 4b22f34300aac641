package actors

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/troupe-rl/troupe/learner"
	"github.com/troupe-rl/troupe/policy"
)

// ErrConfig marks a run config that cannot be used; every ConfigError wraps it.
var ErrConfig = errors.New("actors: bad config")

// Stages lists the stages a run config may name.
var Stages = []string{"pretrain", "sft", "rm", "ppo"}

// RunConfig is one run, as written in a YAML file (`troupe init` writes
// commented examples). Every field documents its default; DefaultRunConfig
// returns them and LoadRunConfig decodes a file onto them.
//
// Paths: relative paths written in the file (run_dir, model.init,
// model.tokenizer, data.train, data.val, data.cache_dir) are resolved against
// the file's directory, so a config travels with its data. Defaults that the
// file does not set (run_dir runs/<stage>, model.tokenizer data/gpt2,
// data.cache_dir .troupe-cache) are relative to the working directory. After
// loading, every path is absolute.
type RunConfig struct {
	// Stage is what to train: pretrain | sft | rm | ppo. Required.
	Stage string `yaml:"stage"`
	// RunDir receives config.yaml, metrics.jsonl, samples.jsonl, checkpoints/
	// and plots/, default runs/<stage>.
	RunDir string `yaml:"run_dir"`
	// Seed drives initialisation, data order and sampling, default 1.
	Seed uint64 `yaml:"seed"`
	// Threads for the CPU kernels, 0 (the default) = every core.
	Threads int `yaml:"threads"`
	// Device runs the learner's model: cpu (the default) or cuda (GPU 0; a
	// binary built with -tags cuda). Evaluator and rollout actors stay on the
	// CPU; the weights they get are the learner's, downloaded once a version.
	Device string `yaml:"device"`
	// MaxNonFinite: a step (ppo: an iteration) whose loss or gradients are
	// NaN or Inf is skipped and logged; this many in a row stop the run,
	// default 5.
	MaxNonFinite int `yaml:"max_non_finite"`

	Model learner.ModelConfig `yaml:"model"`
	Data  learner.DataConfig  `yaml:"data"`
	Train learner.TrainConfig `yaml:"train"`

	// The RL stage (ppo) reads these instead of train: the algorithm, the
	// value model, the reward sources and the rollout pools.
	PPO       learner.PPOConfig    `yaml:"ppo"`
	Critic    learner.CriticConfig `yaml:"critic"`
	Reward    learner.RewardConfig `yaml:"reward"`
	Generator PoolConfig           `yaml:"generator"`
	Reference PoolConfig           `yaml:"reference"`

	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	Publish    PublishConfig    `yaml:"publish"`
	Evaluator  EvaluatorConfig  `yaml:"evaluator"`
	NATS       NATSConfig       `yaml:"nats"`
	Cluster    ClusterConfig    `yaml:"cluster"`
}

// CheckpointConfig says when checkpoints are written and how many are kept.
type CheckpointConfig struct {
	// Every N optimizer steps (and after the last step, and on Ctrl-C), default 200.
	Every int `yaml:"every"`
	// Keep the last K checkpoints plus the best by held-out figure (val_loss,
	// or val_accuracy for rm), default 3.
	Keep int `yaml:"keep"`
}

// PoolConfig sizes a pool of RL role actors (generator, reference).
type PoolConfig struct {
	Replicas int `yaml:"replicas"` // actors in the pool, default 1; 0 with cluster.enabled = only workers host them
	Threads  int `yaml:"threads"`  // CPU threads for each actor's model, default 1
}

// PublishConfig says how often the learner broadcasts its weights.
type PublishConfig struct {
	// Every N optimizer steps (and after the last), default 50. Each published
	// version is what evaluators score.
	Every int `yaml:"every"`
}

// EvaluatorConfig configures the evaluator actors.
type EvaluatorConfig struct {
	Replicas     int      `yaml:"replicas"`       // evaluator actors, 0 = none, default 1
	Every        int      `yaml:"every"`          // evaluate every k-th published version, default 1
	Prompts      []string `yaml:"prompts"`        // prompts sampled into samples.jsonl (none = no samples; rm never samples)
	MaxNewTokens int      `yaml:"max_new_tokens"` // tokens sampled per prompt, default 48
	Temperature  float64  `yaml:"temperature"`    // sampling temperature, 0 = greedy, default 0.8
}

// NATSConfig says where weights are broadcast and how to log in there.
// Each field may also come from the environment variable named beside it,
// which fills it in where the file leaves it empty. Password and token are
// secrets: SaveRunConfig never writes them, and nothing logs them.
type NATSConfig struct {
	// URL of an external NATS server with JetStream, e.g. nats://10.0.0.5:4222,
	// or a comma-separated list of a cluster's servers
	// (nats://a:4222,nats://b:4222). Empty (the default) = an embedded server
	// in this process. Credentials go in the fields below, not in the URL.
	// Env TROUPE_NATS_URL.
	URL string `yaml:"url"`
	// User and Password log in with a user name and password, default none.
	// Env TROUPE_NATS_USER, TROUPE_NATS_PASSWORD (secret).
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token logs in with a token, default none. Env TROUPE_NATS_TOKEN (secret).
	Token string `yaml:"token"`
	// Creds is a credentials file (a user JWT and its nkey seed, from `nsc`),
	// default none. Env TROUPE_NATS_CREDS.
	Creds string `yaml:"creds"`
	// NkeySeed is a file holding an nkey seed (SU...), default none. Env
	// TROUPE_NATS_NKEY_SEED.
	NkeySeed string `yaml:"nkey_seed"`
	// TLS: ca verifies the server (tls:// URLs, or any URL when set); cert and
	// key are a client certificate for servers that verify clients. Env
	// TROUPE_NATS_TLS_CA, TROUPE_NATS_TLS_CERT, TROUPE_NATS_TLS_KEY.
	TLS TLSConfig `yaml:"tls"`
	// WeightsDType is how weights travel to generators and evaluators: fp32
	// (exact; the default, also when empty) or bf16 (half the bytes, each
	// value rounded to the nearest bfloat16, relative error <= 2^-8; the
	// learner keeps training its fp32 masters).
	WeightsDType string `yaml:"weights_dtype"`
	// WeightsShm is whether the learner also hands each version to the
	// generators and evaluators on its own machine through shared memory
	// (a slot in /dev/shm they read instead of the NATS fan-out, which
	// then serves only subscribers on other machines): auto (the default,
	// also when empty; used where /dev/shm exists) or off.
	WeightsShm string `yaml:"weights_shm"`
	// WeightsDirect, when set, is a host:port the learner listens on to send
	// each version's chunks to generators and evaluators on other machines
	// itself, over TCP, instead of through nats-server (the announcement and
	// the object store's copy stay on NATS; subscribers dial it when an
	// announcement names it, with the NATS connection's user and password
	// or token; no TLS). An empty or 0.0.0.0 host listens on every
	// interface and advertises the address this machine reaches the NATS
	// server from; port 0 picks a free port. off (the default, also when
	// empty) = the NATS fan-out. Example: ":7450".
	WeightsDirect string `yaml:"weights_direct"`
}

// TLSConfig names PEM files for one side of a TLS connection. All empty (the
// default) = no TLS.
type TLSConfig struct {
	Cert string `yaml:"cert"` // this process's certificate, e.g. certs/worker.pem
	Key  string `yaml:"key"`  // its private key, e.g. certs/worker-key.pem
	CA   string `yaml:"ca"`   // CA bundle that peers' certificates must chain to, e.g. certs/ca.pem
}

// ClusterConfig spreads an RL run over processes and hosts: `troupe worker`
// processes host generator, reference and reward actors and join the run
// through protoactor-go's cluster support (gRPC remoting; the automanaged
// provider on the static Members list); the learner (`troupe run`) routes
// work to them beside its own pools. Weights reach workers over NATS, so
// nats.url must name a server every process can reach.
type ClusterConfig struct {
	// Enabled turns the cluster on, default false (every role in one process).
	Enabled bool `yaml:"enabled"`
	// Host the actor remoting (gRPC) and a worker's membership endpoint listen
	// on, default 127.0.0.1 (this machine only); an interface's address, or
	// 0.0.0.0 with advertised_host, to reach other hosts. `troupe worker
	// --host` overrides it.
	Host string `yaml:"host"`
	// AdvertisedHost is the address other processes reach this one at, when
	// it differs from host (NAT, say), default host, or the host name when
	// host is 0.0.0.0.
	AdvertisedHost string `yaml:"advertised_host"`
	// Port of the actor remoting, default 0 = any free port (members tell
	// each other their address). `troupe worker --port` overrides it.
	Port int `yaml:"port"`
	// HealthPort is where a worker answers the automanaged provider's
	// membership polls (HTTP GET /_health on host), default 7701; every
	// worker's host:health_port is one of Members. `troupe worker
	// --health-port` overrides it.
	HealthPort int `yaml:"health_port"`
	// Members lists every worker's host:health_port, e.g. ["10.0.0.7:7701",
	// "10.0.0.8:7701"]: the static host list the automanaged provider polls
	// (every 2 s). A listed worker that is not running is simply absent.
	Members []string `yaml:"members"`
	// RunID names the run; the learner and its workers must agree (every
	// request carries it, and a worker of another run is refused), default
	// run_dir's base name, e.g. "ppo".
	RunID string `yaml:"run_id"`
	// TLS for the gRPC remoting, default off. cert and key: this process's
	// certificate (server and client side); ca: the CA both sides verify the
	// other's certificate against (mutual TLS). All three, or none.
	TLS TLSConfig `yaml:"tls"`
}

// DefaultRunConfig returns the defaults documented on RunConfig; Stage and
// Data.Train have none.
func DefaultRunConfig() RunConfig {
	return RunConfig{
		Seed:         1,
		Device:       "cpu",
		MaxNonFinite: 5,
		Model:        learner.DefaultModelConfig(),
		Data:         learner.DefaultDataConfig(),
		Train:        learner.DefaultTrainConfig(),
		Checkpoint:   CheckpointConfig{Every: 200, Keep: 3},
		Publish:      PublishConfig{Every: 50},
		Evaluator:    EvaluatorConfig{Replicas: 1, Every: 1, MaxNewTokens: 48, Temperature: 0.8},
		PPO:          learner.DefaultPPOConfig(),
		Critic:       learner.DefaultCriticConfig(),
		Reward:       learner.DefaultRewardConfig(),
		Generator:    PoolConfig{Replicas: 1, Threads: 1},
		Reference:    PoolConfig{Replicas: 1, Threads: 1},
		Cluster:      ClusterConfig{Host: "127.0.0.1", HealthPort: 7701},
	}
}

// ConfigError is a refused config: the file, the line (0 = unknown), the YAML
// path of the field and what is wrong with it, e.g.
//
//	run.yaml: line 7: train.lrr: unknown key; allowed: steps, batch_size, ...
type ConfigError struct {
	File string
	Line int
	Path string // e.g. "train.lr"; "" for the document itself
	Msg  string
	Err  error // the cause, e.g. a learner.ErrConfig from Validate; may be nil
}

func (e *ConfigError) Error() string {
	parts := make([]string, 0, 4)
	if e.File != "" {
		parts = append(parts, e.File)
	}
	if e.Line > 0 {
		parts = append(parts, fmt.Sprintf("line %d", e.Line))
	}
	if e.Path != "" {
		parts = append(parts, e.Path)
	}
	return strings.Join(append(parts, e.Msg), ": ")
}

// Unwrap lets errors.Is find ErrConfig and the cause.
func (e *ConfigError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrConfig, e.Err}
	}
	return []error{ErrConfig}
}

// LoadRunConfig reads a run config: the file's fields over DefaultRunConfig,
// relative paths resolved (see RunConfig), then validated. Unknown keys, values
// of the wrong type and values out of range are refused with a *ConfigError
// naming the field's path and line and the allowed keys or values.
//
// Data files are not opened here (see CheckFiles), so a config can be checked
// before its data is built.
func LoadRunConfig(path string) (RunConfig, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return RunConfig{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return ParseRunConfig(path, src)
}

// ParseRunConfig is LoadRunConfig on src, as if read from path (which names
// the file in errors and anchors relative paths).
func ParseRunConfig(path string, src []byte) (RunConfig, error) {
	cfg := DefaultRunConfig()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return cfg, &ConfigError{File: path, Msg: strings.TrimPrefix(err.Error(), "yaml: "), Err: err}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return cfg, &ConfigError{File: path, Line: extra.Line, Msg: "a second YAML document; a run config is one document"}
	}

	lines := map[string]int{} // YAML path -> line of its key, for every key the file sets
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		if err := checkNode(path, root, reflect.TypeOf(cfg), "", lines); err != nil {
			return cfg, err
		}
		// checkNode has refused every unknown key and mistyped value with its
		// path; the strict decode below should therefore not fail, but stays
		// strict so that nothing the walk missed is ignored.
		if err := strictDecode(root, &cfg); err != nil {
			return cfg, &ConfigError{File: path, Msg: strings.TrimPrefix(err.Error(), "yaml: "), Err: err}
		}
	}

	// An empty list and an absent one mean the same; keep one form so that a
	// saved and reloaded config compares equal.
	cfg.NATS.fromEnv(os.Getenv)
	for _, l := range []*[]string{&cfg.Data.Train, &cfg.Data.Val, &cfg.Evaluator.Prompts, &cfg.Cluster.Members} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	// min_lr's documented default is lr/10, which DefaultTrainConfig cannot
	// know when the file sets lr.
	if _, ok := lines["train.min_lr"]; !ok {
		// Rounded to 12 digits so that the saved config reads 0.0003, not 0.00030000000000000003.
		cfg.Train.MinLR, _ = strconv.ParseFloat(strconv.FormatFloat(cfg.Train.LR/10, 'g', 12, 64), 64)
	}
	if _, ok := lines["run_dir"]; !ok && cfg.Stage != "" {
		cfg.RunDir = filepath.Join("runs", cfg.Stage)
	}
	cfg.resolvePaths(filepath.Dir(path), lines)

	if err := cfg.Validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.File = path
			if ce.Line == 0 {
				ce.Line = lineOf(lines, ce.Path)
			}
		}
		return cfg, err
	}
	return cfg, nil
}

// strictDecode decodes node into out refusing unknown fields (yaml.v3's
// KnownFields), by re-encoding it: a Node cannot be decoded strictly itself.
func strictDecode(node *yaml.Node, out any) error {
	b, err := yaml.Marshal(node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(out)
}

// lineOf returns the line of path's key, or of its nearest parent in the file.
func lineOf(lines map[string]int, path string) int {
	for p := path; p != ""; {
		if l, ok := lines[p]; ok {
			return l
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// checkNode walks the YAML node n against the Go type t, refusing unknown keys
// (naming the allowed ones) and values of the wrong kind or type, and records
// the line of every key under its path in lines. A single string where a list
// of strings is expected is rewritten as a one-element list.
func checkNode(file string, n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	bad := func(n *yaml.Node, format string, args ...any) error {
		return &ConfigError{File: file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	if n.Kind == yaml.AliasNode {
		return bad(n, "YAML aliases are not supported in a run config")
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // keeps the default (an empty list for a list)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad(n, "want a mapping with keys %s, got %s", strings.Join(yamlKeys(t), ", "), describe(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				return &ConfigError{File: file, Line: k.Line, Path: sub,
					Msg: "unknown key; allowed: " + strings.Join(yamlKeys(t), ", ")}
			}
			lines[sub] = k.Line
			if err := checkNode(file, v, f.Type, sub, lines); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && t.Elem().Kind() == reflect.String {
			item := *n
			*n = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: n.Line, Column: n.Column, Content: []*yaml.Node{&item}}
		}
		if n.Kind != yaml.SequenceNode {
			return bad(n, "want a list of %s, got %s", typeName(t.Elem()), describe(n))
		}
		for i, item := range n.Content {
			if err := checkNode(file, item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lines); err != nil {
				return err
			}
		}
		return nil
	default:
		if n.Kind != yaml.ScalarNode {
			return bad(n, "want %s, got %s", typeName(t), describe(n))
		}
		if t.Kind() == reflect.String && n.Tag != "!!str" && n.Style == 0 {
			// Unquoted numbers and booleans where a string is expected are
			// accepted as their text (e.g. a prompt "2+2="), as yaml.v3 does.
			return nil
		}
		isInt := t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64
		if isInt && n.ShortTag() != "!!int" {
			return bad(n, "want %s, got %s", typeName(t), describe(n)) // yaml.v3 would truncate 2.5 to 2
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return bad(n, "want %s, got %s", typeName(t), describe(n))
		}
		return nil
	}
}

// yamlKeys lists the yaml tags of struct t's fields in declaration order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if name := tagName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

func tagName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name) // yaml.v3's default
	}
	return name
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); tagName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list of " + typeName(t.Elem())
	case reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// resolvePaths makes every path absolute: those the file sets (their YAML
// paths are in lines) against dir, defaults against the working directory.
func (c *RunConfig) resolvePaths(dir string, lines map[string]int) {
	abs := func(yamlPath, p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		if _, inFile := lines[yamlPath]; inFile {
			p = filepath.Join(dir, p)
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	c.mapPaths(abs)
}

// mapPaths replaces every path field with f(yaml path, value). Lists report
// their own YAML path for every item.
func (c *RunConfig) mapPaths(f func(yamlPath, p string) string) {
	c.RunDir = f("run_dir", c.RunDir)
	c.Model.Init = f("model.init", c.Model.Init)
	c.Model.Tokenizer = f("model.tokenizer", c.Model.Tokenizer)
	for i := range c.Data.Train {
		c.Data.Train[i] = f("data.train", c.Data.Train[i])
	}
	for i := range c.Data.Val {
		c.Data.Val[i] = f("data.val", c.Data.Val[i])
	}
	c.Data.CacheDir = f("data.cache_dir", c.Data.CacheDir)
	for i := range c.PPO.PtxData {
		c.PPO.PtxData[i] = f("ppo.ptx_data", c.PPO.PtxData[i])
	}
	c.Reward.Model = f("reward.model", c.Reward.Model)
	if ci := c.Critic.Init; ci != "policy" && ci != "reward" {
		c.Critic.Init = f("critic.init", ci)
	}
	c.NATS.Creds = f("nats.creds", c.NATS.Creds)
	c.NATS.NkeySeed = f("nats.nkey_seed", c.NATS.NkeySeed)
	for _, t := range []struct {
		path string
		tls  *TLSConfig
	}{{"nats.tls", &c.NATS.TLS}, {"cluster.tls", &c.Cluster.TLS}} {
		t.tls.Cert = f(t.path+".cert", t.tls.Cert)
		t.tls.Key = f(t.path+".key", t.tls.Key)
		t.tls.CA = f(t.path+".ca", t.tls.CA)
	}
}

// Validate checks every field, naming the bad one by its YAML path and the
// allowed values; the learner sections are checked by their own Validate.
func (c RunConfig) Validate() error {
	bad := func(path, format string, args ...any) error {
		return &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)}
	}
	switch c.Stage {
	case "pretrain", "sft", "rm", "ppo":
	case "":
		return bad("stage", "required; allowed values: %s", strings.Join(Stages, ", "))
	default:
		return bad("stage", "%q is not a stage; allowed values: %s", c.Stage, strings.Join(Stages, ", "))
	}
	if c.RunDir == "" {
		return bad("run_dir", "must not be empty")
	}
	if c.Device != "cpu" && c.Device != "cuda" {
		return bad("device", "%q is not a device; allowed values: cpu, cuda", c.Device)
	}
	for _, sec := range []struct {
		path string
		err  error
	}{{"model", c.Model.Validate("model")}, {"data", c.Data.Validate("data")}, {"train", c.Train.Validate("train")}} {
		if sec.err != nil {
			return learnerErr(sec.path, sec.err)
		}
	}
	if c.Stage == "ppo" {
		for _, sec := range []struct {
			path string
			err  error
		}{{"ppo", c.PPO.Validate("ppo")}, {"critic", c.Critic.Validate("critic")}, {"reward", c.Reward.Validate("reward")}} {
			if sec.err != nil {
				return learnerErr(sec.path, sec.err)
			}
		}
		minReplicas := 1
		if c.Cluster.Enabled {
			minReplicas = 0 // workers may host them all
		}
		for _, p := range []struct {
			path string
			pc   PoolConfig
		}{{"generator", c.Generator}, {"reference", c.Reference}} {
			if p.pc.Replicas < minReplicas || p.pc.Replicas > 64 {
				return bad(p.path+".replicas", "must be in [%d, 64], got %d", minReplicas, p.pc.Replicas)
			}
			if p.pc.Threads < 0 || p.pc.Threads > 4096 {
				return bad(p.path+".threads", "must be in [0, 4096] (0 = 1), got %d", p.pc.Threads)
			}
		}
	}
	// An sft or rm stage without model.init is allowed (tests fine-tune a
	// fresh model) but rarely meant: see Warnings.
	ints := []struct {
		path   string
		v, min int
		max    int // 0 = no upper bound
	}{
		{"threads", c.Threads, 0, 4096},
		{"max_non_finite", c.MaxNonFinite, 1, 0},
		{"checkpoint.every", c.Checkpoint.Every, 1, 0},
		{"checkpoint.keep", c.Checkpoint.Keep, 1, 0},
		{"publish.every", c.Publish.Every, 1, 0},
		{"evaluator.replicas", c.Evaluator.Replicas, 0, 64},
		{"evaluator.every", c.Evaluator.Every, 1, 0},
		{"evaluator.max_new_tokens", c.Evaluator.MaxNewTokens, 0, 4096},
	}
	for _, f := range ints {
		switch {
		case f.v < f.min && f.max == 0:
			return bad(f.path, "must be >= %d, got %d", f.min, f.v)
		case f.max != 0 && (f.v < f.min || f.v > f.max):
			return bad(f.path, "must be in [%d, %d], got %d", f.min, f.max, f.v)
		}
	}
	if !(c.Evaluator.Temperature >= 0 && c.Evaluator.Temperature <= 10) {
		return bad("evaluator.temperature", "must be in [0, 10] (0 = greedy), got %g", c.Evaluator.Temperature)
	}
	if err := c.NATS.validate(); err != nil {
		return err
	}
	if d := c.NATS.WeightsDType; d != "" && dtypeSize(d) == 0 {
		return bad("nats.weights_dtype", "%q; allowed values: %s, %s", d, DTypeFP32, DTypeBF16)
	}
	if m := c.NATS.WeightsShm; m != "" && m != ShmAuto && m != ShmOff {
		return bad("nats.weights_shm", "%q; allowed values: %s, %s", m, ShmAuto, ShmOff)
	}
	if d := c.NATS.WeightsDirect; d != "" && d != DirectOff {
		if _, port, err := net.SplitHostPort(d); err != nil || !validPort(port) {
			return bad("nats.weights_direct", "%q; allowed values: %s, or host:port to listen on (e.g. :7450, 10.0.0.5:7450; port 0 = any)", d, DirectOff)
		}
	}
	return c.Cluster.validate(c.Stage, c.NATS.URL)
}

// learnerErr turns a learner Validate error ("learner: bad config: train.lr:
// must be > 0, got 0") into a ConfigError with the field's path.
func learnerErr(section string, err error) error {
	msg := strings.TrimPrefix(err.Error(), learner.ErrConfig.Error()+": ")
	path := section
	if p, rest, ok := strings.Cut(msg, ": "); ok && (p == section || strings.HasPrefix(p, section+".")) {
		path, msg = p, rest
	}
	return &ConfigError{Path: path, Msg: msg, Err: err}
}

// Warnings lists settings that are allowed but rarely meant, for the CLI to log.
func (c RunConfig) Warnings() []string {
	var w []string
	if (c.Stage == "sft" || c.Stage == "rm" || c.Stage == "ppo") && c.Model.Init == "" {
		w = append(w, fmt.Sprintf("model.init is empty: the %s stage starts from a fresh, untrained model", c.Stage))
	}
	if c.Evaluator.Replicas > 0 && c.Checkpoint.Every%c.Publish.Every != 0 {
		w = append(w, fmt.Sprintf("checkpoint.every (%d) is not a multiple of publish.every (%d): checkpoints between published versions have no held-out figure and cannot be kept as the best",
			c.Checkpoint.Every, c.Publish.Every))
	}
	return w
}

// CheckFiles checks that the data and model paths exist: every data.train and
// data.val glob matches a file, model.init holds a checkpoint (or is a run
// directory with one), model.tokenizer exists for a fresh model.
func (c RunConfig) CheckFiles() error {
	for _, sec := range []struct {
		path  string
		globs []string
	}{{"data.train", c.Data.Train}, {"data.val", c.Data.Val}, {"ppo.ptx_data", c.PPO.PtxData}} {
		for i, g := range sec.globs {
			m, err := filepath.Glob(g)
			if err != nil {
				return &ConfigError{Path: fmt.Sprintf("%s[%d]", sec.path, i), Msg: fmt.Sprintf("bad glob %q: %v", g, err)}
			}
			if len(m) == 0 {
				return &ConfigError{Path: fmt.Sprintf("%s[%d]", sec.path, i), Msg: fmt.Sprintf("%s matches no file", g)}
			}
		}
	}
	if c.Stage == "ppo" && c.Reward.Model != "" {
		if _, err := os.Stat(c.Reward.Model); err != nil {
			return &ConfigError{Path: "reward.model", Msg: fmt.Sprintf("%v (want a reward-model checkpoint directory, or an rm run directory)", err)}
		}
	}
	if c.Model.Init != "" {
		if _, err := os.Stat(c.Model.Init); err != nil {
			return &ConfigError{Path: "model.init", Msg: fmt.Sprintf("%v (want a checkpoint directory, or a run directory with checkpoints)", err)}
		}
	} else if _, err := os.Stat(c.Model.Tokenizer); err != nil {
		return &ConfigError{Path: "model.tokenizer", Msg: err.Error() +
			" (a byte-level tokenizer: troupe train-tokenizer --input data/kjv.txt --vocab-size 257 --out DIR; GPT-2's: data/gpt2)"}
	}
	return nil
}

// SaveRunConfig writes cfg to path atomically, behind a header saying where it
// came from. Paths under the same top-level directory as path's are written
// relative to path's directory (so that a repository with its runs and data
// can be moved), others stay absolute.
func SaveRunConfig(path string, cfg RunConfig, header string) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return err
	}
	cfg.Data.Train = append([]string(nil), cfg.Data.Train...)
	cfg.Data.Val = append([]string(nil), cfg.Data.Val...)
	cfg.NATS = cfg.NATS.withoutSecrets()
	cfg.mapPaths(func(_, p string) string {
		if p == "" || !filepath.IsAbs(p) || topDir(p) != topDir(dir) {
			return p // a path elsewhere on the machine stays absolute
		}
		if r, err := filepath.Rel(dir, p); err == nil {
			return r
		}
		return p
	})
	body, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return policy.WriteFileAtomic(path, func(w io.Writer) error {
		for _, l := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
			if l != "" {
				fmt.Fprintf(w, "# %s\n", l)
			}
		}
		_, err := w.Write(body)
		return err
	})
}

// pathKeys are the YAML paths of RunConfig's path fields (lists included).
// critic.init is one too unless it says policy or reward.
var pathKeys = map[string]bool{"run_dir": true, "model.init": true, "model.tokenizer": true,
	"data.train": true, "data.val": true, "data.cache_dir": true, "reward.model": true, "ppo.ptx_data": true, "critic.init": true,
	"nats.creds": true, "nats.nkey_seed": true, "nats.tls.cert": true, "nats.tls.key": true, "nats.tls.ca": true,
	"cluster.tls.cert": true, "cluster.tls.key": true, "cluster.tls.ca": true}

// RelocateConfig rewrites the relative paths that a run config's text sets
// (see RunConfig) so that, read from a file in toDir, they name the same
// files as they did from fromDir; everything else, comments included, is kept
// byte for byte. Only plain and simply quoted values can be rewritten (an
// escape sequence in a quoted path is an error).
func RelocateConfig(src []byte, fromDir, toDir string) ([]byte, error) {
	from, err := filepath.Abs(fromDir)
	if err != nil {
		return nil, err
	}
	to, err := filepath.Abs(toDir)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	type edit struct {
		line, col int // 1-based, as yaml.v3 counts
		old, new  string
	}
	var edits []edit
	var walk func(n *yaml.Node, path string) error
	walk = func(n *yaml.Node, path string) error {
		switch {
		case n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				sub := n.Content[i].Value
				if path != "" {
					sub = path + "." + sub
				}
				if err := walk(n.Content[i+1], sub); err != nil {
					return err
				}
			}
		case n.Kind == yaml.SequenceNode && pathKeys[path]:
			for _, item := range n.Content {
				if err := walk(item, path); err != nil {
					return err
				}
			}
		case n.Kind == yaml.ScalarNode && pathKeys[path] && n.Value != "" && !filepath.IsAbs(n.Value) &&
			!(path == "critic.init" && (n.Value == "policy" || n.Value == "reward")):
			rel, err := filepath.Rel(to, filepath.Join(from, n.Value))
			if err != nil {
				return fmt.Errorf("%w: line %d: %s: %v", ErrConfig, n.Line, path, err)
			}
			edits = append(edits, edit{n.Line, n.Column, n.Value, filepath.ToSlash(rel)})
		}
		return nil
	}
	if len(doc.Content) > 0 {
		if err := walk(doc.Content[0], ""); err != nil {
			return nil, err
		}
	}
	// Later edits first, so earlier columns on the same line stay valid.
	sort.Slice(edits, func(i, j int) bool {
		if edits[i].line != edits[j].line {
			return edits[i].line > edits[j].line
		}
		return edits[i].col > edits[j].col
	})
	lines := strings.SplitAfter(string(src), "\n")
	for _, e := range edits {
		l := lines[e.line-1]
		at := e.col - 1
		rest := ""
		if at < len(l) {
			rest = l[at:]
		}
		switch {
		case strings.HasPrefix(rest, e.old):
			lines[e.line-1] = l[:at] + e.new + keepAligned(rest[len(e.old):], len(e.new)-len(e.old))
		case len(rest) > 0 && (rest[0] == '"' || rest[0] == '\'') && strings.HasPrefix(rest[1:], e.old+rest[:1]):
			lines[e.line-1] = l[:at+1] + e.new + rest[:1] + keepAligned(rest[2+len(e.old):], len(e.new)-len(e.old))
		default:
			return nil, fmt.Errorf("%w: line %d: path %q is not written plainly enough to rewrite", ErrConfig, e.line, e.old)
		}
	}
	return []byte(strings.Join(lines, "")), nil
}

// keepAligned takes grow spaces off the padding before a trailing comment in
// rest (keeping one), so that comments stay in their column.
func keepAligned(rest string, grow int) string {
	pad := len(rest) - len(strings.TrimLeft(rest, " "))
	if grow <= 0 || pad < 2 || !strings.HasPrefix(rest[pad:], "#") {
		return rest
	}
	return rest[min(grow, pad-1):]
}

// topDir is an absolute path's first component, e.g. "work" for /work/main.
func topDir(p string) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(filepath.ToSlash(p), "/"), "/")
	return first
}
