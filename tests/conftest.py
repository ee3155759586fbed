"""One local Spark session for the whole test run, and a fresh lake folder per test.

The session loads Delta's JVM connector when ``make setup`` has fetched its
jars, so both lake engines run in it: tests that take the ``engine`` fixture
run once per engine, every other test on ``TEST_ENGINE`` (delta-rs unless
``TEST_LAKE_ENGINE`` says otherwise). Without the jars the delta-spark runs
are skipped with the reason, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jvm_archive
import pytest
from pyspark.sql import SparkSession
from standalone import Cluster, standalone_cluster

from genre_spark.config import Settings, load_settings
from genre_spark.lake import SESSION_ENGINE_CONF, Lake, connector
from genre_spark.pipeline import PipelineResult, run_pipeline

#: pytest-timeout limit of a test marked slow (pyproject's ``timeout`` is everyone else's):
#: room for the shared pipeline lake or a subprocess's own JVM on a busy 2-core machine.
SLOW_TIMEOUT_S = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every slow test the longer limit, unless it names its own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """JVMs this test starts use the class archive once its dump is done (tests/jvm_archive.py).

    ``job_env`` and ``spark_env`` look again when they are called, for JVMs a
    test's fixtures start while the dump is still running.
    """
    jvm_archive.adopt_if_ready()


def pytest_sessionfinish(session: pytest.Session) -> None:
    jvm_archive.stop()


ENGINES = ("delta-rs", "delta-spark")
TEST_ENGINE = os.environ.get("TEST_LAKE_ENGINE", "delta-rs")  # not GENRE_*: those are settings
#: ``GENRE_SPARK__DELTA_JARS`` (the ``spark.delta_jars`` setting) points a checkout
#: without ``make setup`` at another checkout's jars.
DELTA_JARS = connector.delta_jars(os.environ.get("GENRE_SPARK__DELTA_JARS"))
#: Delta's defaults suit large tables on many cores: 50 tasks to rebuild each
#: snapshot would dominate the tests' tiny tables on two cores.
DELTA_TEST_CONF = {"spark.databricks.delta.snapshotPartitions": "2"}


def require_delta_spark(spark: SparkSession) -> None:
    """Skip (fail under CI=true) a delta-spark run when the session has no Delta connector."""
    if connector.session_has_connector(spark):
        return
    reason = "Delta's connector jars are missing: run make setup (or set GENRE_SPARK__DELTA_JARS)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the delta-spark engine must be tested)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = tmp_path_factory.mktemp("warehouse")
    # In the background, beside this session's own start: later JVMs start faster.
    jvm_archive.start_dump(tmp_path_factory.mktemp("jvm-archive"), DELTA_JARS)
    delta: dict[str, str] = connector.connector_conf(DELTA_JARS) if DELTA_JARS else {}
    builder = SparkSession.builder
    for key, value in {**delta, **DELTA_TEST_CONF, SESSION_ENGINE_CONF: TEST_ENGINE}.items():
        builder = builder.config(key, value)
    session = (
        builder.master("local[2]")
        .appName("genre-spark-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.task.maxFailures", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.memory", "3g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing at a fresh lake under the test's temporary folder."""
    return load_settings(
        overrides={"lake": str(tmp_path / "lake"), "reports": str(tmp_path / "reports")}, environ={}
    )


@pytest.fixture
def lake(spark: SparkSession, settings: Settings) -> Lake:
    return Lake(spark, settings.lake, settings.engine)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, spark: SparkSession) -> str:
    """Each lake engine in turn; delta-spark needs the connector in the session."""
    if request.param == "delta-spark":
        require_delta_spark(spark)
    return str(request.param)


@pytest.fixture
def engine_lake(spark: SparkSession, settings: Settings, engine: str) -> Lake:
    """A fresh lake on the ``engine`` under test."""
    return Lake(spark, settings.lake, engine)  # type: ignore[arg-type]


#: A small but complete pipeline: every stage, every table, in about two minutes.
SMALL_PIPELINE = {
    "ingest.synthetic.tracks": 1500,
    "ingest.synthetic.partitions": 2,
    "train.epochs": 4,
    "train.patience": 2,
    "train.min_epoch_steps": 1,  # 4 epochs, not scaled up for the small catalogue (tests/test_train)
    "train.members": 2,
    "train.references.rf_trees": 10,
    "train.references.xgb_rounds": 30,
    "train.references.lr_max_iter": 30,
    "report.sample_size": 500,
}


def small_pipeline_settings(root: Path, **overrides: Any) -> Settings:
    return load_settings(
        overrides={
            "lake": str(root / "lake"),
            "reports": str(root / "reports"),
            **SMALL_PIPELINE,
            **overrides,
        },
        environ={},
    )


@pytest.fixture(scope="session")
def pipeline_run(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Lake, PipelineResult]:
    """Run the whole pipeline once on a small synthetic catalog; tests share the lake it wrote."""
    settings = small_pipeline_settings(tmp_path_factory.mktemp("pipeline"))
    lake = Lake(spark, settings.lake, settings.engine)
    result = run_pipeline(lake, settings)
    return settings, lake, result


@pytest.fixture
def pipeline_copy(
    spark: SparkSession,
    pipeline_run: tuple[Settings, Lake, PipelineResult],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> tuple[Settings, Lake]:
    """A private copy of the shared pipeline lake (MLflow registry included) to change freely.

    Its own experiment (named after the test) keeps new runs' artifacts under
    the copy (an experiment stores its artifact folder as an absolute path);
    registered versions keep pointing at the original's artifacts, which stay
    in place for the session.
    """
    import shutil

    settings, _, _ = pipeline_run
    shutil.copytree(settings.lake, tmp_path / "lake")
    copy = settings.model_copy(
        update={
            "lake": str(tmp_path / "lake"),
            "reports": str(tmp_path / "reports"),
            "mlflow": settings.mlflow.model_copy(update={"experiment": request.node.name}),
        }
    )
    return copy, Lake(spark, copy.lake, copy.engine)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One standalone master with two 1-core workers for every cluster test, stopped at the end.

    Started on first use (a master and two worker JVMs take tens of seconds);
    each test tells its own applications apart by name.
    """
    with standalone_cluster(tmp_path_factory.mktemp("standalone")) as started:
        yield started
