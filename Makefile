# AIDA: common tasks. `make help` lists them.

CARGO ?= cargo
ORCHESTRATOR_ADDR ?= 127.0.0.1:50051

.PHONY: help dev build build-cli proto test test-deps lint fmt test-grpc clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

dev: ## run gateway, orchestrator, 2 workers and aggregator in one process (SQLite, no Redis needed)
	$(CARGO) run --release -p aida -- dev

build: ## build every binary (release)
	$(CARGO) build --release --workspace --bins

build-cli: ## build the aida CLI into target/release/aida
	$(CARGO) build --release -p aida

proto: ## regenerate the gRPC code from proto/ (pure Rust: protox, no protoc needed)
	$(CARGO) build -p aida-proto

test-deps: ## install what the tests talk to: git, redis-server, grpcurl (only what is missing)
	./scripts/install-test-deps.sh

test: test-deps ## run every test: unit tests and end-to-end tests with the real binaries
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

lint: ## formatting and clippy, as CI checks them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

test-grpc: ## list the orchestrator's services with grpcurl (ORCHESTRATOR_ADDR=host:port)
	grpcurl -plaintext $(ORCHESTRATOR_ADDR) list
	grpcurl -plaintext -d '{"service": "aida.orchestrator.Orchestrator"}' $(ORCHESTRATOR_ADDR) grpc.health.v1.Health/Check

clean: ## remove build output and the dev database
	$(CARGO) clean
	rm -rf data
