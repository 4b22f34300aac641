# troupe: `make demo` runs the main job on the embedded defaults, `make test` the suite.
# Both install what they need first (Go modules; OpenBLAS through apt-get for the cgo
# matmul binding; a pure-Go path builds with CGO_ENABLED=0).

GO      ?= go
BIN     := bin/troupe
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test test-short vet bench demo clean check-long

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

DEMO := runs/demo

# demo: train a BPE tokenizer on the shipped King James Bible, initialise a tiny GPT-2,
# score and sample with it, and benchmark it against PyTorch (when installed).
demo: build
	@mkdir -p $(DEMO)
	$(BIN) train-tokenizer --input data/kjv.txt --vocab-size 2048 --out $(DEMO)/tokenizer
	$(BIN) init-model --config tiny --tokenizer $(DEMO)/tokenizer --out $(DEMO)/model --seed 1
	echo '{"text": "In the beginning God created the heaven and the earth."}' | $(BIN) score --model $(DEMO)/model -
	$(BIN) generate --model $(DEMO)/model --prompt "In the beginning" --max-new-tokens 24 --temperature 0.8 --seed 1
	$(BIN) bench --config tiny --torch auto

# bench: troupe's tokens/s for tiny and small beside the PyTorch reference, 3 runs each.
bench: build
	$(BIN) bench --config tiny,small --repeats 3 --torch auto
