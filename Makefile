# opero's two front doors: `make demo` (the main job) and `make test` (everything CI runs).
# Both work on a fresh machine: they create .venv and install what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300

.PHONY: demo test venv system lint typecheck unit quick integration browser bench bench-quick bench-scripts docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[all,dev,bench]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

## The main job: 1,000 flaky, rate-limited, key-protected calls through opmap, then again from cache.
demo:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import opero, tqdm, pandas" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[pandas]"
	$(BIN)/python -m opero.demo.job

## Debian services the tests use for real: redis-server and chromium (installed when missing, as root).
system:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then $(APT) update -qq && $(APT) install -y -qq $$missing; \
	  else echo "please install:$$missing (needs root)"; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check opero tests benchmarks
	$(BIN)/lint-imports

## mypy strict and pyright (the machine's Node.js runs pyright's bundled copy), both clean.
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/pyright

## The maintainer's minute: tests/unit alone (no server, subprocess, socket, kernel or worker
## process; under 60 s), no system service needed. `make quick` is the same.
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

quick: unit

## The rest except the browser tests: servers, subprocesses, worker processes, redis, nginx,
## dask, kernels (the browser tests run in a loopback-only network namespace below).
integration: $(STAMP) system
	$(BIN)/python -m pytest tests/integration -m "not browser" -q

browser: $(STAMP) system
	@if unshare -n true 2>/dev/null; then \
	  unshare -n sh -c 'ip link set lo up && exec "$$@"' sh $(BIN)/python -m pytest tests/integration -m browser -q -p no:cacheprovider; \
	else $(BIN)/python -m pytest tests/integration -m browser -q -p no:cacheprovider; fi

test: lint typecheck unit integration browser bench-quick

## Every shape beside every peer in one run: JSON in benchmarks/results/, one chart per shape
## in docs/assets/bench/ (docs/performance.md shows them). A few minutes.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --charts docs/assets/bench

## The CI smoke subset (< 60 s): fails only when something crashes, never on a timing.
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick --out benchmarks/results/quick.json --charts benchmarks/results/quick-charts

## The standalone scripts (redis and fresh-process cache hits, dashboard overhead, soak, ...).
bench-scripts: $(STAMP)
	for b in benchmarks/[a-z]*.py; do case $$b in */run.py|*/chart.py|*/table.py) continue;; esac; \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .mypy_cache .ruff_cache .pytest_cache artifacts
