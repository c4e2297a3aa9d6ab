PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
# Only the directories that exist yet (ruff fails on a missing path).
LINT_PATHS := $(wildcard detector tests bench)

.PHONY: venv demo test bench clean

venv: $(STAMP)

# Re-install only when the project metadata changed since the last install.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/detector scan --format text tests/fixtures/demo/audit.log
	$(BIN)/detector scan --format json tests/fixtures/demo/audit.log | head

test: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
