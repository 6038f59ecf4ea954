# The two commands: `make run` and `make test`. Both build the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
HOST ?= 127.0.0.1
PORT ?= 8080
# Development secret for `make run` only; production sets HUB_JWT_SECRET itself.
DEV_SECRET := dev-secret-change-me-0123456789abcdef

.PHONY: venv lock run test lint format check-services migrate token clean bench test-tools

# The project and its dev extras at exactly the versions in requirements.lock (pyproject.toml
# says which versions may be used, the lock which are); renewed when either file changes.
venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	$(BIN)/pip check
	@sh scripts/check-lock.sh $(BIN) $(LOCK)
	touch $(STAMP)

# Renew requirements.lock from pyproject.toml's ranges in a fresh environment: after changing a
# dependency, or to take newer releases. Then run the tests and commit both files.
lock:
	sh scripts/lock.sh $(PYTHON) $(LOCK)

check-services: venv
	@$(BIN)/python -m hub check

migrate: venv
	$(BIN)/python -m hub migrate

run: venv check-services migrate
	@HUB_JWT_SECRET=$${HUB_JWT_SECRET:-$(DEV_SECRET)} HUB_CONSOLE_DEV_TOKENS=$${HUB_CONSOLE_DEV_TOKENS:-1} \
	  $(BIN)/python -m hub run-local --host $(HOST) --port $(PORT)

# A development token for `make run`'s secret: make token ID=alice ROLE=streamer
ID ?= alice
token: venv
	@HUB_JWT_SECRET=$${HUB_JWT_SECRET:-$(DEV_SECRET)} $(BIN)/python -m hub token $(ID) \
	  $(if $(ROLE),--role $(ROLE),) $(if $(NAME),--name $(NAME),)

# The programs the tests drive (nginx, haproxy, Debian's chromium), installed when missing (root
# with apt-get), never left running as services.
test-tools:
	@sh scripts/ensure-test-tools.sh

test: venv lint test-tools
	$(BIN)/python -m pytest

# Benchmarks against the local Redis and MySQL: two workers, a flusher, six workloads, a few
# minutes. One workload: .venv/bin/python -m tests.bench.run --workload joins [--seconds S] [--smoke]
bench: venv
	$(BIN)/python -m tests.bench.run

# ruff (lint and layout) and mypy (types, at the strictness pyproject.toml states).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Lay the code out as `make lint` wants it and apply ruff's safe fixes; what is left it lists.
format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache
