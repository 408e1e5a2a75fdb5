# rollkeeper's build. The two commands that matter: `make demo` and `make test`.
# Tools and control-plane binaries are pinned and live in ./bin (hack/install-deps.sh).

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
GO ?= go

# Packages tested with -race. The rest runs without it. Add a package here when its test needs
# the race detector. controllers is the one that links client-go and controller-runtime:
# instrumenting them costs about five minutes on two cores, worth it for the reconciler's
# concurrency (watches, the seeder, the status pass).
RACE_PKGS ?= ./internal/... ./nodeagent/... ./cmd/fixture/... ./controllers/...
# Left out of RACE_PKGS: internal/localstack links client-go (instrumenting it takes minutes on
# two cores; e2e tests drive it), and internal/sim is one goroutine by design (nothing to find,
# and its 10,000 seeds would take ten times longer).
RACE_SKIP ?= ./internal/localstack ./internal/sim/...
TEST_TIMEOUT ?= 25m
# Build tools with their own go.mod (kept out of the product's module) whose tests make test runs too.
TEST_MODULES ?= hack/ocibuild
# Patched copies of third-party modules (go.mod replaces them): their regression tests run with
# ours; their code is upstream's, so neither gofmt-checked nor vetted.
FORKED_MODULES ?= third_party/forked/anacrolix-torrent
# Extra flags for go test, e.g. GO_TEST_FLAGS='-run TestFoo'.
GO_TEST_FLAGS ?=

IMG_MANAGER ?= rollkeeper-manager:dev
IMG_AGENT ?= rollkeeper-agent:dev
# make images writes OCI archives here (for `ctr images import`, `skopeo copy oci-archive:`...).
IMAGES_DIR ?= $(LOCALBIN)/images
# Fully qualified names, as containerd records them.
qualify = $(if $(findstring /,$(firstword $(subst :, ,$(1)))),$(1),docker.io/library/$(1))

export KUBEBUILDER_ASSETS := $(LOCALBIN)

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: deps
deps: ## Install ZooKeeper, Chromium and Prometheus (Debian) and build kube-apiserver, etcd, controller-gen, helm and the real-cluster binaries into bin/ (idempotent).
	hack/install-deps.sh

.PHONY: deps-control-plane
deps-control-plane: ## Install only what make demo and make chaos need: ZooKeeper, etcd and kube-apiserver (idempotent; 14 minutes on a fresh machine with an empty Go module cache).
	hack/install-deps.sh zookeeper etcd kube-apiserver

$(CONTROLLER_GEN):
	hack/install-deps.sh controller-gen

.PHONY: kubectl
kubectl: ## Build bin/kubectl from source (for machines without kubectl; takes a few minutes).
	hack/install-deps.sh kubectl

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods from the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests, and copy them into the chart.
	$(CONTROLLER_GEN) rbac:roleName=rollkeeper-manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases
	mkdir -p charts/rollkeeper/crds charts/rollkeeper/files
	rm -f charts/rollkeeper/crds/*.yaml
	cp config/crd/bases/*.yaml charts/rollkeeper/crds/
	if [ -f config/rbac/role.yaml ]; then cp config/rbac/role.yaml charts/rollkeeper/files/manager-role.yaml; fi

.PHONY: fmt
fmt: ## Run gofmt -w on the sources.
	$(GO) fmt ./...

.PHONY: fmt-check
fmt-check: ## Fail if a Go file is not gofmt-formatted.
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' ':!third_party/' 2>/dev/null || find . -name '*.go' -not -path './bin/*' -not -path './third_party/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi; echo "gofmt: ok"

.PHONY: vet
vet: ## Run go vet (the product's module and TEST_MODULES).
	$(GO) vet ./...
	for m in $(TEST_MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

.PHONY: verify-generated
verify-generated: ## Regenerate code and manifests and fail if api/, config/ or charts/ changed.
	hack/verify-generated.sh

##@ Build

.PHONY: build
build: ## Build the static binaries bin/rollkeeper-{manager,agent,fixture} and the kubectl plugin bin/kubectl-rollkeeper.
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/rollkeeper-manager ./cmd/manager
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/rollkeeper-agent ./cmd/agent
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/rollkeeper-fixture ./cmd/fixture
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/kubectl-rollkeeper ./cmd/kubectl-rollkeeper

# The same flags as the Dockerfile's builder stage: the archives carry the binaries the
# Dockerfile would.
GO_IMAGE_BUILD = CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags "-s -w"

.PHONY: images
images: ## Build the manager and agent images (and the test cluster's pause image) as OCI archives in bin/images, without Docker, from the Dockerfile's stages.
	mkdir -p $(LOCALBIN)/image $(IMAGES_DIR)
	$(GO_IMAGE_BUILD) -o $(LOCALBIN)/image/manager ./cmd/manager
	$(GO_IMAGE_BUILD) -o $(LOCALBIN)/image/agent ./cmd/agent
	$(GO_IMAGE_BUILD) -o $(LOCALBIN)/image/pause ./hack/pause
	cd hack/ocibuild && CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/ocibuild .
	$(LOCALBIN)/ocibuild -dockerfile Dockerfile -target manager -map /out=$(LOCALBIN)/image \
		-name $(call qualify,$(IMG_MANAGER)) -o $(IMAGES_DIR)/rollkeeper-manager.tar
	$(LOCALBIN)/ocibuild -dockerfile Dockerfile -target agent -map /out=$(LOCALBIN)/image \
		-name $(call qualify,$(IMG_AGENT)) -o $(IMAGES_DIR)/rollkeeper-agent.tar
	$(LOCALBIN)/ocibuild -dockerfile hack/pause/Dockerfile -target pause -map /out=$(LOCALBIN)/image \
		-name registry.k8s.io/pause:rollkeeper -o $(IMAGES_DIR)/pause.tar

.PHONY: cluster
cluster: deps images ## Run a local single-node cluster (kubelet + containerd, as root) in the foreground; Ctrl-C tears it down.
	$(GO) run ./test/cluster/localcluster -images $(IMAGES_DIR)

.PHONY: docker-build
docker-build: ## Build the manager and agent images (needs a Docker engine; none in CI).
	docker build --target manager -t $(IMG_MANAGER) .
	docker build --target agent -t $(IMG_AGENT) .

##@ Test

.PHONY: test
test: deps verify-generated fmt-check vet build images ## Everything CI runs: generation check, gofmt, vet, unit and e2e tests.
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) RACE_PKGS="$(RACE_PKGS)" RACE_SKIP="$(RACE_SKIP)" TEST_TIMEOUT=$(TEST_TIMEOUT) TEST_MODULES="$(TEST_MODULES) $(FORKED_MODULES)" \
		hack/run-tests.sh $(GO_TEST_FLAGS) ./...

.PHONY: test-unit
test-unit: ## Run every test but the e2e ones (test/e2e, test/cluster).
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) RACE_PKGS="$(RACE_PKGS)" RACE_SKIP="$(RACE_SKIP)" TEST_TIMEOUT=$(TEST_TIMEOUT) \
		hack/run-tests.sh $(GO_TEST_FLAGS) $$($(GO) list ./... | grep -v -e /test/e2e -e /test/cluster)

.PHONY: test-cluster
test-cluster: deps images ## Run the real-cluster e2e (test/cluster, as root): helm install on a kubelet node, a host service upgraded.
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) RACE_PKGS= TEST_TIMEOUT=$(TEST_TIMEOUT) \
		hack/run-tests.sh $(GO_TEST_FLAGS) ./test/cluster/...

.PHONY: test-e2e
test-e2e: deps build images ## Run the e2e tests (test/e2e) against real ZooKeeper, API server and agent processes.
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) RACE_PKGS= TEST_TIMEOUT=$(TEST_TIMEOUT) \
		hack/run-tests.sh $(GO_TEST_FLAGS) ./test/e2e/...

# Each Go fuzz target runs FUZZTIME; FUZZ_FLAGS adds go test flags (e.g. '-parallel 1'). Their
# seed corpora (testdata/fuzz/<Name>, crashers included) run as plain tests in make test.
FUZZTIME ?= 60s
FUZZ_FLAGS ?=

.PHONY: fuzz
fuzz: ## Fuzz every Go fuzz target (func FuzzXxx in *_test.go) for FUZZTIME each (default 60s).
	@for f in $$(grep -rlE --include='*_test.go' --exclude-dir=bin --exclude-dir=hack '^func Fuzz[A-Za-z0-9_]*\(' .); do \
		for name in $$(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' $$f); do \
			echo "== $$name ($$(dirname $$f), $(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $(FUZZ_FLAGS) $$(dirname $$f) || exit 1; \
		done; \
	done

# make chaos: RUNS runs of the fault campaign from seed SEED (test/chaos).
RUNS ?= 10
SEED ?= 1
# REGRESS=1 replays the regression seeds instead (make chaos-regress).
REGRESS ?=
# PARALLEL=N carries out N runs at a time (each its own stack; they share only the machine).
PARALLEL ?= 1

.PHONY: chaos
chaos: deps-control-plane build ## Run the randomized fault campaign (test/chaos): RUNS runs from seed SEED, PARALLEL at a time; ends with "N runs, K violations" and the wall time (log in bin/chaos.log).
	@start=$$(date +%s); rc=0; \
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) CHAOS_RUNS=$(RUNS) CHAOS_SEED=$(SEED) CHAOS_REGRESS=$(REGRESS) CHAOS_PARALLEL=$(PARALLEL) \
		$(GO) test -count=1 -v -timeout 0 -parallel $(PARALLEL) -run '^TestChaos$$' ./test/chaos/ 2>&1 | tee $(LOCALBIN)/chaos.log || rc=$$?; \
	echo; grep -E '^[0-9]+ runs, [0-9]+ violations' $(LOCALBIN)/chaos.log || echo "no summary: see $(LOCALBIN)/chaos.log"; \
	echo "wall time: $$(( $$(date +%s) - start ))s"; exit $$rc

.PHONY: chaos-regress
chaos-regress: ## Replay the fault campaign's regression seeds (every seed that found a defect; test/chaos/chaos_test.go).
	@$(MAKE) --no-print-directory chaos REGRESS=1

##@ Benchmarks (figures printed, never pass/fail)

DIST_FLAGS ?=
PAGECACHE_FLAGS ?=

.PHONY: bench
bench: bench-distribution bench-pagecache bench-zk-traffic ## Run every benchmark.

.PHONY: bench-distribution
bench-distribution: deps ## P2P vs HTTP distribution to N nodes under per-link rate limits, median of 5 runs (DIST_FLAGS='-n 8 -size 32MiB -rate 4MiB -runs 5 -v -late -slow 1 -mode p2p').
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/bench-distribution ./cmd/bench-distribution
	$(LOCALBIN)/bench-distribution $(DIST_FLAGS)

.PHONY: bench-dashboard
bench-dashboard: ## The dashboard's node map at 5,000 nodes × 4 services in headless Chromium: first render and per-update times.
	hack/install-deps.sh zookeeper etcd kube-apiserver chromium
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) $(GO) test -count=1 -run '^$$' -bench BenchmarkNodeMap -benchtime 5x ./internal/dashboard/

.PHONY: bench-pagecache
bench-pagecache: ## Read time of a version right after the switch, pre-warmed and pinned vs cold (as root).
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/bench-pagecache ./cmd/bench-pagecache
	$(LOCALBIN)/bench-pagecache $(PAGECACHE_FLAGS)

.PHONY: bench-zk-traffic
bench-zk-traffic: ## ZooKeeper requests per node per rollout (reads, watches set, writes) for 5 and 20 agents, against a real ZooKeeper.
	hack/install-deps.sh zookeeper
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkZooKeeperTraffic$$' -benchtime 3x ./nodeagent

# bench-scale's fleet sizes, restart time and quorum (a fraction of the fleet).
SCALE_NODES ?= 100,1000
SCALE_RESTART ?= 1s
SCALE_QUORUM ?= 0.9
# bench-scale's ZooKeeper session timeout (and roll call wait) per agent.
SCALE_SESSION ?= 4s

.PHONY: bench-scale
bench-scale: ## One service rolled v1 -> v2 on SCALE_NODES in-process agents against a real ZooKeeper: wall time against the quorum's bound, nodes down at once, requests and watch events per node (not in make bench: it takes minutes; 5,000 nodes in one process need SCALE_SESSION=20s and about 14 GiB).
	hack/install-deps.sh zookeeper
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -timeout 0 ./nodeagent \
		-args -scale.nodes=$(SCALE_NODES) -scale.restart=$(SCALE_RESTART) -scale.quorum=$(SCALE_QUORUM) -scale.session=$(SCALE_SESSION)

##@ Demo

.PHONY: demo
demo: deps-control-plane build ## Bring up API server, ZooKeeper, operator and 5 nodes, and roll two services v1 -> v2 live.
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/rollkeeper-demo ./cmd/demo
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) $(LOCALBIN)/rollkeeper-demo

##@ Chart

HELM ?= $(LOCALBIN)/helm
KUBECTL ?= $(shell command -v kubectl 2>/dev/null || echo $(LOCALBIN)/kubectl)
CHART_ARGS ?= --kube-version 1.37.2 --set zookeeper.servers=zk:2181

$(HELM):
	hack/install-deps.sh helm

.PHONY: helm
helm: ## Install helm into bin/ (pinned in hack/install-deps.sh).
	hack/install-deps.sh helm

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint and render the chart (the full checks against an API server are in test/chart).
	$(HELM) lint charts/rollkeeper $(CHART_ARGS)
	$(HELM) template rollkeeper charts/rollkeeper $(CHART_ARGS) >/dev/null

.PHONY: helm-template
helm-template: $(HELM) ## Print the chart rendered with CHART_ARGS (default: zookeeper.servers=zk:2181).
	$(HELM) template rollkeeper charts/rollkeeper -n rollkeeper-system $(CHART_ARGS)

.PHONY: kustomize-build
kustomize-build: ## Print config/default rendered by kubectl kustomize.
	$(KUBECTL) kustomize config/default

.PHONY: test-chart
test-chart: deps build ## Run the chart, kustomize and RBAC tests (test/chart) against a real API server.
	ROLLKEEPER_BIN_DIR=$(LOCALBIN) RACE_PKGS= TEST_TIMEOUT=$(TEST_TIMEOUT) \
		hack/run-tests.sh $(GO_TEST_FLAGS) ./test/chart/...

##@ Cleanup

.PHONY: clean
clean: ## Remove the built rollkeeper binaries (keeps the control plane and tools in bin/).
	rm -f $(LOCALBIN)/rollkeeper-manager $(LOCALBIN)/rollkeeper-agent $(LOCALBIN)/rollkeeper-fixture $(LOCALBIN)/rollkeeper-demo
