"""One local Spark session for the whole test run, and a fresh lake folder per test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from genre_spark.config import Settings, load_settings
from genre_spark.lake import Lake
from genre_spark.pipeline import PipelineResult, run_pipeline


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (
        SparkSession.builder.master("local[2]")
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


#: A small but complete pipeline: every stage, every table, in about two minutes.
SMALL_PIPELINE = {
    "ingest.synthetic.tracks": 1500,
    "ingest.synthetic.partitions": 2,
    "train.epochs": 4,
    "train.patience": 2,
    "train.members": 2,
    "train.references.rf_trees": 10,
    "train.references.xgb_rounds": 30,
    "train.references.lr_max_iter": 30,
    "report.sample_size": 500,
}


def small_pipeline_settings(root: Path) -> Settings:
    return load_settings(
        overrides={"lake": str(root / "lake"), "reports": str(root / "reports"), **SMALL_PIPELINE},
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
