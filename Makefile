# redisconn: the README's two commands are `make demo` and `make test`.
GO      ?= go
GOFLAGS ?=
PKGS    := ./...

.PHONY: all deps jaeger toxiproxy chaos demo demo-contrast test rules e2e generate bench-go lint vet fmt-check bench fuzz binsize clean

all: test

## demo: the main job: redis-server, Prometheus, the API, two workers and a load driver
## for DEMO_DURATION (30s), a summary, the before/after table, then everything stopped
## Jaeger is built first when missing (~9 min the first time, with progress); when that
## fails the demo runs without traces. DEMO_TRACES=0 skips Jaeger altogether.
demo: deps
	@traces="$(DEMO_TRACES)"; \
	if [ "$$traces" = 0 ]; then echo "jaeger: skipped (DEMO_TRACES=0)"; \
	elif ! ./scripts/jaeger.sh; then echo "jaeger: the build failed (see above); the demo goes on without traces"; traces=0; fi; \
	DEMO_TRACES=$$traces $(GO) run ./examples/demo

## demo-contrast: only the before/after comparison (one shared pool vs conn.Worker)
demo-contrast: deps
	$(GO) run ./examples/demo -contrast-only

## deps: install redis-server, redis-tools and prometheus from Debian's packages when missing,
## and Valkey 8 (valkey-server, valkey-tools, valkey-sentinel; bookworm-backports on bookworm)
deps:
	@./scripts/deps.sh

## jaeger: build Jaeger v2 (tools/go.mod) for the demo's and e2e's traces, once, with
## progress: ~9 min the first time on 2 cores, instant after (scripts/jaeger.sh)
jaeger:
	@./scripts/jaeger.sh

## toxiproxy: build the Toxiproxy server (v2.5.0, go install, outside go.mod) that
## internal/redistest's network-fault tests run, once: 20 s-2 min the first time (scripts/toxiproxy.sh)
toxiproxy:
	@./scripts/toxiproxy.sh

## test: deps and Toxiproxy, then format, vet, the Prometheus rules (promtool), the whole suite under the race
## detector, and the signal checks of the nested module (PromQL of dashboards and rules vs telemetry.Signals)
test: deps toxiproxy lint rules
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	cd internal/promqlcheck && $(GO) test -count=1 ./...

## test-valkey: the tests that talk to a server, against Valkey 8 (valkey-server from
## bookworm-backports, which `make deps` installs beside redis-server) instead of Redis:
## REDISTEST_SERVER=valkey makes internal/redistest start valkey-server for every
## standalone, TLS/ACL, Cluster and Sentinel server. It runs all of conn but the 60 s
## soak (TestSoak), internal/coalesce, and internal/redistest but the Toxiproxy tests.
## Not part of `make test`; about 2.5 min on 2 cores.
.PHONY: test-valkey
test-valkey: deps toxiproxy
	@command -v valkey-server >/dev/null 2>&1 || { echo "test-valkey: valkey-server is not installed; make deps could not install it (see above)" >&2; exit 1; }
	@valkey-server --version
	REDISTEST_SERVER=valkey $(GO) test -race -count=1 -p 1 -timeout 20m -skip '^TestSoak$$|Toxiproxy' ./conn/ ./internal/coalesce/ ./internal/redistest/

## chaos: the long version of the network-fault matrix: on a standalone server, a cluster and
## a Sentinel deployment, each client (Worker, API, plain go-redis) under CHAOS_FOR (60s) of random
## faults through Toxiproxy, then the matrix's invariants (conn/chaos_test.go, build tag chaos); about 11 min
## on 2 cores. CHAOS_SEED replays a run's sequence (its seed is printed). CI runs it.
CHAOS_FOR  ?= 60s
CHAOS_SEED ?=
chaos: deps toxiproxy
	REDISCONN_CHAOS_FOR=$(CHAOS_FOR) REDISCONN_CHAOS_SEED=$(CHAOS_SEED) $(GO) test -race -tags chaos -count=1 -timeout 40m -v -run '^TestNetFaultsChaos$$' ./conn/

## rules: promtool checks the rule file and runs its unit tests
rules:
	promtool check rules alerts/redisconn.rules.yml
	cd alerts && promtool test rules redisconn.rules.test.yml

## e2e: the dashboards and alert rules against a real Prometheus, the alerts' lead time on ramps to
## exhaustion (about 12 min: e2e/ramps_test.go), no false alarm under the demo's load, and the traces
## of a run against a real Jaeger
e2e: deps jaeger toxiproxy
	$(GO) test -tags e2e -count=1 -timeout 40m -v ./e2e/

## generate: regenerate dashboards/redisconn.json from dashboards/dashboards.go and README's
## metrics table from telemetry.Signals
generate:
	$(GO) generate ./dashboards ./internal/signaldoc

## lint: gofmt and go vet
lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$out" ]; then echo "gofmt wants to change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./e2e/
	$(GO) vet -tags chaos ./conn/
	cd internal/promqlcheck && $(GO) vet ./...
	cd bench/redisotel && $(GO) vet ./...

## bench: the benchmark program: scenarios S1-S4 side by side in rounds, a table with
## ratios and targets, JSON in bench-results.json (BENCH_QUICK=1: under a minute)
bench: deps
	$(GO) run ./bench

## bench-go: the Go micro-benchmarks (batch encoding, telemetry cost per operation and per coalesced
## round trip), and the span hook against redisotel's (bench/redisotel, a module of its own: redisotel stays out of go.mod)
SPANHOOK_COUNT ?= 5
bench-go: deps
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./conn/ ./telemetry/ ./internal/instrument/
	cd bench/redisotel && $(GO) test -run '^$$' -bench . -benchmem -count $(SPANHOOK_COUNT) ./...

## fuzz: run each fuzz target for FUZZTIME (default 30s); `make test` runs their seed corpus
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzLoadConfig -fuzztime $(FUZZTIME) ./conn/

## binsize: a minimal program on conn next to the same program on plain go-redis (default go build)
binsize:
	@./scripts/binsize.sh

clean:
	$(GO) clean -testcache
