# kubekeep — see README.md. Two commands matter: `make demo` and `make test`.
GO        ?= go
BIN       ?= bin/kubekeep
CORE      ?= bin/kubekeep-core
PREFIX    ?= /usr/local
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 15s
PKGS      := ./...

.PHONY: all build test vet fmt-check demo bench fuzz install deps clean

all: build

# Tools tests run, as command:Debian-package: promtool checks the monitoring
# examples (examples/prometheus-rules*.yaml, the dashboard's queries); tmux
# and rclone drive CLI tests. Installed with apt only when missing and we are
# root with apt-get; otherwise a warning names the package (the tests that need
# it then fail saying `make deps`).
APT_TOOLS := promtool:prometheus tmux:tmux rclone:rclone

deps:
	@missing=; for t in $(APT_TOOLS); do \
		command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing with apt:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing || \
			{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; \
		else echo "warning: missing tools, install the Debian packages:$$missing"; fi; \
	fi
	$(GO) mod download
	cd internal/etcd35 && $(GO) mod download
	cd internal/versitygw && $(GO) mod download
	cd internal/k8s134 && $(GO) mod download && cd ../kubenode/etcd36 && $(GO) mod download

build: deps
	# kubekeep is the front (get, objects, diff, versions in milliseconds),
	# kubekeep-core beside it the whole CLI, which the front hands every
	# other command to (README: "Two binaries").
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -tags kubekeep_front -o $(BIN) ./cmd/kubekeep
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(CORE) ./cmd/kubekeep
	# Demo and test tools, not installed on a master.
	$(GO) build -trimpath -o bin/ ./cmd/kubekeep-sandbox ./cmd/kubekeep-ecsfake

vet:
	$(GO) vet $(PKGS)
	@# The front build's own files (its tests are the core's).
	$(GO) vet -tags kubekeep_front $$($(GO) list -tags kubekeep_front -f '{{range .GoFiles}}{{$$.Dir}}/{{.}} {{end}}' ./cmd/kubekeep)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Every test, with the race detector. Tests that need root (loop-mounted
# filesystems) skip with a message when not root.
test: deps vet fmt-check
	$(GO) test -race -timeout 20m $(PKGS)

# The main job end to end on a sandbox: a kubeadm-like root with real PKI and
# a real embedded etcd, a store directory, and kubekeep run against them.
demo: build
	./scripts/demo.sh

# Speed goals, each measured against the tool an operator would use instead.
bench: build
	./scripts/bench.sh

# A short run of every fuzz target (FUZZTIME each).
fuzz: deps
	./scripts/fuzz.sh $(FUZZTIME)

install: build
	install -D -m 0755 $(CORE) $(DESTDIR)$(PREFIX)/bin/kubekeep-core
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/kubekeep
	install -D -m 0644 examples/kubekeep.service $(DESTDIR)/etc/systemd/system/kubekeep.service
	install -d -m 0700 $(DESTDIR)/etc/kubekeep
	@if [ ! -e $(DESTDIR)/etc/kubekeep/kubekeep.yaml ]; then \
		install -m 0600 examples/kubeadm.yaml $(DESTDIR)/etc/kubekeep/kubekeep.yaml; \
		echo "installed /etc/kubekeep/kubekeep.yaml: set store.path and store.mountpoint"; \
	else echo "kept existing /etc/kubekeep/kubekeep.yaml"; fi
	@echo "then: systemctl daemon-reload && systemctl enable --now kubekeep"

clean:
	rm -rf bin
