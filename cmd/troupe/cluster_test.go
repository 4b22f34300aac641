package main

// Multi-process runs on loopback: a NATS server process, a learner process
// (`troupe run`) and worker processes (`troupe worker`) on 127.0.0.x. Each
// process is this test binary started again (TestMain runs main() or the
// NATS server instead of the tests), so no separate `go build` is needed and
// the code under test is exactly the CLI's. The NATS server is nats-server
// from the Go module troupe already embeds (Debian's nats-server is not
// installed here), in its own process with JetStream on disk, so it can be
// killed and restarted on the same store.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-rl/troupe/actors"
)

// Child processes: TROUPE_TEST_PROCESS=troupe runs the CLI on os.Args,
// =nats a NATS server on TROUPE_TEST_NATS_PORT with its JetStream store in
// TROUPE_TEST_NATS_STORE and the login TROUPE_TEST_NATS_USER /
// TROUPE_NATS_PASSWORD.
func TestMain(m *testing.M) {
	switch os.Getenv("TROUPE_TEST_PROCESS") {
	case "troupe":
		main()
		os.Exit(0)
	case "nats":
		os.Exit(testNATSServer())
	}
	os.Exit(m.Run())
}

func testNATSServer() int {
	port, _ := strconv.Atoi(os.Getenv("TROUPE_TEST_NATS_PORT"))
	opts := &server.Options{
		ServerName: "troupe-test", Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: os.Getenv("TROUPE_TEST_NATS_STORE"), NoSigs: true,
		Username: os.Getenv("TROUPE_TEST_NATS_USER"), Password: os.Getenv(actors.EnvNATSPassword),
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats-server not ready")
		return 1
	}
	fmt.Fprintf(os.Stderr, "nats-server ready on %s\n", srv.ClientURL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	srv.Shutdown()
	srv.WaitForShutdown()
	return 0
}

// proc is a child process, its stderr (the JSON log lines) in a file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

const natsSecret = "loopback-s3cret" // TROUPE_NATS_PASSWORD of every process

func startProc(t *testing.T, dir, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, logPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "---- %s %s\n", time.Now().Format(time.TimeOnly), strings.Join(args, " "))
	p.cmd = exec.Command(os.Args[0], args...)
	// env last: it may set another password (os/exec keeps the last value).
	p.cmd.Env = append(append(os.Environ(), actors.EnvNATSPassword+"="+natsSecret), env...)
	p.cmd.Stderr, p.cmd.Stdout = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill is kill -9.
func (p *proc) kill() {
	if p.running() {
		p.cmd.Process.Kill()
		<-p.done
	}
}

// stop is SIGTERM, then kill -9 after timeout.
func (p *proc) stop(timeout time.Duration) {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
	}
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.kill()
		t.Fatalf("%s did not finish in %v; log:\n%s", p.name, timeout, p.tail(60))
		return nil
	}
}

// logText is the log of the process's last life (a name started again
// appends to its file).
func (p *proc) logText() string {
	b, _ := os.ReadFile(p.logPath)
	s := string(b)
	if i := strings.LastIndex(s, "\n---- "); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.logText(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// logLines are the JSON log lines whose message is msg.
func (p *proc) logLines(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.logText()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitLog waits until n lines with message msg are logged.
func (p *proc) waitLog(t *testing.T, msg string, n int, timeout time.Duration) []map[string]any {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if ls := p.logLines(msg); len(ls) >= n {
			return ls
		}
		if time.Now().After(deadline) || !p.running() {
			t.Fatalf("%s: %d × %q not logged (running %v); log:\n%s", p.name, n, msg, p.running(), p.tail(60))
		}
	}
}

// loopback is a cluster on this machine: a NATS server process, and the
// addresses of up to 2 workers on 127.0.0.2 and 127.0.0.3.
type loopback struct {
	f         runFixture
	dir       string
	natsPort  int
	natsStore string
	nats      *proc
	hosts     []string // workers' addresses
	health    []int    // their health ports

	epochs, minibatches int // ppo settings of the configs written, default 2 and 2
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("listen on %s: %v (loopback addresses beyond 127.0.0.1 are needed)", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newLoopback(t *testing.T) *loopback {
	if testing.Short() {
		t.Skip("multi-process runs: skipped with -short")
	}
	lb := &loopback{f: newRunFixture(t), epochs: 2, minibatches: 2}
	lb.dir = lb.f.dir
	lb.natsPort = freePort(t, "127.0.0.1")
	lb.natsStore = filepath.Join(lb.dir, "nats-store")
	for _, h := range []string{"127.0.0.2", "127.0.0.3"} {
		lb.hosts = append(lb.hosts, h)
		lb.health = append(lb.health, freePort(t, h))
	}
	lb.startNATS(t)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"nats", "learner", "worker-0", "worker-1"} {
				if b, err := os.ReadFile(filepath.Join(lb.dir, name+".log")); err == nil {
					lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
					t.Logf("---- %s.log (last 40 lines)\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
				}
			}
		}
	})
	return lb
}

func (lb *loopback) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", lb.natsPort) }

func (lb *loopback) startNATS(t *testing.T) {
	t.Helper()
	lb.nats = startProc(t, lb.dir, "nats", []string{"TROUPE_TEST_PROCESS=nats",
		"TROUPE_TEST_NATS_PORT=" + strconv.Itoa(lb.natsPort), "TROUPE_TEST_NATS_STORE=" + lb.natsStore, "TROUPE_TEST_NATS_USER=troupe"})
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(lb.nats.logText(), "nats-server ready"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || !lb.nats.running() {
			t.Fatalf("nats-server did not start:\n%s", lb.nats.logText())
		}
	}
}

// config writes a PPO config for this cluster: a fresh 2-layer policy, rule
// rewards, every generator on the workers, reference and reward in the
// learner's process, a checkpoint every iteration.
func (lb *loopback) config(t *testing.T, name, runID string, iterations, prompts, maxNew int) string {
	return lb.configShaped(t, name, runID, iterations, prompts, maxNew, "n_layer: 2, n_head: 4, n_embd: 128")
}

// configShaped is config with the model's n_layer, n_head and n_embd.
func (lb *loopback) configShaped(t *testing.T, name, runID string, iterations, prompts, maxNew int, shape string) string {
	t.Helper()
	var rl bytes.Buffer
	for i := 0; i < 64; i++ {
		a, b := 13*i%97, 29*i%89
		json.NewEncoder(&rl).Encode(map[string]string{"prompt": fmt.Sprintf("%d+%d=", a, b), "answer": fmt.Sprint(a + b)})
	}
	os.WriteFile(filepath.Join(lb.dir, "rl.jsonl"), rl.Bytes(), 0o644)
	var members []string
	for i, h := range lb.hosts {
		members = append(members, fmt.Sprintf("%q", net.JoinHostPort(h, strconv.Itoa(lb.health[i]))))
	}
	src := fmt.Sprintf(`stage: ppo
run_dir: runs/%s
threads: 1
model: {shape: tiny, %s, n_positions: %d, tokenizer: tok}
data: {train: [rl.jsonl], val_fraction: 0.25}
ppo: {iterations: %d, prompts_per_iter: %d, max_new_tokens: %d, lr: 0.003, epochs: %d, minibatches: %d, eval_prompts: 16}
critic: {init: policy, lr: 0.003}
reward: {rules: [{type: format, pattern: "^[0-9]"}, {type: exact_match}], missing_eos_penalty: 0}
generator: {replicas: 0, threads: 1}
checkpoint: {every: 1, keep: 2}
evaluator: {replicas: 0}
nats: {url: %q, user: troupe}
cluster:
  enabled: true
  run_id: %s
  members: [%s]
`, name, shape, 16+maxNew, iterations, prompts, maxNew, lb.epochs, lb.minibatches, lb.natsURL(), runID, strings.Join(members, ", "))
	path := filepath.Join(lb.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// worker starts worker i (a generator) with the config at cfg.
func (lb *loopback) worker(t *testing.T, i int, cfg string, env ...string) *proc {
	t.Helper()
	return lb.workerRoles(t, i, cfg, "generator", env...)
}

// workerRoles starts worker i hosting roles (e.g. "generator,evaluator").
func (lb *loopback) workerRoles(t *testing.T, i int, cfg, roles string, env ...string) *proc {
	t.Helper()
	return startProc(t, lb.dir, fmt.Sprintf("worker-%d", i), append([]string{"TROUPE_TEST_PROCESS=troupe", "TROUPE_LOG_LEVEL=debug"}, env...),
		"worker", "--config", cfg, "--roles", roles, "--host", lb.hosts[i], "--health-port", strconv.Itoa(lb.health[i]))
}

func (lb *loopback) learner(t *testing.T, args ...string) *proc {
	t.Helper()
	return startProc(t, lb.dir, "learner", []string{"TROUPE_TEST_PROCESS=troupe"}, append([]string{"run"}, args...)...)
}

// rolloutRate is the mean rollout_tokens_per_s of a run's iterations after
// the first (which includes the workers' joining and warm-up).
// waitServing waits until each worker has logged that it serves.
func waitServing(t *testing.T, workers ...*proc) {
	t.Helper()
	for _, w := range workers {
		w.waitLog(t, "worker serving", 1, time.Minute)
	}
}

// learnerTraining starts a learner on cfg and waits until both workers have
// joined and it has trained two iterations.
func (lb *loopback) learnerTraining(t *testing.T, cfg string) *proc {
	t.Helper()
	l := lb.learner(t, cfg)
	l.waitLog(t, "worker joined: its actors take work", 2, time.Minute)
	l.waitLog(t, "iteration trained", 2, 3*time.Minute)
	return l
}

func rolloutRate(t *testing.T, runDir string) (float64, []float64) {
	t.Helper()
	steps := readSteps(t, runDir)
	var rates []float64
	for _, s := range steps[1:] {
		rates = append(rates, s.Extra["rollout_tokens_per_s"])
	}
	sum := 0.0
	for _, r := range rates {
		sum += r
	}
	return sum / float64(len(rates)), rates
}

// checkComplete fails unless runDir's metrics have every iteration once, each
// trained on every sample.
func checkComplete(t *testing.T, runDir string, iterations, samples int) {
	t.Helper()
	steps := readSteps(t, runDir)
	if len(steps) != iterations {
		t.Fatalf("%s: %d iterations recorded, want %d", runDir, len(steps), iterations)
	}
	for i, s := range steps {
		if s.Step != i+1 || s.Extra["rollouts"] != float64(samples) {
			t.Fatalf("%s: iteration record %d: step %d with %v rollouts, want step %d with %d", runDir, i, s.Step, s.Extra["rollouts"], i+1, samples)
		}
	}
}

// checkNoSecret fails if the NATS password is in any log or the saved config.
func (lb *loopback) checkNoSecret(t *testing.T, runDir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(lb.dir, "*.log"))
	files = append(files, filepath.Join(runDir, actors.ConfigFile))
	for _, f := range files {
		if b, _ := os.ReadFile(f); bytes.Contains(b, []byte(natsSecret)) {
			t.Fatalf("%s holds the NATS password", f)
		}
	}
}

// (a) A NATS server, a learner and 2 generator workers, each its own
// process on loopback, complete a PPO run; the same run with 1 worker
// process first gives the rollout tokens/s to compare. The NATS password
// comes from the environment and is in no log and not in the saved config.
func TestClusterThreeProcesses(t *testing.T) {
	lb := newLoopback(t)
	// A model whose sampling is compute-bound (batched matmuls, not per-step
	// overhead), a short update (1 epoch, 1 minibatch): the run is mostly
	// the rollouts being measured.
	const its, prompts, newTokens, shape = 4, 64, 32, "n_layer: 2, n_head: 8, n_embd: 512"
	cfg1 := lb.configShaped(t, "one-worker", "demo", its, prompts, newTokens, shape)
	w0 := lb.worker(t, 0, cfg1)
	w0.waitLog(t, "worker serving", 1, time.Minute)
	l := lb.learner(t, cfg1)
	if err := l.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("learner with 1 worker: %v\n%s", err, l.tail(40))
	}
	run1 := filepath.Join(lb.dir, "runs", "one-worker")
	checkComplete(t, run1, its, prompts)

	cfg2 := lb.configShaped(t, "two-workers", "demo", its, prompts, newTokens, shape)
	w1 := lb.worker(t, 1, cfg2)
	w1.waitLog(t, "worker serving", 1, time.Minute)
	l = lb.learner(t, cfg2)
	if err := l.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("learner with 2 workers: %v\n%s", err, l.tail(40))
	}
	run2 := filepath.Join(lb.dir, "runs", "two-workers")
	checkComplete(t, run2, its, prompts)
	// Both workers served the second run: each saw its learner.
	for _, w := range []*proc{w0, w1} {
		if len(w.logLines("learner attached")) == 0 || len(w.logLines("rollouts sent")) == 0 {
			t.Fatalf("%s served nothing:\n%s", w.name, w.tail(30))
		}
	}
	// (Counted by address: a worker that rejoins after a stall of its
	// machine joins again under another member id.)
	joined := map[any]bool{}
	for _, line := range l.logLines("worker joined: its actors take work") {
		joined[line["worker"]] = true
	}
	if len(joined) != 2 {
		t.Fatalf("second learner saw workers %v join, want 2", joined)
	}
	for _, run := range []string{run1, run2} {
		for _, st := range readSteps(t, run) {
			t.Logf("%s iteration %d: generate %.2fs (busy %.2fs over the generators, waiting for weights %.2fs), %v tokens, train %.2fs",
				filepath.Base(run), st.Step, st.Extra["generate_seconds"], st.Extra["generate_busy_seconds"], st.Extra["weights_wait_seconds"], st.Extra["rollout_tokens"], st.Extra["train_seconds"])
		}
	}
	r1, rates1 := rolloutRate(t, run1)
	r2, rates2 := rolloutRate(t, run2)
	fmt.Printf("rollout tokens/s with 1 worker process: %.0f (iterations 2..%d: %.0f)\n", r1, its, rates1)
	fmt.Printf("rollout tokens/s with 2 worker processes: %.0f (iterations 2..%d: %.0f): %.2fx\n", r2, its, rates2, r2/r1)
	t.Logf("rollout tokens/s: 1 worker process %.0f, 2 worker processes %.0f (%.2fx); %d prompts × up to %d new tokens per iteration",
		r1, r2, r2/r1, prompts, newTokens)
	w0.stop(20 * time.Second)
	w1.stop(20 * time.Second)
	lb.checkNoSecret(t, run2)
}

// (b) kill -9 a worker while it samples: the learner sees it leave (no
// RolloutTimeout wait), re-queues its request on the other worker, and every
// iteration trains on every sample; the worker started again on the same
// address rejoins, loads the current weights and serves again.
func TestClusterWorkerKilled(t *testing.T) {
	lb := newLoopback(t)
	const its, prompts = 12, 64
	cfg := lb.config(t, "worker-killed", "killed", its, prompts, 32)
	w0, w1 := lb.worker(t, 0, cfg), lb.worker(t, 1, cfg)
	waitServing(t, w0, w1)
	l := lb.learnerTraining(t, cfg)
	// Kill worker 1 while it samples: it logged starting a request it has
	// not answered.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Millisecond) {
		text := w1.logText() // counted, not parsed: the window is tens of milliseconds
		if strings.Count(text, `"message":"sampling"`) > strings.Count(text, `"message":"rollouts sent"`) {
			break
		}
		if time.Now().After(deadline) || !l.running() {
			t.Fatalf("worker 1 never caught sampling:\n%s", w1.tail(20))
		}
	}
	w1.kill()
	killedAt := time.Now()
	left := l.waitLog(t, "worker left the cluster: its requests go to the others", 1, 30*time.Second)
	leftAfter := time.Since(killedAt)
	t.Logf("worker killed mid-rollout; the learner saw it leave %v later and re-queued %v request(s)", leftAfter.Round(10*time.Millisecond), left[0]["requeued"])
	if n, _ := left[0]["requeued"].(float64); n < 1 {
		t.Fatalf("the killed worker's request was not re-queued: %v", left[0])
	}

	// Back on the same address: it rejoins and gets the current weights.
	current := int64(l.logLines("iteration trained")[len(l.logLines("iteration trained"))-1]["version"].(float64))
	w1 = lb.worker(t, 1, cfg)
	w1.waitLog(t, "worker serving", 1, time.Minute)
	l.waitLog(t, "worker joined: its actors take work", 3, time.Minute)
	if err := l.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("learner: %v\n%s", err, l.tail(40))
	}
	checkComplete(t, filepath.Join(lb.dir, "runs", "worker-killed"), its, prompts)
	// The restarted worker's first weights were at least the version current
	// when it started, and it answered requests after that.
	life := w1.logText()
	var loaded []int64
	for _, line := range strings.Split(life, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "weights loaded" {
			loaded = append(loaded, int64(m["version"].(float64)))
		}
	}
	if len(loaded) == 0 || loaded[0] < current || !strings.Contains(life, `"message":"rollouts sent"`) {
		t.Fatalf("restarted worker: weights loaded %v (the learner was at version %d), served %v", loaded, current, strings.Contains(life, "rollouts sent"))
	}
	t.Logf("restarted worker loaded versions %v (learner at %d when it started)", loaded, current)
}

// (c) The NATS server is killed and started again on the same store while
// the run goes: learner and workers reconnect, the run completes, and a
// subscriber connected throughout (this test) sees every version, none
// skipped; rollouts after the restart use the newest weights (the learner
// refuses older ones in a synchronous run).
func TestClusterNATSRestart(t *testing.T) {
	lb := newLoopback(t)
	const its, prompts = 8, 32
	cfg := lb.config(t, "nats-restart", "nats-restart", its, prompts, 32)
	w0, w1 := lb.worker(t, 0, cfg), lb.worker(t, 1, cfg)
	waitServing(t, w0, w1)

	nc, err := actors.Connect(lb.natsURL(), nats.UserInfo("troupe", natsSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var versions []int64
	sub, err := actors.SubscribeWeights(nc, "policy", zerolog.Nop(), func(w actors.Weights) {
		mu.Lock()
		versions = append(versions, w.Version)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()

	l := lb.learner(t, cfg)
	l.waitLog(t, "iteration trained", 2, 3*time.Minute)
	lb.nats.kill()
	time.Sleep(time.Second)
	lb.startNATS(t)
	restarted := time.Now()
	if err := l.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("learner: %v\n%s", err, l.tail(40))
	}
	checkComplete(t, filepath.Join(lb.dir, "runs", "nats-restart"), its, prompts)
	// The final version reaches the subscriber too.
	final := int64(its + 1)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		got := slices.Clone(versions)
		mu.Unlock()
		if len(got) > 0 && got[len(got)-1] >= final {
			for i := 1; i < len(got); i++ {
				if got[i] != got[i-1]+1 {
					t.Fatalf("subscriber saw versions %v: skipped after %d", got, got[i-1])
				}
			}
			t.Logf("subscriber saw versions %v; the run finished %v after NATS came back", got, time.Since(restarted).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber saw versions %v, want up to %d", got, final)
		}
	}
	for _, p := range []*proc{l, w0, w1} {
		if len(p.logLines("nats reconnected")) == 0 {
			t.Fatalf("%s did not log reconnecting to NATS:\n%s", p.name, p.tail(30))
		}
	}
	retries := len(l.logLines("weights publish failed; retrying (NATS unreachable?)"))
	t.Logf("the learner retried %d weights publish(es) during the outage", retries)
	if testing.Verbose() && os.Getenv("TROUPE_TEST_LOGS") != "" {
		for _, p := range []*proc{l, w0, w1} {
			for _, line := range strings.Split(p.logText(), "\n") {
				if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
					t.Logf("%s: %s", p.name, line)
				}
			}
		}
	}
}

// (d) kill -9 the learner mid-run: `troupe run RUN_DIR --resume` continues
// from its last checkpoint with the same workers, which attach to the new
// learner; every iteration is recorded once.
func TestClusterLearnerKilledResumes(t *testing.T) {
	lb := newLoopback(t)
	const its, prompts = 8, 32
	cfg := lb.config(t, "learner-killed", "learner-killed", its, prompts, 32)
	w0, w1 := lb.worker(t, 0, cfg), lb.worker(t, 1, cfg)
	waitServing(t, w0, w1)
	l := lb.learner(t, cfg)
	l.waitLog(t, "iteration trained", 3, 3*time.Minute)
	l.kill()
	runDir := filepath.Join(lb.dir, "runs", "learner-killed")
	_, step, err := actors.LatestCheckpoint(runDir)
	if err != nil {
		t.Fatalf("no checkpoint after 3 iterations: %v", err)
	}
	l = lb.learner(t, runDir, "--resume")
	if err := l.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("resumed learner: %v\n%s", err, l.tail(40))
	}
	if !strings.Contains(l.logText(), `"message":"resumed"`) {
		t.Fatalf("the learner did not resume:\n%s", l.tail(40))
	}
	checkComplete(t, runDir, its, prompts)
	for _, w := range []*proc{w0, w1} {
		attached := w.logLines("learner attached")
		if len(attached) < 2 || attached[0]["learner"] == attached[len(attached)-1]["learner"] {
			t.Fatalf("%s: learners attached %v, want the killed one and the resumed one", w.name, attached)
		}
	}
	t.Logf("learner killed after checkpoint step %d; resumed and finished %d iterations; both workers reattached", step, its)
}

// A worker with the wrong NATS password does not start; one of another run
// (its config's run_id) joins the membership, but the learner and it refuse
// each other: it gets no work, and the run completes on the right worker.
func TestClusterRefusesStrangers(t *testing.T) {
	lb := newLoopback(t)
	const its, prompts = 3, 16
	cfg := lb.config(t, "strangers", "right-run", its, prompts, 16)
	other := lb.config(t, "other", "other-run", its, prompts, 16)

	bad := lb.worker(t, 1, cfg, actors.EnvNATSPassword+"=wrong")
	if err := bad.wait(t, time.Minute); err == nil || !strings.Contains(strings.ToLower(bad.logText()), "authorization violation") {
		t.Fatalf("worker with a wrong NATS password: exit %v, log:\n%s", err, bad.tail(10))
	}

	w0, w1 := lb.worker(t, 0, cfg), lb.worker(t, 1, other)
	waitServing(t, w0, w1)
	l := lb.learner(t, cfg)
	if err := l.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("learner: %v\n%s", err, l.tail(40))
	}
	checkComplete(t, filepath.Join(lb.dir, "runs", "strangers"), its, prompts)
	if len(l.logLines("worker refused this run")) == 0 || len(w1.logLines("learner of another run refused")) == 0 {
		t.Fatalf("no refusal logged:\nlearner:\n%s\nworker:\n%s", l.tail(20), w1.tail(20))
	}
	if len(w1.logLines("rollouts sent")) != 0 || len(w0.logLines("rollouts sent")) == 0 {
		t.Fatalf("the other run's worker served, or the run's own did not")
	}
	lb.checkNoSecret(t, filepath.Join(lb.dir, "runs", "strangers"))
}

// A worker stopped (SIGSTOP) past the automanaged provider's health poll is
// dropped by the learner, whose provider never lets that member id back in;
// continued (SIGCONT), it notices the pause, rejoins under a new member id,
// and gets work again in the same run, which completes with every sample.
func TestClusterWorkerPausedRejoins(t *testing.T) {
	lb := newLoopback(t)
	// Enough iterations that worker 0 alone does not finish the run while
	// worker 1 is stopped.
	const its, prompts = 40, 32
	cfg := lb.config(t, "worker-paused", "paused", its, prompts, 32)
	w0, w1 := lb.worker(t, 0, cfg), lb.worker(t, 1, cfg)
	waitServing(t, w0, w1)
	l := lb.learnerTraining(t, cfg)

	if err := w1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// The learner's next poll (every 2 s) times out after 2 s: it drops the
	// worker; 5 s is past both.
	l.waitLog(t, "worker left the cluster: its requests go to the others", 1, 30*time.Second)
	time.Sleep(time.Until(stopped.Add(5 * time.Second)))
	servedBefore := strings.Count(w1.logText(), `"message":"rollouts sent"`)
	if err := w1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	continued := time.Now()
	rejoin := w1.waitLog(t, "worker was paused past a health poll: rejoining the cluster under a new member id", 1, 30*time.Second)
	l.waitLog(t, "worker joined: its actors take work", 3, 30*time.Second)
	joinedAfter := time.Since(continued)
	// It serves again: a request sent to it after the rejoin is answered.
	for deadline := time.Now().Add(3 * time.Minute); strings.Count(w1.logText(), `"message":"rollouts sent"`) <= servedBefore+1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || !l.running() {
			t.Fatalf("the continued worker served no request after rejoining (learner running %v):\n%s", l.running(), w1.tail(30))
		}
	}
	if err := l.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("learner: %v\n%s", err, l.tail(40))
	}
	checkComplete(t, filepath.Join(lb.dir, "runs", "worker-paused"), its, prompts)
	t.Logf("worker stopped 5 s: it saw a pause of %v, rejoined as %v, and the learner had it back %v after SIGCONT",
		rejoin[0]["paused"], rejoin[0]["member_id"], joinedAfter.Round(10*time.Millisecond))
}

// A worker hosting an evaluator (`--roles evaluator`) follows the learner's
// weights during the run: its evaluations, of several versions up to the
// final one, land in the run's metrics.jsonl under its name.
func TestClusterWorkerEvaluator(t *testing.T) {
	lb := newLoopback(t)
	const its, prompts = 5, 16
	cfg := lb.config(t, "worker-evaluator", "evaluator", its, prompts, 16)
	w0, w1 := lb.worker(t, 0, cfg), lb.workerRoles(t, 1, cfg, "evaluator")
	waitServing(t, w0, w1)
	l := lb.learner(t, cfg)
	if err := l.wait(t, 5*time.Minute); err != nil {
		t.Fatalf("learner: %v\n%s", err, l.tail(40))
	}
	runDir := filepath.Join(lb.dir, "runs", "worker-evaluator")
	checkComplete(t, runDir, its, prompts)
	m, err := actors.ReadMetrics(filepath.Join(runDir, actors.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for _, e := range m.Evals {
		if !strings.HasPrefix(e.Evaluator, "evaluator@127.0.0.3:") {
			t.Fatalf("evaluation by %q; the only evaluator is the worker's", e.Evaluator)
		}
		if _, ok := e.Eval["val_exact_match"]; !ok {
			t.Fatalf("evaluation of version %d has no val_exact_match: %v", e.Version, e.Eval)
		}
		versions = append(versions, e.Version)
	}
	if final := int64(its + 1); len(versions) < 2 || versions[len(versions)-1] != final {
		t.Fatalf("the worker's evaluator recorded versions %v, want several up to the final %d", versions, final)
	}
	if len(w1.logLines("evaluation done")) < len(versions) {
		t.Fatalf("the worker logged fewer evaluations than metrics.jsonl has")
	}
	t.Logf("the worker's evaluator recorded versions %v in metrics.jsonl", versions)
}
