# genre-spark: `make run` runs the pipeline on the synthetic catalog, `make test` the test suite.
# Both bootstrap what they need: a Java check, a .venv with torch (CPU) installed first, the package.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup java-check run test test-fast lint format bench clean

setup: java-check $(STAMP)

java-check:
	@command -v java >/dev/null 2>&1 || { \
	  echo "error: Java 17+ not found. Spark runs on the JVM: install it (Debian: apt-get install -y openjdk-17-jre-headless) and set JAVA_HOME." >&2; exit 2; }
	@v=$$(java -version 2>&1 | head -1 | sed -E 's/.*version "([0-9]+).*/\1/'); \
	  if [ "$$v" -lt 17 ] 2>/dev/null; then \
	    echo "error: Java $$v found, Spark 4 needs Java 17 or 21 (Debian: apt-get install -y openjdk-17-jre-headless)." >&2; exit 2; fi

# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(BIN)/python jobs/pipeline.py

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf lake reports spark-warehouse .pytest_cache
