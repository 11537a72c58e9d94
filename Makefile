# AIDA: common tasks. `make help` lists them.

CARGO ?= cargo
ORCHESTRATOR_ADDR ?= 127.0.0.1:50051

# The pod (deploy/podman/pod.yaml) and its images.
POD ?= aida-pod
POD_YAML ?= deploy/podman/pod.yaml
WORKER_IMAGE ?= localhost/aida-worker:latest
# The pod's Podman secrets (created with random values by `make secrets`).
SECRETS = deploy/podman/secrets.sh
# make admin NAME=alice [ROLE=...]. NAME only from the command line: some
# systems (WSL) set NAME in the environment.
USER_NAME = $(if $(filter environment,$(origin NAME)),,$(NAME))
ROLE ?= admin
# Podman settings our CI machines need (runc, default ulimits); a normal
# machine needs none. test-pod uses them unless CONTAINERS_CONF is set.
POD_TEST_CONF ?= $(CURDIR)/tests/podman/containers.conf
NEED_PODMAN = @command -v podman >/dev/null 2>&1 || { echo "podman is missing: install it (Debian: scripts/install-podman.sh)" >&2; exit 1; }

.PHONY: help dev build build-cli proto test test-deps lint fmt test-grpc clean \
	build-images build-images-offline run stop clean-volumes scale-worker logs test-pod \
	secrets clean-secrets webhook-secrets git-credentials admin reset-password bench

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

# Where `make bench` collects every bench's headline rows for its one table.
BENCH_SUMMARY ?= $(CURDIR)/target/bench-summary.jsonl

bench: test-deps ## benchmarks, then one table of ratios against the peers in ../shared/bench (git, Celery) from the same run: end to end N=16/256/1,024 against plain git and idle memory, task intake against Celery, drain rate at 10 and 10,000 queued, SSE fan-out to 10,000 clients, a run's worktree on 50,000 files against git worktree add, a 100,000-line log to the dashboard and the TUI; in-process: event log, dispatch scan, verification bisection, trial merges
	$(CARGO) build --release --workspace --bins
	mkdir -p $(dir $(BENCH_SUMMARY)) && rm -f $(BENCH_SUMMARY)
	export AIDA_BENCH_SUMMARY=$(BENCH_SUMMARY); \
	$(CARGO) bench -p aida-orchestrator --bench event_log && \
	$(CARGO) bench -p aida-orchestrator --bench dispatch_scan && \
	$(CARGO) bench -p aida-orchestrator --bench bisection && \
	$(CARGO) bench -p aida-aggregator --bench trial_merge && \
	$(CARGO) bench -p aida-tests --bench e2e && \
	$(CARGO) bench -p aida-tests --bench intake && \
	$(CARGO) bench -p aida-tests --bench drain && \
	$(CARGO) bench -p aida-tests --bench sse_fanout && \
	$(CARGO) bench -p aida-worker --bench worktree_start && \
	$(CARGO) bench -p aida-tests --bench log_stream && \
	$(CARGO) bench -p aida-tests --bench summary

lint: ## formatting and clippy, as CI checks them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

test-grpc: ## grpcurl the orchestrator (make dev or the pod): services, health, ListWorkers with the internal token (TOKEN=..., else the pod's or data/internal-token)
	@token="$${TOKEN:-}"; \
	if [ -z "$$token" ] && command -v podman >/dev/null 2>&1 && podman container exists $(POD)-orchestrator 2>/dev/null; then \
		token="$$(podman exec $(POD)-orchestrator printenv AIDA_INTERNAL_TOKEN 2>/dev/null)" || token=""; \
	fi; \
	if [ -z "$$token" ] && [ -f data/internal-token ]; then token="$$(cat data/internal-token)"; fi; \
	[ -n "$$token" ] || { echo "test-grpc: no internal token: set TOKEN to the services' AIDA_INTERNAL_TOKEN" >&2; exit 1; }; \
	export AIDA_GRPC_TOKEN="$$token"; token=""; set -ex; \
	grpcurl -plaintext $(ORCHESTRATOR_ADDR) list; \
	grpcurl -plaintext -d '{"service": "aida.orchestrator.Orchestrator"}' $(ORCHESTRATOR_ADDR) grpc.health.v1.Health/Check; \
	grpcurl -plaintext -expand-headers -H 'authorization: Bearer $${AIDA_GRPC_TOKEN}' -d '{}' \
		$(ORCHESTRATOR_ADDR) aida.orchestrator.Orchestrator/ListWorkers

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

secrets: ## create the pod's Podman secrets that are missing (random values, printed nowhere; deploy/podman/secrets.sh)
	$(NEED_PODMAN)
	@$(SECRETS) create

run: secrets ## play the pod (deploy/podman/pod.yaml) after making its secrets: gateway on http://127.0.0.1:8080
	$(NEED_PODMAN)
	@for s in gateway orchestrator worker aggregator; do \
		podman image exists localhost/aida-$$s:latest || { echo "localhost/aida-$$s:latest is missing: make build-images (or build-images-offline)" >&2; exit 1; }; \
	done
	@! podman pod exists $(POD) || { echo "a pod $(POD) exists already: make stop first" >&2; exit 1; }
# A failed play (a missing secret, say) leaves the pod created: remove it.
	podman play kube $(POD_YAML) || { podman pod rm --force $(POD) >/dev/null 2>&1; exit 1; }
	@command -v curl >/dev/null 2>&1 || { echo "no curl here: not waiting for http://127.0.0.1:8080/api/health"; exit 0; }; \
	echo "waiting for http://127.0.0.1:8080/api/health ..."; \
	for i in $$(seq 60); do curl -fs 127.0.0.1:8080/api/health >/dev/null 2>&1 && { \
		echo "aida-pod is ready on http://127.0.0.1:8080 (this host only). First user: make admin NAME=you"; exit 0; }; sleep 1; done; \
		echo "the gateway did not become healthy in 60 s: make logs" >&2; exit 1

admin: ## create a user in the running pod: make admin NAME=alice [ROLE=admin|operator|viewer]; password prompted, or on stdin
	$(NEED_PODMAN)
	@[ -n "$(USER_NAME)" ] || { echo "usage: make admin NAME=alice [ROLE=admin|operator|viewer] (password prompted, or the first line of stdin)" >&2; exit 2; }
	@podman container exists $(POD)-orchestrator || { echo "no pod $(POD): make run" >&2; exit 1; }
	@if [ -t 0 ]; then \
		podman exec -it -e USER="$$(id -un)" $(POD)-orchestrator aida admin create-user '$(USER_NAME)' --role '$(ROLE)'; \
	else \
		podman exec -i -e USER="$$(id -un)" $(POD)-orchestrator aida admin create-user '$(USER_NAME)' --role '$(ROLE)' --password-stdin; \
	fi

reset-password: ## set a user's new password in the running pod (lifts a lockout): make reset-password NAME=alice
	$(NEED_PODMAN)
	@[ -n "$(USER_NAME)" ] || { echo "usage: make reset-password NAME=alice (password prompted, or the first line of stdin)" >&2; exit 2; }
	@podman container exists $(POD)-orchestrator || { echo "no pod $(POD): make run" >&2; exit 1; }
	@if [ -t 0 ]; then \
		podman exec -it -e USER="$$(id -un)" $(POD)-orchestrator aida admin reset-password '$(USER_NAME)'; \
	else \
		podman exec -i -e USER="$$(id -un)" $(POD)-orchestrator aida admin reset-password '$(USER_NAME)' --password-stdin; \
	fi

webhook-secrets: ## set the gateway's webhook secrets (comma-separated, one line on stdin); used from the next make run
	$(NEED_PODMAN)
	@$(SECRETS) set aida-webhook-secrets

git-credentials: ## set the orchestrator's tokens for https remotes (https://USER:TOKEN@HOST[/PATH], comma-separated, one line on stdin); used from the next make run
	$(NEED_PODMAN)
	@$(SECRETS) set aida-git-credentials

stop: ## stop and remove the pod and its containers (added workers too); volumes and secrets stay
	$(NEED_PODMAN)
	podman play kube --down $(POD_YAML)
	@echo "volumes aida-repos, aida-data and aida-cache and the pod's secrets are kept; make clean-volumes, make clean-secrets remove them"

clean-volumes: ## remove the pod's volumes: the repositories (aida-repos), the database (aida-data) and the mirrors of remotes (aida-cache)
	$(NEED_PODMAN)
	podman volume rm --force aida-repos aida-data aida-cache

clean-secrets: ## remove the pod's Podman secrets (make stop first; the next make run makes new ones)
	$(NEED_PODMAN)
	@! podman pod exists $(POD) || { echo "the pod $(POD) exists: make stop first" >&2; exit 1; }
	@$(SECRETS) remove

scale-worker: ## add a worker to the running pod (WORKER_ID=worker-N, default the next free N)
	$(NEED_PODMAN)
	@podman pod exists $(POD) || { echo "no pod $(POD) is running: make run" >&2; exit 1; }
	@podman secret inspect aida-internal-token-raw >/dev/null 2>&1 || { echo "the secret aida-internal-token-raw is missing: make clean-secrets, then make run" >&2; exit 1; }
# As hardened as the pod's workers: uid 10001, read-only root (Podman
# adds tmpfs on /tmp, /var/tmp and /run), anonymous volumes for the
# worktrees and the home directory (removed with the pod), no
# capabilities. The internal token is a file: the raw secret, mounted
# outside /run/secrets (read-only there when the root is).
	@id="$(WORKER_ID)"; \
	if [ -z "$$id" ]; then n=3; while podman container exists $(POD)-worker-$$n; do n=$$((n + 1)); done; id=worker-$$n; fi; \
	metrics=127.0.0.1:0; n=$${id#worker-}; case "$$n" in ""|*[!0-9]*) ;; *) metrics=127.0.0.1:$$((9110 + n)) ;; esac; \
	set -x; podman run -d --pod $(POD) --name $(POD)-$$id --restart always \
		--memory 2g --cpus 1 --user 10001:10001 --read-only \
		--cap-drop ALL --security-opt no-new-privileges \
		--secret aida-internal-token-raw,uid=10001,gid=10001,mode=0400,target=/run/aida/internal-token \
		-e AIDA_INTERNAL_TOKEN_FILE=/run/aida/internal-token \
		-e WORKER_ID=$$id -e ORCHESTRATOR_ADDR=127.0.0.1:50051 -e METRICS_LISTEN_ADDR=$$metrics \
		-e AIDA_REPO_ROOTS=/workspace/repos -e WORKTREE_ROOT=/var/lib/aida/worktrees \
		-e AIDA_REPO_CACHE=/var/cache/aida/mirrors -e AIDA_PORT_LOCK_DIR=/var/cache/aida/ports \
		-v aida-repos:/workspace/repos -v aida-cache:/var/cache/aida -v /var/lib/aida/worktrees -v /home/aida \
		$(WORKER_IMAGE)

logs: ## follow the pod's logs (SERVICE=gateway|orchestrator|worker-1|... for one container)
	$(NEED_PODMAN)
	@if [ -n "$(SERVICE)" ]; then podman logs -f $(POD)-$(SERVICE); else podman pod logs -f $(POD); fi

test-pod: ## end-to-end test of the pod: offline images, make run, admin login, tasks over REST, grpcurl with the token, hardening, a third worker, teardown
	@start=$$(date +%s); \
	export CONTAINERS_CONF="$${CONTAINERS_CONF:-$(POD_TEST_CONF)}"; \
	./scripts/install-podman.sh && ./scripts/install-test-deps.sh \
	&& CARGO="$(CARGO)" ./scripts/build-images.sh offline \
	&& $(CARGO) test -p aida-tests --test pod -- --ignored --nocapture; \
	rc=$$?; echo "test-pod: $$( [ $$rc -eq 0 ] && echo passed || echo FAILED ) in $$(( $$(date +%s) - start )) s"; exit $$rc
