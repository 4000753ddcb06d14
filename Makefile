# railraft: `make run` starts a local cluster, `make test` runs every test.
# Everything runs from the project's own virtual environment, .venv, which `make setup` creates.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.railraft-setup

SEEDS ?= 100
START ?= 0
JOBS  ?= 2

export PIP_NO_INPUT := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test test-browser sim run proto

setup: $(STAMP)

# Re-installs only when pyproject.toml changed (or the venv is missing); otherwise a no-op.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

test: setup
	$(PY) -m pytest -q
	$(MAKE) sim SEEDS=500

# The browser tests alone: headless Debian Chromium (/usr/bin/chromium; `.ci/run` installs it) against a real
# 3-node cluster and the web app.  Screenshots of every page land in test-artifacts/browser/.
test-browser: setup
	$(PY) -m pytest -q -m browser

sim: setup
	$(PY) -m tests.simulation.run --seeds $(SEEDS) --start $(START) --jobs $(JOBS)

# A local cluster on 127.0.0.1 (NODES nodes from port PORT, data and logs in DATA/), supervised until Ctrl-C.
# Check it from another terminal with `.venv/bin/railraft status --config $(DATA)/cluster.toml`.
# Demo mode: once a leader is elected the demo catalogue (stations, 12 trains, runs for 30 days) and a demo
# customer are loaded through the API (skipped when already there), and the credentials are printed; they are
# generated on the first run and kept in $(DATA)/credentials.txt (mode 0600), so a re-run prints the same ones.
# The web app (passenger pages, staff pages, operator dashboard) runs beside the nodes on WEB_PORT; each node
# serves Prometheus metrics on its port + 1000.
NODES ?= 3
PORT  ?= 50051
DATA  ?= data
WEB_PORT ?= 8080

run: setup
	$(PY) -m gateway.cli cluster up --nodes $(NODES) --port $(PORT) --data-dir $(DATA) --demo --web-port $(WEB_PORT)

proto: setup
	$(PY) scripts/gen_proto.py --out proto/gen

# The fault-injection suite (tests/chaos): real nodes on 127.0.0.1 behind fault-injecting proxies, a seeded
# nemesis (kills, pauses, partitions, one-way cuts, slow links, torn log tails, full disks) and a booking
# workload; ends with a summary and `N passed, M failed`.  `make test` runs a short one (tests/test_chaos.py).
DURATION ?= 60
SEED     ?= 1

.PHONY: chaos
chaos: setup
	$(PY) -m tests.chaos.run --duration $(DURATION) --seed $(SEED)
