# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Each creates .venv and installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?=
PYTEST_ARGS ?=

# kinesis-local (kinesis-mock on Node.js): the Kinesis of the tests that need real shard
# ends (resharding, the KCL). Pinned by tests/kinesis-local/package-lock.json, installed
# with `npm ci`; shardflow/kinesis_local.py starts it bound to 127.0.0.1.
KINESIS_LOCAL_VERSION := 0.6.2
KINESIS_LOCAL_DIR := .cache/kinesis-local
KINESIS_LOCAL_LOCK := tests/kinesis-local/package.json tests/kinesis-local/package-lock.json
KINESIS_LOCAL := $(KINESIS_LOCAL_DIR)/.installed-$(KINESIS_LOCAL_VERSION)

# Chromium for the dashboard's browser tests: Debian's package (Playwright drives it; it
# never downloads a browser of its own). Installed with apt-get when missing and root.
CHROMIUM ?= /usr/bin/chromium

.PHONY: install kinesis-local browser demo test test-kinesis-local test-kcl lint typecheck unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,kcl]'
	touch $(STAMP)

kinesis-local: $(KINESIS_LOCAL)

$(KINESIS_LOCAL): $(KINESIS_LOCAL_LOCK) | $(STAMP)
	@command -v node >/dev/null 2>&1 || { echo "make: kinesis-local needs Node.js (checked with 20), and node is not on PATH: install Node.js (https://nodejs.org), which brings npm" >&2; exit 1; }
	@command -v npm >/dev/null 2>&1 || { echo "make: kinesis-local is installed with npm, which is not on PATH: install npm (it comes with Node.js)" >&2; exit 1; }
	rm -rf $(KINESIS_LOCAL_DIR)
	mkdir -p $(KINESIS_LOCAL_DIR)
	cp $(KINESIS_LOCAL_LOCK) $(KINESIS_LOCAL_DIR)/
	cd $(KINESIS_LOCAL_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	SHARDFLOW_KINESIS_LOCAL_DIR=$(KINESIS_LOCAL_DIR) $(BIN)/python -m shardflow.kinesis_local --check
	touch $@

browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "installing Debian's chromium for the dashboard's browser tests"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else \
	        echo "make: the dashboard's browser tests need Chromium at $(CHROMIUM): install Debian's chromium package (sudo apt-get install chromium) or set CHROMIUM=/path/to/chromium" >&2; \
	        exit 1; \
	    fi; \
	fi

demo: $(STAMP)
	$(BIN)/shardflow demo $(if $(DURATION),--duration $(DURATION))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck $(KINESIS_LOCAL) browser
	CHROMIUM=$(CHROMIUM) $(BIN)/pytest $(PYTEST_ARGS)

# The kinesis-local tier alone (resharding, and whatever else needs real shard ends).
test-kinesis-local: $(KINESIS_LOCAL)
	$(BIN)/pytest -m kinesis_local $(PYTEST_ARGS)

# The KCL runner alone: protocol tests, and two real MultiLangDaemon workers (Java).
test-kcl: $(STAMP) $(KINESIS_LOCAL)
	$(BIN)/pytest tests/unit/test_kcl_processor.py tests/unit/test_kcl_frontier.py \
	    tests/unit/test_kcl_properties.py tests/integration/test_kcl_daemon.py $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.core
	$(BIN)/python -m benchmarks.replay
	$(BIN)/python -m benchmarks.memory
	$(BIN)/python -m benchmarks.producer
	$(BIN)/python -m benchmarks.query

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache *.egg-info test-artifacts
