# Two commands for a fresh machine: `make run` (set up and serve) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The test suite's processes (pytest-xdist): most tests wait on a server or the model, one core
# each; a file's tests stay in one process, so its module-wide servers start once.
TEST_PROCESSES ?= 2

.PHONY: run test install install-dev browser nginx lint bench clean

# A stamp per dependency set, so a changed pyproject.toml reinstalls and an unchanged one does not.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Set everything up and serve: embedded model, SQLite, http://127.0.0.1:8000
run: install
	$(BIN)/gptactions db upgrade
	$(BIN)/gptactions serve

## Chromium for the browser tests (Debian's package; Playwright cannot download browsers here).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; \
	fi

## nginx for the cluster tests (Debian's package), started by the tests themselves, never as a service.
nginx:
	@if [ ! -x /usr/sbin/nginx ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; fi; \
	fi

## The whole test suite: lint and types, then every test (real model, SQLite, PostgreSQL, Redis, Chromium, nginx).
test: install-dev browser nginx
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	TEST_REQUIRE_NGINX=1 $(BIN)/python -m pytest -W error -n $(TEST_PROCESSES) --dist loadfile

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: install-dev
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info test-output
