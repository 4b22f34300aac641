# troupe: `make demo` runs the main job on the embedded defaults, `make test` the suite.
# Both install what they need first (Go modules; OpenBLAS through apt-get for the cgo
# matmul binding; a pure-Go path builds with CGO_ENABLED=0).

GO      ?= go
BIN     := bin/troupe
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test test-short vet bench demo clean check-long

all: build

# deps installs OpenBLAS (Debian libopenblas-dev) when it is missing, and the Go modules.
deps:
	@if ! [ -e /usr/include/x86_64-linux-gnu/cblas.h ] && ! [ -e /usr/include/cblas.h ] && ! ls /usr/include/*/cblas*.h >/dev/null 2>&1; then \
		echo "installing libopenblas-dev (cgo matmul)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libopenblas-dev >/dev/null; \
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
