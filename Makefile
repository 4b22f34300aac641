# troupe: `make demo` runs the main job on the embedded defaults, `make test` the suite.
# Both install what they need first (Go modules; OpenBLAS through apt-get for the cgo
# matmul binding; a pure-Go path builds with CGO_ENABLED=0).

GO      ?= go
BIN     := bin/troupe
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test vet bench bench-deps data demo clean

all: build

# deps installs the Debian packages the build and the data need when they are
# missing (OpenBLAS for the cgo matmul, WordNet for the SFT/RM datasets), and the
# Go modules.
APT_PKGS := $(shell [ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || echo libopenblas-dev) \
            $(shell [ -e /usr/share/wordnet/data.noun ] || echo wordnet-base)
deps:
	@if [ -n "$(strip $(APT_PKGS))" ]; then \
		echo "installing $(strip $(APT_PKGS)) with apt-get"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi
	$(GO) mod download

build: deps
	$(GO) build -o $(BIN) ./cmd/troupe

vet:
	$(GO) vet ./...

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

clean:
	rm -rf bin

# data: the files the example configs (configs/*.yaml) train on, made once:
# a 512-id BPE trained on the King James Bible, 2-digit addition (SFT, preference
# pairs with 4 wrong answers per problem, RL prompts) and WordNet definitions.
data: build
	@[ -f data/kjv-bpe512/vocab.json ] || $(BIN) train-tokenizer --input data/kjv.txt --vocab-size 512 --out data/kjv-bpe512
	@[ -f data/addition/pref_train.jsonl ] || $(BIN) data addition --digits 2 --train 2000 --val 500 --pairs 4 --out data/addition
	@[ -f data/wordnet/pref_train.jsonl ] || $(BIN) data wordnet --words 1000 --out data/wordnet

# demo: pretrain -> SFT -> reward model -> PPO on the embedded defaults (configs/),
# about 17 minutes on 2 cores. It starts runs/pretrain, runs/sft, runs/rm and
# runs/ppo afresh; the PPO run prints the SFT and the PPO policy side by side.
demo: data
	rm -rf runs/pretrain runs/sft runs/rm runs/ppo
	$(BIN) run configs/pretrain.yaml
	$(BIN) run configs/sft.yaml
	$(BIN) run configs/rm.yaml
	$(BIN) run configs/ppo.yaml
	@echo "plots: runs/pretrain/plots runs/sft/plots runs/rm/plots runs/ppo/plots (PNG and SVG); metrics: runs/*/metrics.jsonl"

# bench: every figure of issue 6 in one run (11-20 minutes on 2 cores), as JSON
# lines in runs/bench/bench.jsonl (every run also appended to runs/bench/history.jsonl)
# and a table (runs/bench/table.md, also printed):
# the FP32 FMA peak (1 and 2 threads); train / generate / score tokens/s for tiny,
# small and gpt2 (5 runs each of tiny and small, 3 of gpt2, whose run of 3 steps takes
# ~2 minutes, most of it PyTorch's; medians) beside the PyTorch reference, with model
# GFLOP/s as a fraction of the peak; a 124M-parameter weight broadcast to 4
# subscribers; peak RSS of gpt2 training (B4 T256) beside its lower bound; rollout
# tokens/s with 1 and 2 generator actors; train and generate cost at T = 128..1024.
# The machine should be otherwise idle: ratios are measured side by side, but a
# loaded machine still skews them. A quicker subset:
# make bench BENCH_FLAGS="--config tiny,small --repeats 1"
# The PyTorch reference is Debian's python3-torch, installed with apt-get when
# missing (a few hundred MB); TORCH=off skips it and reports troupe alone.
BENCH_FLAGS ?= --config tiny,small,gpt2 --repeats 5 --gpt2-repeats 3 --gpt2-steps 3 --peak \
               --with-broadcast 124439808 --memory gpt2 --scaling rollout,seq --rollout-iters 4
TORCH ?= auto
bench: build bench-deps
	$(BIN) bench $(BENCH_FLAGS) --torch $(TORCH) --out runs/bench

bench-deps:
	@if [ "$(TORCH)" != off ] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then \
		echo "installing python3-torch (the PyTorch reference) with apt-get; TORCH=off skips it"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-torch python3-numpy >/dev/null; \
	fi

# test-cuda: the CUDA backend's tests (every op against the CPU reference, the
# model's log-probs, training steps and generation against the CPU model) on a
# machine with an NVIDIA GPU, CUDA (headers, cuBLAS, NVRTC) and Go. The include
# path kernels/cuda/cu13shim adapts gorgonia.org/cu v0.9.6 to CUDA 13's driver
# API (a no-op before 13). Without OpenBLAS headers the CPU side builds pure Go.
CUDA_TAGS := cuda$(shell [ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || echo ,purego)
CUDA_ENV  := CGO_CFLAGS="-I$(CURDIR)/kernels/cuda/cu13shim -I/usr/local/cuda/include $$CGO_CFLAGS" \
             CGO_LDFLAGS="-L/usr/local/cuda/lib64 $$CGO_LDFLAGS"
.PHONY: test-cuda
test-cuda:
	$(CUDA_ENV) $(GO) test -tags $(CUDA_TAGS) -count=1 -run CUDA -v ./kernels

# fuzz: every fuzz target for FUZZTIME past its seeds (`make test` runs only
# the seeds: f.Add and testdata/fuzz/). A failure is written to the package's
# testdata/fuzz/<target>/; commit it with the fix so that it stays a test.
# A short -fuzzminimizetime keeps slow targets from stalling on minimisation.
FUZZTIME ?= 10s
FUZZ_TARGETS := policy:FuzzReadSafetensors policy:FuzzLoadCheckpoint \
                policy/tokenizer:FuzzEncodeDecode policy/tokenizer:FuzzLoadTokenizer \
                actors:FuzzParseRunConfig reward:FuzzLoad \
                learner:FuzzLoadSFTData learner:FuzzLoadPrefData learner:FuzzLoadPrompts learner:FuzzLoadTextData
.PHONY: fuzz
fuzz: deps
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "== $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./$$pkg; \
	done

# check-long: the multi-process cluster runs on 127.0.0.x (issue 5): a NATS
# server process, a learner (`troupe run`) and generator workers (`troupe
# worker`), each its own process, complete PPO runs; a worker killed -9
# mid-rollout, the NATS server restarted, the learner killed -9 and resumed;
# rollout tokens/s with 1 and 2 worker processes printed. About 2 minutes
# on 2 cores. `make test` runs these too (they skip only with -short).
.PHONY: check-long
check-long: deps
	$(GO) test -count=1 -timeout 20m -v -run 'TestCluster|TestRLWorkersInCluster|TestWorkerRefusesOtherRun' ./cmd/troupe ./actors

# demo-cluster: the PPO stage of `make demo` (configs/ppo-cluster.yaml: the
# settings of configs/ppo.yaml, its generators on workers) across processes
# on 127.0.0.1: a NATS server (`troupe nats`), the learner (`troupe run`) and
# 2 generator workers (`troupe worker`). Worker 2 joins the running learner
# after 15 iterations (JOIN_AFTER=N to change); the rollout tokens/s with 1
# and with 2 worker processes are printed. Needs runs/sft and runs/rm (`make
# demo`); about 2 minutes on 2 cores; every process is stopped on exit or
# Ctrl-C. Logs in runs/ppo-cluster.logs/.
.PHONY: demo-cluster
demo-cluster: data
	BIN=$(BIN) scripts/demo-cluster.sh
