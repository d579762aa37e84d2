# `make demo` and `make test` work on a fresh machine with Python 3.10+ and make:
# they install uv when it is missing, sync the locked environment, then run.
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")

.PHONY: demo test test-all lint style uv sync-core sync-dev bench clean

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user --break-system-packages uv

sync-core: uv
	@$(UV) sync --locked --no-dev --inexact --quiet

sync-dev: uv
	@$(UV) sync --locked --group dev --quiet

demo: sync-core
	@$(UV) run --no-sync kdforge demo

# in parallel, a worker per core (pytest-xdist; the torchrun tests share one worker, one after the other)
PYTEST := pytest -q -n auto --maxprocesses 4 --dist loadgroup

# the checks of `lint` first; mypy (one core, ~40 s from cold) runs beside the tests, and either failing fails
test: style
	@$(UV) run --no-sync mypy src/kdforge & types=$$!; \
	$(UV) run --no-sync $(PYTEST); tests=$$?; \
	wait $$types || exit 1; exit $$tests

# ruff (lint and format, pyproject.toml), the import contracts (no arrow back up the layers, the core never imports a
# family) and mypy on the core
lint: style
	@$(UV) run --no-sync mypy src/kdforge

style: sync-dev
	@$(UV) run --no-sync ruff check --quiet src tests benchmarks
	@$(UV) run --no-sync ruff format --check --quiet src tests benchmarks
	@$(UV) run --no-sync lint-imports --no-cache --no-logo

test-all: sync-dev
	@$(UV) run --no-sync $(PYTEST) -m ""

bench: sync-dev
	@$(UV) run --no-sync python benchmarks/overhead.py

clean:
	rm -rf runs .pytest_cache
