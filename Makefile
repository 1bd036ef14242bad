# Ig infusion platform: every set-up step lives here so a fresh clone needs only `make run` or
# `make test`. Targets are idempotent; stamps skip work already done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
GEN_STAMP := gen/.stamp
BUF := node_modules/.bin/buf
PROTOS := $(shell find protos -name '*.proto')
# protovalidate's rules (buf.validate field options), vendored at the version the protovalidate
# package implements; generated too, since our protos import it.
VALIDATE_PROTO := third_party/protovalidate/buf/validate/validate.proto
SITE_PACKAGES = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.DEFAULT_GOAL := help
.PHONY: help runtime setup gen run seed test test-unit lint bench clean deploy-check demo fuzz token certs audit-verify browser

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Running needs the runtime dependencies only; tests and linters add the `dev` extra.
$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# buf: proto lint, and `buf curl` to call the services (README "Calling the services")
$(BUF): package.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js and npm (Debian: apt-get install npm)" >&2; exit 1; }
	npm install --no-audit --no-fund --silent
	touch $@

$(GEN_STAMP): $(RUNTIME_STAMP) $(PROTOS) $(VALIDATE_PROTO)
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I protos -I third_party/googleapis -I third_party/protovalidate \
	  --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS) $(VALIDATE_PROTO)
	find gen -type d -exec touch {}/__init__.py \;
	echo "$(CURDIR)/gen" > "$(SITE_PACKAGES)/infusion-generated.pth"
	touch $@

runtime: $(RUNTIME_STAMP) $(GEN_STAMP)

setup: runtime $(DEV_STAMP) $(BUF) ## Everything for development: .venv with the dev tools, generated code, buf

gen: $(GEN_STAMP) ## Generate Python gRPC code from protos/ into gen/

run: runtime $(BUF) ## Start the three services with a demo centre, a development token issuer and the staff console (CONSOLE_LISTEN, default 127.0.0.1:8080; docs/console.md); prints its URL and a token per role
	$(PY) -m demo.run

token: runtime ## Print a fresh development token as the last line: make token ROLE=nurse [ORG=demo-org]
	@$(PY) -m services.issuer token "$(ROLE)" $(if $(ORG),--org "$(ORG)")

certs: runtime ## A development CA and TLS certificates for the services and a client in var/tls/<name>/ (docs/security.md "Transport")
	$(PY) -m services.issuer certs var/tls --dns localhost

demo: runtime ## A day end to end (plan, book, reserve, complete, dispense, reorder, recall) on throwaway services, free ports
	$(PY) -m demo

audit-verify: runtime ## Walk a service's audit chain and report the first broken link: make audit-verify SERVICE=scheduler [DATABASE_URL=...]
	$(PY) -m services.common.audit verify "$(SERVICE)" $(if $(DATABASE_URL),--database-url "$(DATABASE_URL)")

seed: runtime ## Load the shipped product catalogue into inventory's database
	$(PY) -m services.inventory seed

# The console's browser tests (tests/browser) drive Debian's chromium through its chromedriver:
# installed here when missing and we are root (CI is); otherwise those tests skip saying why.
browser: ## Headless Chromium and chromedriver from Debian's packages for the console's browser tests (as root, only when missing)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver) \
	    || echo "make browser: chromium could not be installed; the browser tests will skip (or fail under CI=true)" >&2; \
	else \
	  echo "make browser: chromium is missing (as root: apt-get install chromium chromium-driver); the browser tests will skip" >&2; \
	fi

test: setup browser ## Run the whole suite (unit, integration on SQLite and PostgreSQL, e2e, the console in headless Chromium, README examples)
	$(PY) -m pytest

test-unit: setup ## The fast suite: domain rules and use cases without gRPC or a database (optimality proofs left to make test)
	$(PY) -m pytest tests/unit -m "not solver"

deploy-check: setup ## Validate deploy/ (Kubernetes and compose schemas) and run the image's entrypoints
	$(PY) -m pytest tests/test_deploy.py

lint: setup ## ruff, mypy and buf lint
	$(BIN)/ruff check services demo tests bench
	$(BIN)/ruff format --check services demo tests bench
	$(BIN)/mypy services demo bench
	$(BUF) lint

fuzz: setup ## Fuzz every RPC of the three services on SQLite and PostgreSQL (FUZZ_EXAMPLES, default 2000)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(PY) -m pytest tests/fuzz -q

bench: setup ## Benchmarks: services against a bare grpcio echo server (32 in flight), then the schedule optimiser (bench/optimiser.py)
	$(PY) -m bench.run

clean: ## Remove the virtualenv, generated code and local databases
	rm -rf $(VENV) gen var node_modules
