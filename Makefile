# inuse: see `make help`.
SHELL := bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/inuse-dev/inuse/internal/version.Version=$(VERSION)
# Privileged tests (real BPF, cgroups, runtimes) run when make runs as root.
PRIVILEGED := $(if $(filter 0,$(shell id -u)),INUSE_PRIVILEGED_TESTS=1,)
TEST_FLAGS ?= -count=1 -timeout 45m

.PHONY: help deps generate check-generated build test test-kernels demo bench lint

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install what is missing on a Debian machine (BPF toolchain, redis-server, busybox-static; as root also dockerd, runc and containerd 2.4.2 for the end-to-end tests)
	@scripts/deps.sh
	@if [ "$$(id -u)" = 0 ]; then scripts/runtimes.sh; fi

generate: deps ## regenerate the BPF objects (bpf2go, clang-19) and the syscall tables
	BPF2GO_CC=clang-19 BPF2GO_STRIP=llvm-strip-19 $(GO) generate ./bpf/... ./internal/syscalls/...

check-generated: generate ## regenerate and fail when a committed generated file differs
	@git diff --exit-code --stat -- bpf internal/syscalls || { echo "generated files are stale: run make generate and commit" >&2; exit 1; }

build: ## build bin/inuse-agent and bin/inuse (static, no clang needed)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

test: deps ## run every test; as root this includes the privileged ones
	$(PRIVILEGED) $(GO) test $(TEST_FLAGS) ./...

test-kernels: ## boot Debian's kernels (5.10 to 6.12, amd64 and arm64) in qemu and run the sensor's privileged tests in each (tests/kernels; KERNELS="6.1/arm64" picks some)
	@tests/kernels/run.sh $(KERNELS)

demo: deps build ## Redis, agent, inuse serve and a Debian container on this machine: the In Use report (DEMO_KEEP=1 leaves them running)
	@scripts/demo.sh

bench: deps build ## run the benchmarks: Go benchmarks and the bench/ harness (root)
	$(GO) test -run '^$$' -bench . -benchmem ./...
	@command -v bpftrace >/dev/null || { apt-get install -y -qq --no-install-recommends bpftrace >/dev/null; }
	$(GO) run ./bench/openclose
	$(GO) run ./bench/agentrss
	$(GO) run ./bench/funcprobe
	@command -v wrk >/dev/null || { apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
	$(GO) run ./bench/nginx

lint: ## golangci-lint (.golangci.yml: vet, staticcheck, import rules, slog, formatting) and go vet on arm64
	@scripts/lint.sh
