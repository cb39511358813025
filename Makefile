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

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

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
