#!/usr/bin/env bash
# demo-cluster.sh: the PPO stage of the addition demo (configs/ppo-cluster.yaml,
# which is configs/ppo.yaml with its generators on worker processes) across
# 4 processes on 127.0.0.1: a NATS server (`troupe nats`, the nats-server Go
# module troupe embeds), the learner (`troupe run`) and 2 generator workers
# (`troupe worker`). `make demo-cluster` runs it after `make demo`.
#
# Rollout tokens/s with 1 worker process versus 2, in one run: the learner
# starts with worker 1 only; once JOIN_AFTER iterations are recorded, worker 2
# starts and joins the running learner. The script then prints the rollout
# tokens/s (tokens sampled / seconds the learner waited for rollouts) over the
# iterations with 1 worker (from the 2nd: the 1st includes joining and warm-up)
# and over those after worker 2 joined (from the 2nd after its join).
#
# Every process it started is stopped on exit, on Ctrl-C and on error.
# Logs: runs/ppo-cluster.logs/{nats,learner,worker-1,worker-2}.log.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-bin/troupe}
CONFIG=configs/ppo-cluster.yaml
RUN_DIR=runs/ppo-cluster
LOGS=runs/ppo-cluster.logs
NATS_PORT=4322                  # nats.url in $CONFIG
HEALTH_PORTS=(7701 7702)        # cluster.members in $CONFIG
JOIN_AFTER=${JOIN_AFTER:-15}    # iterations with 1 worker before worker 2 starts

die() { echo "demo-cluster: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "$BIN not built: run make build"
for d in runs/sft runs/rm; do
	[ -d "$d/checkpoints" ] || die "$d has no checkpoints: run \`make demo\` first (it trains the SFT policy and the reward model this PPO run starts from)"
done
for p in "$NATS_PORT" "${HEALTH_PORTS[@]}"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		die "port $p on 127.0.0.1 is in use ($CONFIG uses $NATS_PORT for NATS and ${HEALTH_PORTS[*]} for the workers)"
	fi
done

# One login for every process; never written to the run directory or logged.
if [ -z "${TROUPE_NATS_PASSWORD:-}" ]; then
	TROUPE_NATS_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi
export TROUPE_NATS_PASSWORD

rm -rf "$RUN_DIR" "$LOGS"
mkdir -p "$LOGS"
STORE=$(mktemp -d "${TMPDIR:-/tmp}/troupe-nats-XXXXXX")

PIDS=()
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 100); do # up to 10 s each, then kill -9
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$STORE"
	exit "$status"
}
trap cleanup EXIT
trap 'echo "demo-cluster: interrupted" >&2; exit 130' INT TERM

# start NAME CMD...: runs CMD in the background, its output in $LOGS/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$LOGS/$name.log" 2>&1 &
	PIDS+=($!)
	echo "started $name (pid $!): $*"
}

# wait_log NAME TEXT SECONDS: waits until NAME's log has TEXT.
wait_log() {
	local name=$1 text=$2 secs=$3
	for _ in $(seq $((secs * 10))); do
		grep -qs "$text" "$LOGS/$name.log" && return 0
		sleep 0.1
	done
	tail -20 "$LOGS/$name.log" >&2
	die "$name: no \"$text\" after ${secs}s (log: $LOGS/$name.log)"
}

# iterations: the iterations recorded in the run's metrics.jsonl so far.
iterations() {
	[ -f "$RUN_DIR/metrics.jsonl" ] || { echo 0; return; }
	grep -c '^{"step":' "$RUN_DIR/metrics.jsonl" || true
}

start nats "$BIN" nats --port "$NATS_PORT" --store "$STORE" --user troupe
wait_log nats "nats server ready" 30
start worker-1 "$BIN" worker --config "$CONFIG" --roles generator --health-port "${HEALTH_PORTS[0]}" --threads 1
wait_log worker-1 "worker serving" 120
start learner "$BIN" run "$CONFIG"
LEARNER=${PIDS[-1]}

# Worker 2 joins after JOIN_AFTER iterations.
while [ "$(iterations)" -lt "$JOIN_AFTER" ]; do
	kill -0 "$LEARNER" 2>/dev/null || break
	sleep 0.2
done
ONE_WORKER=$(iterations)
if kill -0 "$LEARNER" 2>/dev/null; then
	start worker-2 "$BIN" worker --config "$CONFIG" --roles generator --health-port "${HEALTH_PORTS[1]}" --threads 1
	# The learner greets it at its next membership poll (every 2 s).
	for _ in $(seq 1200); do
		[ "$(grep -cs 'worker joined: its actors take work' "$LOGS/learner.log" || true)" -ge 2 ] && break
		kill -0 "$LEARNER" 2>/dev/null || break
		sleep 0.1
	done
fi
JOINED=$(iterations)
echo "worker 2 started after iteration $ONE_WORKER and joined by iteration $JOINED"

status=0
wait "$LEARNER" || status=$?
[ "$status" -eq 0 ] || { tail -30 "$LOGS/learner.log" >&2; die "the learner failed (exit $status); log: $LOGS/learner.log"; }
grep -v '^{' "$LOGS/learner.log" || true # the learner's report (its log lines are JSON)
echo

# Rollout tokens/s per phase: the sum of rollout_tokens over the sum of
# generate_seconds (the learner's wait for the iteration's rollouts).
awk -v one="$ONE_WORKER" -v joined="$JOINED" '
function num(key,   m) {
	if (match($0, "\"" key "\":[-0-9.eE+]+")) {
		m = substr($0, RSTART, RLENGTH); sub(/^"[^"]*":/, "", m); return m + 0
	}
	return -1
}
/^\{"step":/ {
	step = num("step"); tok = num("rollout_tokens"); sec = num("generate_seconds")
	if (tok < 0 || sec <= 0) next
	if (step >= 2 && step <= one) { t1 += tok; s1 += sec; n1++ }
	if (step >= joined + 2) { t2 += tok; s2 += sec; n2++ }
}
END {
	if (n1 == 0 || n2 == 0) {
		printf "not enough iterations to compare (%d with 1 worker, %d with 2); set JOIN_AFTER lower\n", n1, n2
		exit 1
	}
	r1 = t1 / s1; r2 = t2 / s2
	printf "rollout tokens/s with 1 worker process:  %8.0f  (iterations 2-%d: %d tokens in %.2f s)\n", r1, one, t1, s1
	printf "rollout tokens/s with 2 worker processes: %8.0f  (iterations %d-: %d tokens in %.2f s)\n", r2, joined + 2, t2, s2
	printf "2 workers / 1 worker: %.2fx\n", r2 / r1
}' "$RUN_DIR/metrics.jsonl"
