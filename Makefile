# One place for every command. `make run` starts the service (web + trainer) on the embedded SQLite database
# with the ecoseller demo data; `make test` runs the whole test suite. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install migrate load-demo run serve trainer test test-unit test-fast lint format ci bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

migrate: install  ## apply the database migrations (RS_DATABASE_URL, default ./var/recommender.db)
	$(PY) -m recommender_system migrate

load-demo: migrate  ## import the ecoseller demo data (skipped when the catalogue is not empty)
	$(PY) -m recommender_system load-demo --if-empty

run: load-demo  ## start the trainer in the background and the web service on port 8086
	scripts/run.sh

serve: migrate  ## the web service only
	$(PY) -m recommender_system serve

trainer: migrate  ## the trainer only
	$(PY) -m trainer

test: install  ## the whole test suite (SQLite; PostgreSQL too when RS_TEST_DATABASE_URL is set)
	$(PY) -m pytest -n 2 -q -ra $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -n 2 -q tests/unit $(PYTEST_ARGS)

lint: install  ## ruff, formatting and the import-layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --config setup.cfg

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

ci:  ## what CI runs: bash .ci/run
	bash .ci/run

bench: install  ## every benchmark (long; prints figures)
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf var .pytest_cache test-artifacts
