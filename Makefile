# One-command entry points. `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCKS := requirements/torch-cpu.lock requirements/dev.lock
# Where the CPU torch wheel is when pip's own configuration does not find it (install and lock):
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
UV_VERSION := 0.13.9

.PHONY: install check demo test test-fast lint bench clean lock

# Exactly the locked versions (requirements/*.lock, from `make lock`): the CPU torch wheel first and without its
# dependencies (an unpinned torch would pull a multi-GB CUDA build), then everything else, then the project itself
# without resolving again. --require-hashes: a file whose sha256 is not in the lock is refused.
$(BIN)/blindpair: pyproject.toml $(LOCKS)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		-r requirements/torch-cpu.lock
	$(BIN)/python -m pip install -q --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

install: $(BIN)/blindpair

demo: install
	$(BIN)/blindpair demo

# The layer contract (import-linter) and the type check run first: a new cycle, a broken layer or a type error
# fails the test command (docs/architecture.md).
check: install
	$(BIN)/lint-imports
	$(BIN)/mypy

test: check
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m "not browser and not postgres and not redis and not slow"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench.run_all

# Recompile requirements/*.lock from pyproject.toml, keeping the current pins where the ranges allow.
# Move one package: make lock LOCK_ARGS="--upgrade-package fastapi"; everything: make lock LOCK_ARGS=--upgrade.
# Runs from its own small venv (.tools), not .venv, which may not match pyproject.toml until the relock.
lock: .tools/bin/uv
	.tools/bin/python scripts/lock.py --uv .tools/bin/uv $(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX)) -- $(LOCK_ARGS)

.tools/bin/uv:
	$(PY) -m venv .tools
	.tools/bin/python -m pip install -q uv==$(UV_VERSION) 'packaging>=24'

clean:
	rm -rf var .pytest_cache
