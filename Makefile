# h2pile: `make sim` runs the whole pile live against the simulator,
# `make test` runs the test suite. Both set up everything on a fresh machine.
PY      := .venv/bin/python
BOARD   ?= esp32_generic
SPEED   ?= 60
HEAP    ?=

# Some machines (this project's CI among them) set PYTHONDONTWRITEBYTECODE:
# every Python the tests start would compile every module again, and pytest
# would rewrite every test file's asserts again in each worker (~4 s of CPU
# per worker). The caches go to __pycache__/ (ignored by git).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: all test test-fast fuzz lint sim firmware bench bench-stops hil docs deps venv clean

all: test

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: .venv/.installed

# Debian packages the tests and the live view need (a real broker, ptys, a
# PostgreSQL for the ledger's tests, which start their own cluster: the
# system service is not started).
deps:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto socat >/dev/null)
	@command -v socat >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ( \
	  made=; test -e /usr/sbin/policy-rc.d || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && \
	    chmod +x /usr/sbin/policy-rc.d && made=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; rc=$$?; \
	  test -z "$$made" || rm -f /usr/sbin/policy-rc.d; exit $$rc)

# Everything: every tier, on three xdist workers (the suite waits on real time
# more than it computes). A file stays on one worker (its tests share a booted
# board or a running pile, and run in order); the board tier is one unit, so
# one emulated Pico W runs at a time; the longest start first
# (tests/helpers/schedule.py; tests/README.md, "Wall time").
test: venv deps lint
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder

# Core and unit tiers (no whole pile, no board, nothing in real time, no
# campaign): < 60 s on 2 cores. The property tests run 100 examples here,
# 300 in `make test`.
test-fast: venv deps
	H2P_PROP_EXAMPLES=100 $(PY) -m pytest -q -n 5 --dist loadfile -m "not system and not board and not slow" \
	  tests/core tests/firmware tests/sim tests/tools

# The fuzz tier for longer than CI runs it (there: a fixed, derandomized
# budget, < 30 s): FUZZ_EXAMPLES per target with random seeds; an input that
# fails is saved under tests/fuzz/corpus/<target>/found-*.bin, to review and
# commit with its fix.
FUZZ_EXAMPLES ?= 20000
fuzz: venv
	H2PILE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) H2PILE_FUZZ_SAVE=1 $(PY) -m pytest -q -m fuzz tests/fuzz

lint: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests/firmware/test_layers.py

sim: venv deps
	$(PY) -m host_tools.cli live --speed $(SPEED) $(if $(HEAP),--heap $(HEAP))

firmware: venv
	$(PY) -m host_tools.build $(BOARD)

bench: venv deps
	$(PY) -m bench.run

# Issue 15: 50 sessions at speed 20 with one core kept busy; none may be
# stopped while the EV asks (~4 min).
bench-stops: venv deps
	$(PY) -m bench.stops

hil: venv deps
	@test -n "$(PORT)" -a -n "$(BUS)" || (echo "usage: make hil PORT=/dev/ttyUSB0 BUS=/dev/ttyUSB1 (see docs/hil.md)"; exit 2)
	$(PY) -m host_tools.hil --port $(PORT) --bus $(BUS)

docs: venv
	$(PY) -m host_tools.cli docs --write

clean:
	rm -rf build .pytest_cache
