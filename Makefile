# Ventana — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench snapshots clean vcsim postgres

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Ventana needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it with apt-get"; \
	  rm -rf $(VENV); \
	  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && \
	  $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	@touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps  ## open the console on the built-in simulated cluster
	$(BIN)/ventana $(ARGS)

vcsim:  ## build the vSphere API simulator test peer (once; cached in .cache/vcsim)
	tools/vcsim/build.sh

postgres:  ## install Debian's PostgreSQL server when missing (team-mode tests start their own)
	@tools/postgres/install.sh >/dev/null

test: $(VENV)/.test-deps vcsim postgres  ## install what tests need and run the whole suite
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q --durations=25

lint: $(VENV)/.test-deps  ## ruff, and the layer contracts (state ↛ backends, tui; backends ↛ tui)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

snapshots: $(VENV)/.test-deps  ## regenerate screenshots/*.svg after a deliberate UI change
	$(BIN)/pytest -q $$(grep -rl snap_compare tests --include='test_*.py') --snapshot-update

bench: $(VENV)/.test-deps vcsim postgres  ## benchmarks: prints a table, writes bench/results/*.json
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
