# peerpower — two commands do everything on a fresh machine with Python 3.11:
#   make demo   set up .venv, install, clear the sample books, simulate the misono block
#   make test   set up .venv, install, ruff, mypy --strict, pytest (slow tests included)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-ledger bench-consensus bench-simulate bench-api results clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/peerpower demo --examples examples
	$(BIN)/peerpower simulate --scenario misono --days 1 --validators 4 --out out/misono

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/peerpower

pytest: $(STAMP)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		echo "browser test: Chromium found, the dashboard is tested in headless Chromium"; \
	else \
		echo "browser test: NOT RUN - Chromium is not installed here"; \
		echo "  (apt-get install chromium chromium-driver; .ci/run installs them)"; \
	fi
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/peerpower bench clearing

bench-ledger: $(STAMP)
	$(BIN)/peerpower bench ledger --repeat 3

bench-consensus: $(STAMP)
	$(BIN)/peerpower bench consensus

bench-simulate: $(STAMP)
	$(BIN)/peerpower bench simulate

bench-api: $(STAMP)
	$(BIN)/peerpower bench api

results: $(STAMP)
	$(BIN)/peerpower results --out docs/results.md

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info
