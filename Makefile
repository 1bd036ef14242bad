# Ig infusion platform: every set-up step lives here so a fresh clone needs only `make run` or
# `make test`. Targets are idempotent; stamps skip work already done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
GEN_STAMP := gen/.stamp
BUF := node_modules/.bin/buf
PROTOS := $(shell find protos -name '*.proto')
SITE_PACKAGES = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.DEFAULT_GOAL := help
.PHONY: help setup gen run seed test test-unit lint bench clean deploy-check demo token

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $@

$(GEN_STAMP): $(STAMP) $(PROTOS)
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I protos -I third_party/googleapis \
	  --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	find gen -type d -exec touch {}/__init__.py \;
	echo "$(CURDIR)/gen" > "$(SITE_PACKAGES)/infusion-generated.pth"
	touch $@

setup: $(STAMP) $(GEN_STAMP) ## Create .venv, install dependencies, generate gRPC code from protos/

gen: $(GEN_STAMP) ## Generate Python gRPC code from protos/ into gen/

run: setup ## Start scheduler, inventory and notify on localhost (SQLite under var/), seeded, with a development token issuer; prints a token per role
	$(PY) -m services.run

token: setup ## Print a fresh development token as the last line: make token ROLE=nurse [ORG=demo-org]
	@$(PY) -m services.issuer token "$(ROLE)" $(if $(ORG),--org "$(ORG)")

demo: setup ## Walk through a day (plan, book, reserve, complete, dispense, reorder, recall), printing what each service did
	$(PY) -m services.walkthrough

seed: setup ## Load the shipped product catalogue into inventory's database
	$(PY) -m services.inventory seed

test: setup $(BUF) ## Run the whole suite (unit, integration on SQLite and PostgreSQL, e2e)
	$(PY) -m pytest

test-unit: setup ## Run only the fast unit tests
	$(PY) -m pytest tests/unit

deploy-check: setup ## Validate deploy/ (Kubernetes and compose schemas) and run the image's entrypoints
	$(PY) -m pytest tests/test_deploy.py

lint: setup $(BUF) ## ruff, mypy and buf lint
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy services bench
	$(BUF) lint

bench: setup ## Benchmarks: CalculateDose, ListProducts and a bare grpcio echo server, 32 in flight
	$(PY) -m bench.run

clean: ## Remove the virtualenv, generated code and local databases
	rm -rf $(VENV) gen var node_modules
