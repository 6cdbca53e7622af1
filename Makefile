# canopy-operator — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo venv crds manifests generate check-generated lint test test-unit test-integration envtest-assets \
        cluster-up envtest-kubeconfig run simulate bench e2e clean node-assets helm-assets servers-assets node-up node-down image

help: ## Show the targets
	@grep -hE '^[a-zA-Z0-9_.-]+( [a-zA-Z0-9_.-]+)*:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "}; {n = split($$1, names, " "); for (i = 1; i <= n; i++) printf "  \033[36m%-20s\033[0m %s\n", names[i], $$2}'

demo: $(STAMP) envtest-assets ## The whole loop locally: control plane, simulator, operator, voters, promotion (ARGS="--kubeconfig PATH" for a cluster)
	$(VENV)/bin/canopy-devkit demo $(ARGS)

# The operator and its dev-only kit (devkit/: simulator, control plane, demo), both editable.
$(STAMP): pyproject.toml devkit/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./devkit
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project, its dev tools and the devkit

crds: $(STAMP) ## Generate crds/ from the pydantic API models
	$(VENV)/bin/canopy-operator crds --output-dir crds

manifests: $(STAMP) ## Generate the RBAC manifests from the permission table
	$(VENV)/bin/canopy-operator manifests --root .

generate: crds manifests ## Generate everything generated

check-generated: generate ## Fail if generated files differ from what is committed
	@git diff --exit-code -- crds manifests charts || { echo "generated files drifted: run make generate and commit"; exit 1; }

lint: $(STAMP) ## ruff, mypy --strict and the import contracts (.importlinter)
	$(VENV)/bin/ruff check operator devkit tests bench
	$(VENV)/bin/ruff format --check operator devkit tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

envtest-assets: ## Build (or reuse) kube-apiserver and etcd for the integration tests
	bash hack/envtest-assets.sh

test: $(STAMP) envtest-assets lint ## Run every test: lint, unit, integration (real API server), e2e (real node)
	bash hack/run-tests.sh
	bash hack/e2e.sh

test-unit: $(STAMP) ## Unit tests only (no API server)
	$(VENV)/bin/pytest -m "not integration and not e2e" tests

test-integration: $(STAMP) envtest-assets ## Integration tests against a real kube-apiserver + etcd
	$(VENV)/bin/pytest -m integration tests

cluster-up envtest-kubeconfig: $(STAMP) envtest-assets ## Start the test control plane and print its kubeconfig (Ctrl-C stops it)
	$(VENV)/bin/canopy-devkit up

run: $(STAMP) ## Run the operator against the current kubeconfig
	$(VENV)/bin/canopy-operator run --all-namespaces

simulate: $(STAMP) ## Run the Canopy backend simulator on 127.0.0.1:8000 (CONFIG=path to a values file)
	$(VENV)/bin/canopy-devkit simulate $(if $(CONFIG),--config $(CONFIG)) --port 8000

bench: $(STAMP) envtest-assets ## Run the benchmarks (not part of CI); results go to bench/RESULTS.md
	$(PY) bench/decision_sim.py && $(PY) bench/collect_bench.py && $(PY) bench/reconcile_bench.py --scales 1,100,500 && $(PY) bench/wake_tick.py && $(PY) bench/write_cost.py && $(PY) bench/mlflow_poll.py

node-assets: ## Build (or reuse) kubelet, controllers, kube-proxy, CoreDNS, pause image; install runc/containerd/CNI when missing
	bash hack/node-assets.sh

helm-assets: ## Build (or reuse) helm for the chart tests (cached outside the repo)
	bash hack/helm-assets.sh

servers-assets: ## Build (or reuse) the MLflow and Phoenix server environments (cached outside the repo)
	bash hack/servers-assets.sh

node-up: $(STAMP) envtest-assets node-assets ## Start a real single-node cluster in the background (root) and print its kubeconfig
	$(PY) -m canopy_devkit.node up

node-down: $(STAMP) ## Stop the node of `make node-up` and put the machine back as it was found
	$(PY) -m canopy_devkit.node down

image: ## Build the operator and simulator images with dockerd (no registry) into one tarball (hack/images.sh)
	bash hack/images.sh

e2e: $(STAMP) ## The e2e tier on a real node (root; E2E_KIND_CLUSTER=name for kind, E2E_KUBECONFIG=path for any cluster)
	bash hack/e2e.sh

clean: ## Remove caches (keeps .venv and the envtest binaries)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
