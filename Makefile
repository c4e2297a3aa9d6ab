PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
# Only the directories that exist yet (ruff fails on a missing path).
LINT_PATHS := $(wildcard detector tests bench)

# The exact, hashed versions every install uses (`make lock` re-resolves them: see README).
LOCK := requirements/dev.lock
PIP_TOOLS := pip-tools==7.7.0
LOCK_VENV := .venv-lock
COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

.PHONY: venv demo test bench clean lock

venv: $(STAMP)

# Re-install only when the lock or the project metadata changed since the last install. The
# dependencies come from the lock alone (hash-checked); the project itself is installed without
# resolving anything, and built with the locked setuptools.
$(STAMP): $(LOCK) pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve the newest versions the ranges in pyproject.toml allow, into the two locks:
# requirements/run.lock (what the image installs) and requirements/dev.lock (that, plus the
# test tools and the build backend). Review the diff, run `make test`, commit both.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/python -m pip install --quiet '$(PIP_TOOLS)'; }
	CUSTOM_COMPILE_COMMAND="make lock" $(COMPILE) --upgrade -o requirements/run.lock pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(COMPILE) --upgrade --extra dev -c requirements/run.lock \
		-o requirements/dev.lock pyproject.toml requirements/build.in

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
	rm -rf $(LOCK_VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
