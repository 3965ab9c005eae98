# airflow-mlops — every target does its own set-up (venv from the lock, state dir).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The kserve Python client, for the V2 parity test only, in its own environment: every kserve release >=0.15
# pins psutil<6 and Airflow 3.3 needs psutil>=6.1, so it cannot join the main lock (uv: unsatisfiable), and
# `--no-deps` into .venv does not import (kserve needs cloudevents and more that the main lock lacks). The test
# runs it as a separate client process, as a user of the server would.
KSERVE_VENV ?= .venv-kserve
export MLOPS_HOME ?= $(CURDIR)/.local
PYTEST_ARGS ?=

.PHONY: install browser-deps demo up test test-fast test-stack test-celery test-extended lint bench lock clean check

install: $(VENV)/.installed $(KSERVE_VENV)/.installed

# Reproducible install: exact pins from requirements/lock.txt, then the project itself without deps.
$(VENV)/.installed: pyproject.toml requirements/lock.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "uv>=0.13,<0.14"
	$(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements/lock.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	touch $@

$(KSERVE_VENV)/.installed: requirements/kserve-client.txt $(VENV)/.installed
	$(VENV)/bin/uv venv --quiet --clear --python python3 $(KSERVE_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(KSERVE_VENV)/bin/python -r requirements/kserve-client.txt
	touch $@

## The main job on the embedded default: demo data -> feature DAG -> training DAG (SQLite + duckdb, no server).
demo: install
	$(VENV)/bin/airflow-mlops demo

## Airflow standalone on the embedded state with our DAGs loaded; UI on http://localhost:8080.
up: install
	$(VENV)/bin/airflow-mlops up

check: install
	$(VENV)/bin/airflow-mlops check

## Debian's Chromium for the `browser` tests: Playwright drives /usr/bin/chromium (no browser download).
browser-deps:
	@if [ -x /usr/bin/chromium ]; then \
	  echo "chromium present: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	else \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; \
	fi

## Every test except the production-profile `stack` tests, in one pytest process; needs no server.
test: install browser-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -m "not stack" $(PYTEST_ARGS)

## The edit-test loop (no browser, no Airflow stack); `make test` is the full run. First the unit layer alone:
## tests/unit imports no Airflow (tests/support/unit_guard.py fails the run if it does) and has a < 60 s budget;
## then the in-process Airflow tests of our operators/sensors/triggers/plugin (`adapter`) and DAG integrity.
test-fast: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)
	$(VENV)/bin/pytest -m "adapter or dags" tests/adapter tests/dags $(PYTEST_ARGS)

## Production profile against PostgreSQL and Redis on 127.0.0.1 (they must be running).
## Includes the CeleryExecutor stack with real workers (closed loop + worker kill, ~10 min of it on a quiet machine).
test-stack: install
	$(VENV)/bin/pytest -m "stack and not extended" $(PYTEST_ARGS)

## The CeleryExecutor stack module alone.
test-celery: install
	$(VENV)/bin/pytest -m "stack and celery" $(PYTEST_ARGS)

## Stack tests CI leaves out because others cover their parts: the LocalExecutor closed loop on PostgreSQL + Redis
## (the Celery loop runs on the same stores, the e2e loop on the same executor).
test-extended: install
	$(VENV)/bin/pytest -m "extended" $(PYTEST_ARGS)

## mypy is strict ([tool.mypy]). The test programs (tests/support/programs, dags, unit_guard_project, feature_repos)
## and the runner modules are type-checked too, with tests/ as a package base so their `support.*` imports resolve;
## the rest of tests/support is not strict-clean yet (25 errors in 7 files).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy include/airflow_mlops
	MYPYPATH=tests $(VENV)/bin/mypy --explicit-package-bases tests/support/env_snapshot.py tests/support/unit_guard.py tests/support/performance_data.py \
		tests/support/dag_runs.py tests/support/prewarmed.py tests/support/programs tests/support/dags \
		tests/support/unit_guard_project tests/support/feature_repos
	$(PY) tests/support/no_fixed_sleep.py tests
	$(VENV)/bin/lint-imports --no-logo --no-cache  # layer contracts: pyproject.toml [tool.importlinter]

bench: install
	$(PY) benchmarks/dag_parse_time.py
	$(PY) benchmarks/validation.py
	$(PY) benchmarks/training_set_build.py
	$(PY) benchmarks/online_lookup.py
	$(PY) benchmarks/training_dag.py
	$(PY) benchmarks/batch_inference.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/serving_explain.py
	$(PY) benchmarks/training_explain.py
	$(PY) benchmarks/drift.py

## Re-resolve the locks after changing dependencies in pyproject.toml: lock.txt (Python 3.11, dev group, the venv),
## lock-py3.12.txt (runtime deps only, the Astro Runtime image's Python) and serving.txt (the serving distribution,
## serving/pyproject.toml, constrained to lock.txt's pins: the serving image runs the tested versions). The 3.12
## lock is seeded with the 3.11 pins (uv prefers the versions already in its output file), so both keep the same
## version of every package they share; tests/unit/test_astro_project.py and test_serving_distribution.py fail on
## any drift.
lock: install
	$(VENV)/bin/uv pip compile pyproject.toml --group dev --python-version 3.11 -o requirements/lock.txt
	cp requirements/lock.txt requirements/lock-py3.12.txt
	$(VENV)/bin/uv pip compile pyproject.toml --python-version 3.12 -o requirements/lock-py3.12.txt
	$(VENV)/bin/uv pip compile requirements/kserve-client.in --python-version 3.11 -o requirements/kserve-client.txt
	$(VENV)/bin/uv pip compile serving/pyproject.toml --python-version 3.11 --constraint requirements/lock.txt \
	  -o requirements/serving.txt

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .local .pytest_cache .ruff_cache .mypy_cache
