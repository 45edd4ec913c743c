# dashgate: `make run` serves it locally, `make test` proves it. Both set everything up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install test lint clean

install: $(INSTALLED)

$(INSTALLED): requirements-dev.txt shared/requirements.txt
	@test -x $(PY) || "$$(scripts/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

## Every test against a real PostgreSQL: DATABASE_URL's server when set, else a throwaway cluster.
test: lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
