# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: demo test test-postgres lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first: the pinned CPU build lies on local disk; a looser request pulls a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sandbox demo

# Two workers (pytest-xdist) for the suite; the deployment tests then run alone, since each
# starts a SuperLink and SuperNodes whose rounds have deadlines.
WORKERS ?= 2

test: $(STAMP)
	scripts/ensure-test-tools
	$(BIN)/python -m pytest -n $(WORKERS) -m "not deployment"
	$(BIN)/python -m pytest -m deployment

# The tests that use a database, again on fresh PostgreSQL databases (the others are
# deselected: they would repeat the SQLite run). The deployment tests are left out: they
# run on PostgreSQL in `make test` already.
test-postgres: $(STAMP)
	scripts/ensure-test-tools
	SANDBOX_TEST_DATABASE=postgres $(BIN)/python -m pytest -n $(WORKERS) -m "not deployment"

# The house rules: style, the import contracts (pyproject.toml) and the types.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .sandbox build *.egg-info
