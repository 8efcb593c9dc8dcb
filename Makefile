# weft: make demo, make test (CI runs it as root), make bench.
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -X main.version=$(VERSION) -X main.buildRevision=$(REVISION)
TOOLS       := $(CURDIR)/bin/tools
STATICCHECK := $(TOOLS)/staticcheck
# The CNI end-to-end test's container runtime, at a pinned release.
CNITOOL_VERSION ?= v1.3.1
CNITOOL     := $(TOOLS)/cnitool
UNIT_PKGS    = $(shell $(GO) list ./... | grep -v -e /e2e -e /bench/)
# A count, not a duration: a -fuzztime duration can end a clean run with
# "context deadline exceeded" (seen in CI on FuzzDecodeVXLAN).
FUZZTIME    ?= 100000x

.PHONY: all build test lint unit fuzz-short e2e e2e-race fuzz bench bench-go bench-gossip demo clean FORCE

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
	@elf=$$(git ls-files -z 2>/dev/null | xargs -0 -r sh -c 'for f; do [ -f "$$f" ] && [ "$$(head -c4 "$$f" | od -An -tx1 | tr -d " ")" = 7f454c46 ] && echo "$$f"; done' sh); \
	  if [ -n "$$elf" ]; then echo "built binaries tracked in git (git rm --cached them):"; echo "$$elf"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)
	# Allocation counts need a build without -race (sync.Pool drops items there).
	$(GO) test -count=1 -run 'Allocate' ./encap ./router ./tun ./seal

# Each fuzz target for a short, bounded time (make fuzz: longer).
FUZZ_TARGETS = ./encap:FuzzDecodeUDP ./encap:FuzzDecodeVXLAN ./membership:FuzzMetaUnmarshal ./membership:FuzzDecodeLeaveIntent ./config:FuzzConfig \
               ./tun:FuzzSplit ./tun:FuzzRoundTrip ./tun:FuzzCoalesce \
               ./seal:FuzzOpen ./seal:FuzzHandshake \
               ./pki:FuzzParseCert ./pki:FuzzDecodeAddrBlocks
fuzz-short:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

fuzz:
	$(MAKE) fuzz-short FUZZTIME=5m

# The e2e tests run the daemon built normally: with -race (make e2e-race) the
# run took 335 s instead of 191 s on the shared 2-core machine, which would
# push make test past 10 minutes. Tests that assert no throughput and build
# namespaces of their own run in parallel (t.Parallel), four at a time.
e2e: $(CNITOOL)
	$(GO) test -count=1 -v -parallel 4 -timeout 15m ./e2e

e2e-race: $(CNITOOL)
	WEFT_E2E_RACE=1 $(GO) test -count=1 -v -parallel 4 -timeout 20m ./e2e

# Reinstalled unless that exact version is there.
$(CNITOOL): FORCE
	@if $(GO) version -m '$@' 2>/dev/null | grep -Eq '^[[:space:]]+mod[[:space:]]+github.com/containernetworking/cni[[:space:]]+$(CNITOOL_VERSION)[[:space:]]'; then :; else \
		echo "GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)"; \
		GOBIN='$(TOOLS)' GOFLAGS= $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION); fi

FORCE:

## bench: iperf3 across namespace hosts, weft beside kernel VXLAN and raw veth (root).
bench: $(TOOLS)/wireguard
	$(GO) run ./bench/netbench $(BENCH_FLAGS)

# wireguard-go, the encrypted path's baseline, at the module version weft's
# go.mod already pins for its TUN baseline; `wg` comes from wireguard-tools.
WIREGUARD_GO_VERSION := v0.0.0-20260522210424-ecfc5a8d5446
# (go install names it after the module: bin/tools/wireguard.)
$(TOOLS)/wireguard:
	GOBIN=$(TOOLS) $(GO) install golang.zx2c4.com/wireguard@$(WIREGUARD_GO_VERSION)
	@command -v wg >/dev/null || echo "bench: wg not found; the wireguard-go path needs it: apt-get install wireguard-tools" >&2

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./encap ./router ./tun ./seal

## bench-gossip: 200 gossip instances on loopback: convergence and failure detection.
bench-gossip:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./bench/gossipscale

## demo: three namespace hosts running weft; peer table, ping and iperf3 (root).
demo: build
	$(GO) run ./internal/cmd/demo -weft bin/weft

clean:
	rm -rf bin dist

# install, uninstall, deb, deb-check: see deploy/deploy.mk.
include deploy/deploy.mk
