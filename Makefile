# genre-spark: `make run` runs the pipeline on the synthetic catalog, `make test` the test suite.
# Both bootstrap what they need: a Java check, a .venv with torch installed first, the package,
# and Delta's JVM connector jars (Maven Central, once; without them the lake uses delta-rs).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
PYTEST_ARGS ?=
MVN    ?= mvn
DELTA_JARS := jvm/delta/jars/.fetched
S3_JARS    := jvm/s3/jars/.fetched

.PHONY: setup java-check delta-jars s3-jars run test test-fast test-s3 lint format bench clean

setup: java-check $(STAMP) delta-jars

java-check:
	@command -v java >/dev/null 2>&1 || { \
	  echo "error: Java 17+ not found. Spark runs on the JVM: install it (Debian: apt-get install -y openjdk-17-jre-headless) and set JAVA_HOME." >&2; exit 2; }
	@v=$$(java -version 2>&1 | head -1 | sed -E 's/.*version "([0-9]+).*/\1/'); \
	  if [ "$$v" -lt 17 ] 2>/dev/null; then \
	    echo "error: Java $$v found, Spark 4 needs Java 17 or 21 (Debian: apt-get install -y openjdk-17-jre-headless)." >&2; exit 2; fi

# torch first, pinned. On Linux PyPI's torch is the CUDA build (it runs on the CPU): 2.7 GB of
# wheels with nvidia-*, 4.7 GB installed (README). TORCH_INDEX: an index with CPU-only wheels.
TORCH_INDEX ?=
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Delta's connector (jvm/delta/pom.xml says which jars and why), fetched once into jvm/delta/jars.
# Offline or without Maven this warns and carries on: engine auto then uses delta-rs.
delta-jars: $(DELTA_JARS)

$(DELTA_JARS): jvm/delta/pom.xml
	@command -v $(MVN) >/dev/null 2>&1 || { \
	  echo "warning: Maven (mvn) not found, so Delta's connector jars were not fetched; the lake will use delta-rs (Debian: apt-get install -y maven, then make setup)" >&2; exit 0; }
	@rm -rf jvm/delta/jars
	@echo "fetching Delta's connector jars from Maven Central into jvm/delta/jars"
	@if $(MVN) -q -B -f jvm/delta/pom.xml dependency:copy-dependencies \
	     -DincludeScope=runtime -DoutputDirectory=jars; then touch $@; \
	  else rm -rf jvm/delta/jars; \
	    echo "warning: could not fetch Delta's connector jars (offline?); the lake will use delta-rs until make setup succeeds" >&2; fi

# S3A for s3a:// lakes (jvm/s3/pom.xml: hadoop-aws and the AWS SDK modules it needs, 13 MB).
s3-jars: $(S3_JARS)

$(S3_JARS): jvm/s3/pom.xml
	@rm -rf jvm/s3/jars
	$(MVN) -q -B -f jvm/s3/pom.xml dependency:copy-dependencies -DoutputDirectory=jars
	@touch $@

run: setup
	$(BIN)/python jobs/pipeline.py

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# On demand: the pipeline with its lake on s3a:// (moto's S3 server on 127.0.0.1), delta-spark engine.
test-s3: setup s3-jars
	$(BIN)/python -m pip install -q -e '.[dev,s3]'
	TEST_S3_LAKE=1 $(BIN)/python -m pytest -q tests/test_s3_lake.py $(PYTEST_ARGS)

# mypy --strict over genre_spark/ ([tool.mypy] in pyproject.toml says which libraries lack types).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf lake reports spark-warehouse .pytest_cache
