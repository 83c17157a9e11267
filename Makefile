# One-command entry points. `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU := torch==2.13.0

.PHONY: install demo test test-fast lint bench clean

$(BIN)/blindpair: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pin the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q $(TORCH_CPU)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/blindpair

demo: install
	$(BIN)/blindpair demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m "not browser and not postgres and not redis and not slow"

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf var .pytest_cache
