# The two commands: `make demo` (set up, audit sample_input/) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv docker-test bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/mia-robustness audit sample_input/ --format json -o out/demo-report.json
	$(BIN)/mia-robustness summary out/demo-report.json

# Two test processes (pytest-xdist): most of a test's time is one process busy (a sandbox child starting,
# then the audit) while the other waits, so on 2 cores a second runs beside it. --dist worksteal gives
# each process half of the tests in file order and lets the one that runs out take half of what the other
# has left: a module's tests mostly stay in one process (its module-scoped servers and fitted models are
# built once, not once per process, as xdist's default handing-out in interleaved chunks did), and
# neither process idles while the other has a queue. (Whole files per process balance badly:
# test_hostile_models alone outlasts the rest of its half.) PYTEST_WORKERS=0 runs the suite in this one
# process.
PYTEST_WORKERS ?= 2
PYTEST_DIST := $(if $(filter 0,$(PYTEST_WORKERS)),,--dist worksteal)

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_DIST) --durations=15

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# The image's checks are tests/test_image.py: they run in the venv's pytest against the built image.
docker-test: $(STAMP)
	bash .ci/docker-test

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/sweep.py --standard --write bench/RESULTS.md

clean:
	rm -rf $(VENV) out .pytest_cache
