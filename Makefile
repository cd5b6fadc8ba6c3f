# One command each: every target installs what it needs first (offline after the install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install demo dev test check bench clean services-up services-down demo-team

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade 'pip>=24'
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

demo: install  ## run the main job on a demo suite of real HELM runs
	$(BIN)/python -m governance_assets.cli demo

dev: install  ## the Dagster UI on http://127.0.0.1:3000
	$(BIN)/python -m governance_assets.cli dev

services-up: install  ## the team deployment on 127.0.0.1: PostgreSQL, Redis, MLflow server, 2 Celery workers
	$(BIN)/python -m governance_assets.cli services up

services-down:  ## stop every process services-up started
	$(BIN)/python -m governance_assets.cli services down

demo-team: install  ## the demo's suites on the team deployment (starts the services, leaves them up)
	$(BIN)/python -m governance_assets.cli demo-team

test: install  ## the test suite (offline, real HELM, Dagster and MLflow)
	$(BIN)/python -m pytest -q

check: install  ## lint, format and type checks
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install  ## benchmarks, reported as ratios against their peers
	$(BIN)/python bench/ingest_vs_summarize.py
	$(BIN)/python bench/gates_vs_ingest.py
	$(BIN)/python bench/drift_vs_evidently.py

clean:
	rm -rf .governance
