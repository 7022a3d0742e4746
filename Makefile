# inuse: see `make help`.
SHELL := bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/inuse-dev/inuse/internal/version.Version=$(VERSION)
# Privileged tests (real BPF, cgroups, runtimes) run when make runs as root,
# and always in CI (CI=true), where one that cannot run fails.
PRIVILEGED := $(if $(or $(filter 0,$(shell id -u)),$(filter true,$(CI))),INUSE_PRIVILEGED_TESTS=1,)
TEST_FLAGS ?= -count=1 -timeout 45m

.PHONY: help deps generate check-generated build test test-k8s test-kernels bench-kernels demo bench lint fuzz

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

test: deps ## run every test; as root this includes the privileged ones (with CI=true, not being able to run them fails)
	@if [ "$$CI" = true ]; then scripts/ci-privileged.sh; fi
	$(PRIVILEGED) $(GO) test $(TEST_FLAGS) ./...

test-k8s: deps ## the single-node Kubernetes test (root): builds Kubernetes, etcd and helm into ~/.cache/inuse once (about 20 min cold), then runs tests/k8s
	@scripts/kubernetes.sh
	INUSE_PRIVILEGED_TESTS=1 INUSE_K8S_TESTS=1 $(GO) test $(TEST_FLAGS) ./tests/k8s/
test-kernels: ## boot Debian's kernels (5.10 to 6.12, amd64 and arm64) in qemu and run the sensor's privileged tests in each (tests/kernels; KERNELS="6.1/arm64" picks some)
	@tests/kernels/run.sh $(KERNELS)
bench-kernels: ## bench/openclose in a qemu VM of each kernel (tests/kernels; ratios against the untraced loop of the same VM; INUSE_KERNELS_BENCH_ARGS="-variants cgroup_storage,hash_map" compares builds)
	@INUSE_KERNELS_BENCH=1 tests/kernels/run.sh $(KERNELS)

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

# Fuzz targets of the parsers of hostile input (issue 22), package:target.
FUZZ_TARGETS := ./internal/gosym:FuzzTable ./internal/gosym:FuzzBuildID ./api:FuzzDecodeReport ./bpf/sensor:FuzzDecode
FUZZTIME ?= 1m

fuzz: ## run each fuzz target for FUZZTIME (default 1m; CI: make fuzz FUZZTIME=10s)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

lint: ## golangci-lint (.golangci.yml: vet, staticcheck, import rules, slog, formatting) and go vet on arm64
	@scripts/lint.sh
