# AIDA: common tasks. `make help` lists them.

CARGO ?= cargo
ORCHESTRATOR_ADDR ?= 127.0.0.1:50051

# The pod (deploy/podman/pod.yaml) and its images.
POD ?= aida-pod
POD_YAML ?= deploy/podman/pod.yaml
WORKER_IMAGE ?= localhost/aida-worker:latest
# Podman settings our CI machines need (runc, default ulimits); a normal
# machine needs none. test-pod uses them unless CONTAINERS_CONF is set.
POD_TEST_CONF ?= $(CURDIR)/tests/podman/containers.conf
NEED_PODMAN = @command -v podman >/dev/null 2>&1 || { echo "podman is missing: install it (Debian: scripts/install-podman.sh)" >&2; exit 1; }

.PHONY: help dev build build-cli proto test test-deps lint fmt test-grpc clean \
	build-images build-images-offline run stop clean-volumes scale-worker logs test-pod

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 22

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

test-grpc: ## list the orchestrator's services with grpcurl (make dev or the pod; ORCHESTRATOR_ADDR=host:port)
	grpcurl -plaintext $(ORCHESTRATOR_ADDR) list
	grpcurl -plaintext -d '{"service": "aida.orchestrator.Orchestrator"}' $(ORCHESTRATOR_ADDR) grpc.health.v1.Health/Check

clean: ## remove build output and the dev database
	$(CARGO) clean
	rm -rf data build

# ---- Podman: see README, "Run it in Podman" ----

build-images: ## build the four images from public images (Rust builder, Debian slim runtime)
	$(NEED_PODMAN)
	./scripts/build-images.sh registry

build-images-offline: ## build the images with no registry: host release binaries, debootstrap base, local Redis image
	$(NEED_PODMAN)
	CARGO="$(CARGO)" ./scripts/build-images.sh offline

run: ## play the pod (deploy/podman/pod.yaml): gateway on http://localhost:8080
	$(NEED_PODMAN)
	@for s in gateway orchestrator worker aggregator; do \
		podman image exists localhost/aida-$$s:latest || { echo "localhost/aida-$$s:latest is missing: make build-images (or build-images-offline)" >&2; exit 1; }; \
	done
	podman play kube $(POD_YAML)
	@command -v curl >/dev/null 2>&1 || { echo "no curl here: not waiting for http://localhost:8080/api/health"; exit 0; }; \
	echo "waiting for http://localhost:8080/api/health ..."; \
	for i in $$(seq 60); do curl -fs localhost:8080/api/health >/dev/null 2>&1 && { echo "aida-pod is ready"; exit 0; }; sleep 1; done; \
		echo "the gateway did not become healthy in 60 s: make logs" >&2; exit 1

stop: ## stop and remove the pod and its containers (added workers too); volumes stay
	$(NEED_PODMAN)
	podman play kube --down $(POD_YAML)
	@echo "volumes aida-repos and aida-data are kept; make clean-volumes removes them"

clean-volumes: ## remove the pod's volumes: the repositories (aida-repos) and the database (aida-data)
	$(NEED_PODMAN)
	podman volume rm --force aida-repos aida-data

scale-worker: ## add a worker to the running pod (WORKER_ID=worker-N, default the next free N)
	$(NEED_PODMAN)
	@podman pod exists $(POD) || { echo "no pod $(POD) is running: make run" >&2; exit 1; }
	@id="$(WORKER_ID)"; \
	if [ -z "$$id" ]; then n=3; while podman container exists $(POD)-worker-$$n; do n=$$((n + 1)); done; id=worker-$$n; fi; \
	set -x; podman run -d --pod $(POD) --name $(POD)-$$id --restart always \
		--memory 2g --cpus 1 --cap-drop ALL --security-opt no-new-privileges \
		-e WORKER_ID=$$id -e ORCHESTRATOR_ADDR=localhost:50051 \
		-v aida-repos:/workspace/repos $(WORKER_IMAGE)

logs: ## follow the pod's logs (SERVICE=gateway|orchestrator|worker-1|... for one container)
	$(NEED_PODMAN)
	@if [ -n "$(SERVICE)" ]; then podman logs -f $(POD)-$(SERVICE); else podman pod logs -f $(POD); fi

test-pod: ## end-to-end test of the pod: offline images, play kube, tasks over REST, grpcurl, a third worker, teardown
	@start=$$(date +%s); \
	export CONTAINERS_CONF="$${CONTAINERS_CONF:-$(POD_TEST_CONF)}"; \
	./scripts/install-podman.sh && ./scripts/install-test-deps.sh \
	&& CARGO="$(CARGO)" ./scripts/build-images.sh offline \
	&& $(CARGO) test -p aida-tests --test pod -- --ignored --nocapture; \
	rc=$$?; echo "test-pod: $$( [ $$rc -eq 0 ] && echo passed || echo FAILED ) in $$(( $$(date +%s) - start )) s"; exit $$rc
