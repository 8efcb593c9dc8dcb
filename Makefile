# weft: make demo, make test (CI runs it as root), make bench.
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -X main.version=$(VERSION) -X main.buildRevision=$(REVISION)
TOOLS       := $(CURDIR)/bin/tools
STATICCHECK := $(TOOLS)/staticcheck
UNIT_PKGS    = $(shell $(GO) list ./... | grep -v -e /e2e -e /bench/)
# A count, not a duration: a -fuzztime duration can end a clean run with
# "context deadline exceeded" (seen in CI on FuzzDecodeVXLAN).
FUZZTIME    ?= 100000x

.PHONY: all build test lint unit fuzz-short e2e fuzz bench bench-go bench-gossip demo clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/weft ./cmd/weft

## test: everything CI checks: formatting, vet, staticcheck, unit tests (with
## the race detector, including the deployment checks), a short run of every
## fuzz target, end-to-end tests in network namespaces (root), and the Debian
## package's file list.
test: lint unit fuzz-short e2e deb-check

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)
	# Allocation counts need a build without -race (sync.Pool drops items there).
	$(GO) test -count=1 -run 'Allocate' ./encap ./router ./tun

# Each fuzz target for a short, bounded time (make fuzz: longer).
FUZZ_TARGETS = ./encap:FuzzDecodeUDP ./encap:FuzzDecodeVXLAN ./membership:FuzzMetaUnmarshal ./cmd/weft:FuzzConfig \
               ./tun:FuzzSplit ./tun:FuzzRoundTrip ./tun:FuzzCoalesce
fuzz-short:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

fuzz:
	$(MAKE) fuzz-short FUZZTIME=5m

e2e:
	$(GO) test -count=1 -v -timeout 15m ./e2e

## bench: iperf3 across namespace hosts, weft beside kernel VXLAN and raw veth (root).
bench:
	$(GO) run ./bench/netbench $(BENCH_FLAGS)

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./encap ./router ./tun

## bench-gossip: 200 gossip instances on loopback: convergence and failure detection.
bench-gossip:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./bench/gossipscale

## demo: three namespace hosts running weft; peer table, ping and iperf3 (root).
demo: build
	WEFT=bin/weft bash scripts/demo.sh

clean:
	rm -rf bin dist

# install, uninstall, deb, deb-check: see deploy/deploy.mk.
include deploy/deploy.mk
