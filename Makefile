# idempay: `make` (or `make help`) lists the targets with their one-line docs.
#
# Each target documents itself with a `## text` comment after its name;
# `help` prints them. Variables that tune a target are listed under help too
# and can be overridden on the command line: `make bench BENCHTIME=5s`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

GO ?= go

# Variables: override on the command line, e.g. `make test TEST_TIMEOUT=20m`.
TEST_TIMEOUT ?= 12m## go test -timeout for `test` (CI has 2 cores and the race detector)
BENCHTIME ?= 1s## go test -benchtime for the pkg/messages micro benchmarks `bench` runs first
PEERS_ARGS ?=## extra arguments for `bench/peers`, e.g. PEERS_ARGS='--systems idempay,river --runs 5' (cd internal/bench/peers && go run . --help)
BENCH_ARGS ?=## extra arguments for `bench` and `bench/short`, e.g. BENCH_ARGS='-rounds 5 -json bench.json' (go run ./cmd/bench --help)
SOAK_DURATION ?= 5m## how long `soak` runs its steady load
CHAOS_DURATION ?= 20s## how long the load and the faults of each chaos scenario last
CHAOS_RATE ?= 50## new commands a second in each chaos scenario
CHAOS_SHORT ?= 3s## CHAOS_DURATION when `test` runs the chaos suite (CI runs `test`)
CHAOS_MIN_COMMANDS ?= 10000## `chaos` fails if its scenarios sent fewer commands (a run too small proves nothing; 0 in `test`)
CHAOS_MIN_FAULTS ?= 50## `chaos` fails if its scenarios injected fewer faults (0 in `test`)
CHAOS_RUN ?= TestChaos## go test -run for `chaos`: one scenario is e.g. TestChaos/nats-kill (the size minimums then do not apply)
CHAOS_REPORT ?= $(or $(TMPDIR),/tmp)/idempay-chaos-report.md## where `chaos` writes its Markdown report
CHAOS_TIMEOUT ?= 40m## go test -timeout for `chaos`
SEED ?=## replay one seed of `explore`: make explore SEED=17 (every violation prints its own)
KEY ?=## with SEED: print that key's whole history after the replay (every violation prints its own)
SEEDS ?= 200## how many seeds `explore` plays (from seed 1)
KEYS ?= 100## keys of each seed of `explore`
EXPLORE_PARALLEL ?= 4## seeds `explore` plays at once
EXPLORE_REPORT ?= $(or $(TMPDIR),/tmp)/idempay-explore-report.md## where `explore` writes its Markdown report
FUZZ_TARGET ?= FuzzDecode## the fuzz test `fuzz` runs in ./pkg/messages
FUZZTIME ?= 30s## go test -fuzztime for `fuzz`
DEMO_ARGS ?=## extra arguments for `demo`
PROVIDER ?= sim## payment provider of `demo`: sim, or stripe (a stripe-mock it starts, or STRIPE_API_BASE with STRIPE_API_KEY; docs/stripe.md)

# `docker compose` (the v2 plugin) when present, else the standalone
# `docker-compose`, else nothing (require-compose then says what to
# install). Recursive (=) so it is only probed by targets that use it.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo 'docker compose'; elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)
COMPOSE_HINT := Docker Compose not found: neither `docker compose` (the v2 plugin) nor `docker-compose` runs here. Install the Compose plugin (Docker'"'"'s apt repository: sudo apt-get install -y docker-compose-plugin; Docker Desktop has it), or Debian'"'"'s standalone v1 (sudo apt-get install -y docker-compose; `up` needs v2 for --wait), or set COMPOSE to a command that works.

# Printed when redis-server is missing. The Go tests start their own Redis
# (internal/testenv runs redis-server on a free port) unless REDIS_URL is set.
REDIS_HINT := redis-server not found on PATH: install it (Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis) or set REDIS_URL to a running Redis.

.PHONY: help
help: ## Show this help (the default goal)
	@echo 'Usage: make [TARGET] [VAR=value ...]'
	@awk '/^##@ /{printf "\n%s:\n", substr($$0, 5); next} /^[a-zA-Z0-9_\/-]+:.*## /{printf "  %-15s %s\n", substr($$0, 1, index($$0, ":") - 1), substr($$0, index($$0, "## ") + 3)}' $(MAKEFILE_LIST)
	@printf '\nVariables:\n'
	@awk '/^[A-Z_]+ \?=.*##/{v = $$0; sub(/^[A-Z_]+ \?= */, "", v); i = index(v, "##"); printf "  %-15s %s (default: %s)\n", $$1, substr(v, i + 3), (i > 1 ? substr(v, 1, i - 1) : "none")}' $(MAKEFILE_LIST)

##@ Quick start

.PHONY: demo
demo: require-redis ## Run the whole system in one process on embedded defaults (go run ./cmd/demo)
	$(GO) run ./cmd/demo --provider $(PROVIDER) $(DEMO_ARGS)

# The packages that talk to NATS, re-run against a nats-server binary.
COMPAT_PKGS := ./pkg/processor ./pkg/client ./internal/load ./cmd/worker ./cmd/producer ./pkg/gateway ./cmd/gateway

.PHONY: test
test: require-redis ## Lint, then run every test with the race detector (starts its own NATS and Redis), the NATS-facing ones again on nats-server 2.9 if installed, and the chaos suite at CHAOS_SHORT a scenario (~2 min of it; ~10 min in all on 2 cores)
	@$(MAKE) --no-print-directory lint
	$(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 ./...
	@$(MAKE) --no-print-directory test/compat
	@$(MAKE) --no-print-directory chaos CHAOS_DURATION=$(CHAOS_SHORT) CHAOS_MIN_COMMANDS=0 CHAOS_MIN_FAULTS=0

##@ Development

.PHONY: test/compat
test/compat: require-redis ## Re-run the NATS-facing tests against the nats-server binary on PATH (Debian's is 2.9), if there is one
	@if ! bin=$$(command -v nats-server); then \
		echo 'test/compat: no nats-server binary on PATH, skipped (Debian/Ubuntu: apt-get install -y nats-server)'; exit 0; \
	fi; \
	echo "test/compat: $$($$bin --version) from $$bin"; \
	echo 'NATS_SERVER_BIN='"$$bin"' $(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 $(COMPAT_PKGS)'; \
	NATS_SERVER_BIN="$$bin" $(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 $(COMPAT_PKGS)

.PHONY: test/short
test/short: require-redis ## Run the tests in -short mode (skips the slow ones), with the race detector
	$(GO) test -race -short -timeout 5m -count=1 ./...

.PHONY: bench
bench: require-redis ## Benchmark idempay against the bare JetStream ceiling on its own servers (go run ./cmd/bench, ~2.5 min with its builds: 2m10s a run on 2026-12-03; last line throughput_ratio=), after the pkg/messages micro benchmarks
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem -count=1 ./pkg/messages/...
	$(GO) run ./cmd/bench $(BENCH_ARGS)

.PHONY: bench/gateway
bench/gateway: require-redis ## The gateway's overhead: end to end through pkg/client, then through the HTTP gateway, on the same servers and worker (go run ./cmd/bench gateway, 30 s to 1 min with its builds; last line gateway_ratio=)
	$(GO) run ./cmd/bench gateway $(BENCH_ARGS)

.PHONY: bench/short
bench/short: require-redis ## The CI-sized benchmark: every scenario with 1000 commands, one round, well under a minute (go run ./cmd/bench -short)
	$(GO) run ./cmd/bench -short $(BENCH_ARGS)

.PHONY: bench/peers
bench/peers: require-redis ## The same charge job on idempay, River (PostgreSQL), asynq, Watermill and the bare JetStream consumer, 3 runs each interleaved (a module of its own, internal/bench/peers: its first build downloads the peers; ~5 min; needs PostgreSQL, PEERS_PG; last lines idempay_over_fastest_guaranteed_peer=)
	cd internal/bench/peers && $(GO) run . $(PEERS_ARGS)

.PHONY: bench/peers/short
bench/peers/short: require-redis ## bench/peers with 2000 keys and one run: that every contender still builds and finishes (~1 min with its build)
	cd internal/bench/peers && $(GO) run . --count 2000 --runs 1 $(PEERS_ARGS)

.PHONY: soak
soak: require-redis ## Send commands end to end for SOAK_DURATION at half a quick peak, sampling the worker's RSS and goroutines and the servers' memory every 10s, then print the drift; SOAK_RESULT_TTL=24h runs at the production retention, SOAK_RESULTS_MAX_AGE=2m with RESULTS kept shorter
	SOAK_DURATION=$(SOAK_DURATION) $(GO) run ./cmd/bench soak

.PHONY: chaos
chaos: require-redis ## The chaos suite (build tag chaos): every scenario on fresh servers under its faults, audited, then the negative controls; prints the scenario x invariant report and writes it to CHAOS_REPORT (~7 min)
	CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_RATE=$(CHAOS_RATE) CHAOS_REPORT=$(CHAOS_REPORT) \
	CHAOS_MIN_COMMANDS=$(CHAOS_MIN_COMMANDS) CHAOS_MIN_FAULTS=$(CHAOS_MIN_FAULTS) \
	$(GO) test -race -tags chaos -run '$(CHAOS_RUN)' -timeout $(CHAOS_TIMEOUT) -count=1 -v ./cmd/worker

.PHONY: explore
explore: require-redis ## The fault explorer (docs/explore.md): SEEDS seeds x KEYS keys of provider faults, worker crashes and client re-sends against the real engine, each key checked against the provider's ledger; prints a line per seed and the report (~7 min; longer when commands are stranded); SEED=n replays one seed
	$(GO) run ./cmd/explore -seeds $(SEEDS) -keys $(KEYS) -parallel $(EXPLORE_PARALLEL) -report $(EXPLORE_REPORT) $(if $(SEED),-seed $(SEED)) $(if $(KEY),-key $(KEY))

CLUSTER_TIMEOUT ?= 30m## go test -timeout for `cluster`

.PHONY: cluster
cluster: require-redis ## Past one machine, long (IDEMPAY_CLUSTER_LONG=1, ~2 min: 1m46s in the run docs/scaling.md reports): the load on a Redis Cluster and a 3-node NATS cluster, stream leaders and Sentinel masters SIGKILLed; `test` runs short variants
	IDEMPAY_CLUSTER_LONG=1 $(GO) test -race -timeout $(CLUSTER_TIMEOUT) -count=1 -v -run 'Scale|Cluster|Sentinel|Failover|WaitReplicas' ./internal/load ./internal/testenv ./pkg/processor

.PHONY: fuzz
fuzz: ## Fuzz the wire decoder for FUZZTIME (go test -fuzz FuzzDecode ./pkg/messages)
	$(GO) test -run '^$$' -fuzz '^$(FUZZ_TARGET)$$' -fuzztime $(FUZZTIME) ./pkg/messages

GOLANGCI_LINT_VERSION := v2.15.0

.PHONY: lint
lint: ## Lint with golangci-lint v2.15.0 (.golangci.yaml; make lint/install installs it) if on PATH, else go vet
	@if command -v golangci-lint >/dev/null 2>&1; then \
		echo 'golangci-lint run ./...'; golangci-lint run ./...; \
	else \
		echo 'golangci-lint not on PATH (make lint/install, or https://golangci-lint.run); running go vet only'; \
		echo '$(GO) vet ./...'; $(GO) vet ./...; \
	fi

.PHONY: lint/install
lint/install: ## Install golangci-lint v2.15.0 into $(go env GOPATH)/bin from the Go module proxy (a few minutes)
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: tidy
tidy: ## Tidy go.mod and go.sum
	$(GO) mod tidy

# The version every binary prints with --version: git describe, or "dev".
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/idempay/idempay/internal/cli.Version=$(VERSION)

.PHONY: build
build: ## Build bin/worker, bin/producer, bin/gateway, bin/console, bin/explore, bin/demo and bin/bench, with VERSION stamped in (--version prints it); put bin/ on PATH, or go install ./cmd/...
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/worker ./cmd/producer ./cmd/gateway ./cmd/console ./cmd/explore ./cmd/demo ./cmd/bench

.PHONY: docs
docs: ## Regenerate docs/configuration.md from the programs' own flags (go run ./internal/cli/gendocs): run it after changing or merging flags
	$(GO) run ./internal/cli/gendocs

.PHONY: docs/check
docs/check: ## Fail if docs/configuration.md disagrees with the programs' flags (each program's TestRun_ConfigReference checks it too)
	$(GO) run ./internal/cli/gendocs -check

.PHONY: clean
clean: ## Remove bin/
	rm -rf bin/

##@ Docker Compose (needs a Docker engine; for humans, not CI)

.PHONY: env
env: ## Write .env (random NATS and Redis passwords) and .idempay/api-keys (tenant demo) for the stack, unless .env exists
	@sh deploy/make-env.sh

.PHONY: up
up: require-compose env ## Start NATS, Redis, 3 workers and the HTTP gateway (127.0.0.1:8080) in Docker, and wait until healthy
	VERSION=$(VERSION) $(COMPOSE) up --build --detach --wait
	@echo "checkout page: http://127.0.0.1:$${GATEWAY_PORT:-8080}/#api_key=$$(sed -n 's/^IDEMPAY_DEMO_API_KEY=//p' .env)"

.PHONY: load
load: require-compose ## Run the producer's load against the stack started by `up`
	$(COMPOSE) run --rm producer

.PHONY: down
down: require-compose ## Stop the stack (keeps the NATS and Redis volumes; add -v by hand to drop them)
	$(COMPOSE) down

.PHONY: compose-check
compose-check: require-compose ## Validate docker-compose.yml (docker compose config -q; no engine needed)
	$(COMPOSE) config -q

# Not documented targets: the ones that need Compose or a Redis server
# depend on them.
.PHONY: require-compose
require-compose:
	@if [ -z '$(COMPOSE)' ]; then echo '$(COMPOSE_HINT)' >&2; exit 1; fi


.PHONY: require-redis
require-redis:
	@if [ -z "$${REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1; then \
		echo '$(REDIS_HINT)' >&2; exit 1; \
	fi
