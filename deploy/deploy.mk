# deploy/deploy.mk: `make install` and `make deb` for weft.
#
# Included from the top-level Makefile (`include deploy/deploy.mk`), whose
# directory must be the repository root. It relies on:
#   build     a target that produces $(WEFT_BIN) (default bin/weft)
#   VERSION   the version string, e.g. from `git describe --tags` (a default is
#             set below if the including Makefile has none)
# It defines the targets install, uninstall, deb, deb-check, deb-version and
# nfpm-tool, and neither all, test, build, demo nor bench. Including it does not change the
# including Makefile's default goal.
#
#   make build && sudo make install                   # PREFIX=/usr/local
#   sudo make install PREFIX=/usr DESTDIR=/tmp/stage  # staged install
#   make deb                                          # dist/weft_<version>_<arch>.deb

_weft_saved_default_goal := $(.DEFAULT_GOAL)

# Directory of this file, whatever directory make runs in.
WEFT_DEPLOY_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

WEFT_BIN ?= bin/weft

# --- install -----------------------------------------------------------------

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
# systemd looks for units in /usr/local/lib/systemd/system and /usr/lib/systemd/system.
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
# The configuration stays in /etc for every PREFIX (the unit reads it there).
SYSCONFDIR ?= /etc
# weft is also a CNI plugin: a symlink "weft" in the upstream and Debian CNI
# plugin directories, for every PREFIX (runtimes look there).
CNI_BIN_DIRS ?= /opt/cni/bin /usr/lib/cni
INSTALL ?= install

.PHONY: install uninstall
install:
	@test -x '$(WEFT_BIN)' || { echo "deploy.mk: $(WEFT_BIN) is missing: run 'make build' first (as the user that has Go)" >&2; exit 1; }
	$(INSTALL) -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(SYSTEMD_UNIT_DIR)' '$(DESTDIR)$(SYSCONFDIR)/weft' \
		'$(DESTDIR)$(DATADIR)/weft/grafana' '$(DESTDIR)$(DATADIR)/doc/weft/examples/weft.service.d'
	$(INSTALL) -m 0755 '$(WEFT_BIN)' '$(DESTDIR)$(BINDIR)/weft'
	for d in $(CNI_BIN_DIRS); do \
		$(INSTALL) -d "$(DESTDIR)$$d" && ln -sfn '$(BINDIR)/weft' "$(DESTDIR)$$d/weft" || exit 1; \
	done
	sed -e 's#/usr/bin/weft#$(BINDIR)/weft#g' -e 's#/etc/weft/#$(SYSCONFDIR)/weft/#g' \
		'$(WEFT_DEPLOY_DIR)/systemd/weft.service' > '$(DESTDIR)$(SYSTEMD_UNIT_DIR)/weft.service.tmp'
	chmod 0644 '$(DESTDIR)$(SYSTEMD_UNIT_DIR)/weft.service.tmp'
	mv -f '$(DESTDIR)$(SYSTEMD_UNIT_DIR)/weft.service.tmp' '$(DESTDIR)$(SYSTEMD_UNIT_DIR)/weft.service'
	@if [ -e '$(DESTDIR)$(SYSCONFDIR)/weft/weft.yaml' ]; then \
		echo "deploy.mk: keeping existing $(DESTDIR)$(SYSCONFDIR)/weft/weft.yaml"; \
	else \
		echo "$(INSTALL) -m 0644 $(WEFT_DEPLOY_DIR)/weft.yaml $(DESTDIR)$(SYSCONFDIR)/weft/weft.yaml"; \
		$(INSTALL) -m 0644 '$(WEFT_DEPLOY_DIR)/weft.yaml' '$(DESTDIR)$(SYSCONFDIR)/weft/weft.yaml'; \
	fi
	$(INSTALL) -m 0644 '$(WEFT_DEPLOY_DIR)/grafana/weft-dashboard.json' '$(DESTDIR)$(DATADIR)/weft/grafana/weft-dashboard.json'
	$(INSTALL) -m 0644 '$(WEFT_DEPLOY_DIR)/README.md' '$(DESTDIR)$(DATADIR)/doc/weft/README.md'
	$(INSTALL) -m 0644 '$(WEFT_DEPLOY_DIR)/weft.yaml' '$(WEFT_DEPLOY_DIR)/prometheus/prometheus.yml' \
		'$(WEFT_DEPLOY_DIR)/sysctl/60-weft.conf' '$(DESTDIR)$(DATADIR)/doc/weft/examples/'
	$(INSTALL) -m 0644 '$(WEFT_DEPLOY_DIR)/systemd/nonroot.conf' '$(DESTDIR)$(DATADIR)/doc/weft/examples/weft.service.d/nonroot.conf'
	@if [ -z '$(DESTDIR)' ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
	@echo "deploy.mk: installed. Edit $(SYSCONFDIR)/weft/weft.yaml, then: systemctl enable --now weft"

# Leaves $(SYSCONFDIR)/weft/weft.yaml and /var/lib/weft alone, and a CNI
# plugin "weft" that is not our symlink.
uninstall:
	rm -f '$(DESTDIR)$(BINDIR)/weft' '$(DESTDIR)$(SYSTEMD_UNIT_DIR)/weft.service' \
		'$(DESTDIR)$(DATADIR)/weft/grafana/weft-dashboard.json'
	for d in $(CNI_BIN_DIRS); do \
		if [ "$$(readlink "$(DESTDIR)$$d/weft")" = '$(BINDIR)/weft' ]; then rm -f "$(DESTDIR)$$d/weft"; fi; \
	done
	rm -rf '$(DESTDIR)$(DATADIR)/doc/weft'
	-rmdir '$(DESTDIR)$(DATADIR)/weft/grafana' '$(DESTDIR)$(DATADIR)/weft' 2>/dev/null
	@if [ -z '$(DESTDIR)' ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi

# --- deb ---------------------------------------------------------------------

# The newest nfpm whose dependencies all resolve through the Go module proxy
# (v2.46.0 and later need go.digitalxero.dev modules the proxy refuses).
NFPM_VERSION ?= v2.45.2
TOOLS_BIN ?= $(CURDIR)/bin/tools
NFPM ?= $(TOOLS_BIN)/nfpm
GO ?= go
DIST ?= dist
DEB_ARCH ?= $(shell $(GO) env GOARCH)
WEFT_MAINTAINER ?= weft maintainers <weft@weftnet.invalid>

# Debian version from VERSION: drop a leading v; git describe's -N-gHASH
# becomes +N.gHASH (sorts after the tag); -dirty becomes +dirty; a
# pre-release -rc.1 becomes ~rc.1 (sorts before the release); anything that
# is not a dotted version (a bare commit hash, "dev") becomes 0.0.0~<it>.
DEB_VERSION ?= $(shell printf '%s\n' '$(VERSION)' | sed -E \
	-e 's/^v([0-9])/\1/' \
	-e 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/' \
	-e 's/-dirty$$/+dirty/' \
	-e 's/-/~/g' \
	-e 's/[^A-Za-z0-9.+~]/./g' \
	-e '/^[0-9]+\.[0-9]+/!s/^/0.0.0~/')
WEFT_DEB ?= $(DIST)/weft_$(DEB_VERSION)_$(DEB_ARCH).deb

.PHONY: deb deb-check deb-version nfpm-tool
deb: build nfpm-tool
	@test -x '$(WEFT_BIN)' || { echo "deploy.mk: $(WEFT_BIN) is missing after 'make build'" >&2; exit 1; }
	@test '$(WEFT_BIN)' = bin/weft || { echo "deploy.mk: deploy/nfpm.yaml packages ./bin/weft; WEFT_BIN=$(WEFT_BIN) is not supported by deb" >&2; exit 1; }
	mkdir -p '$(DIST)'
	WEFT_VERSION='$(DEB_VERSION)' WEFT_ARCH='$(DEB_ARCH)' WEFT_MAINTAINER='$(WEFT_MAINTAINER)' \
		'$(NFPM)' package --config '$(WEFT_DEPLOY_DIR)/nfpm.yaml' --packager deb --target '$(WEFT_DEB)'
	@echo "deploy.mk: built $(WEFT_DEB)"

# Builds the package and checks its contents (TestDebPackage in deploy/).
deb-check: deb
	WEFT_DEB='$(abspath $(WEFT_DEB))' $(GO) test -count=1 -run '^TestDebPackage$$' -v ./$(WEFT_DEPLOY_DIR)

deb-version:
	@echo '$(DEB_VERSION)'

# Installs the pinned nfpm into $(TOOLS_BIN) unless that exact version is there.
nfpm-tool:
	@if $(GO) version -m '$(NFPM)' 2>/dev/null | grep -Eq '^[[:space:]]+mod[[:space:]]+github.com/goreleaser/nfpm/v2[[:space:]]+$(NFPM_VERSION)[[:space:]]'; then \
		:; \
	else \
		echo "GOBIN=$(TOOLS_BIN) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)"; \
		GOBIN='$(TOOLS_BIN)' GOFLAGS= $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION); \
	fi

.DEFAULT_GOAL := $(_weft_saved_default_goal)
