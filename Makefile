# dashgate: `make run` serves it locally, `make test` proves it. Both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .venv-tools
INSTALLED := $(VENV)/.installed
TOOLS_INSTALLED := $(TOOLS)/.installed
# sam needs a region; telemetry off keeps it offline; it finds python3.13 in our virtualenv.
SAM_ENV := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(VENV)/bin:$(CURDIR)/$(TOOLS)/bin:$$PATH"
SAM := $(SAM_ENV) $(TOOLS)/bin/sam

.PHONY: install run test lint browser build deploy bench openapi clean

install: $(INSTALLED) $(TOOLS_INSTALLED)

$(INSTALLED): requirements-dev.txt shared/requirements.txt
	@test -x $(PY) || "$$(scripts/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

## SAM CLI and cfn-lint live apart: aws-sam-cli pins its own boto3.
$(TOOLS_INSTALLED): requirements-tools.txt
	@test -x $(TOOLS)/bin/python || "$$(scripts/find-python)" -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	@touch $@

## The whole API on http://127.0.0.1:3000 (PORT to change), on an embedded PostgreSQL unless
## DATABASE_URL is set. Needs only the project's virtualenv.
run: $(INSTALLED)
	$(PY) -m localrun

## The browser test drives Debian's chromium (never a downloaded browser); install it if missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }; }

lint: install
	$(VENV)/bin/ruff check .

## Every test against a real PostgreSQL: DATABASE_URL's server when set, else a throwaway cluster.
test: lint browser
	$(PY) -m pytest

## Build the functions and the arm64 layer (no container needed), then deploy with a guided prompt.
## (scripts/sam-build: sam build, then bytecode for the read-only layer; see the script)
build: install
	$(SAM_ENV) scripts/sam-build

deploy: build
	$(SAM) deploy --guided

## Cold starts, warm latency, round trips, timing parity and built sizes against a real PostgreSQL;
## prints a table with each budget met or not and writes .bench/*.json. BENCH_ARGS: see --help.
bench: install
	$(PY) -m bench $(BENCH_ARGS)

## Write openapi.json from the functions' resolvers and models (a test fails when it is out of date).
openapi: install
	$(PY) -m localrun.openapi

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .ruff_cache
