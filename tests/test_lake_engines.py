"""Which engine a lake gets, and the two engines on one table: each reads, appends, merges and
replaces partitions of what the other wrote; delta-spark's commits are Delta's own."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DELTA_JARS, ENGINES, TEST_ENGINE, require_delta_spark
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from genre_spark.config import Settings, load_settings
from genre_spark.lake import (
    DeltaConnectorMissingError,
    Lake,
    NonLocalLakeError,
    connector,
)
from genre_spark.lake.catalog import GOLD_SCORED, SILVER_TRACKS
from genre_spark.lake.engine import WRITE_ID_KEY
from genre_spark.session import delta_connector_conf

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "track_id string, genre string, energy double"


def frame(spark: SparkSession, data: list[tuple[str, str, float]]) -> DataFrame:
    return spark.createDataFrame(data, SCHEMA).repartition(2)


def scored(spark: SparkSession, data: list[tuple[str, str, float]]) -> DataFrame:
    """Rows for gold.scored, partitioned by its ``model_version``."""
    return spark.createDataFrame(
        data, "track_id string, model_version string, p double"
    ).repartition(2)


def test_auto_takes_the_sessions_engine_and_explicit_names_are_kept(
    spark: SparkSession, tmp_path: Path
) -> None:
    assert Lake(spark, str(tmp_path / "a")).engine.name == TEST_ENGINE
    assert Lake(spark, str(tmp_path / "b"), "delta-rs").engine.name == "delta-rs"
    require_delta_spark(spark)
    assert Lake(spark, str(tmp_path / "c"), "delta-spark").engine.name == "delta-spark"


def test_delta_rs_refuses_an_object_store_lake_naming_delta_spark(spark: SparkSession) -> None:
    with pytest.raises(NonLocalLakeError, match=r"delta-rs engine .* use engine delta-spark"):
        Lake(spark, "s3a://bucket/lake", "delta-rs")


def _settings(engine: str, jars: Path) -> Settings:
    return load_settings(overrides={"engine": engine, "spark.delta_jars": str(jars)}, environ={})


def test_the_session_loads_the_connector_only_where_the_engine_may_use_it(
    spark: SparkSession, tmp_path: Path
) -> None:
    empty = tmp_path / "no-jars"
    empty.mkdir()
    with pytest.raises(DeltaConnectorMissingError, match=r"make setup.*--packages io\.delta"):
        delta_connector_conf(_settings("delta-spark", empty))
    assert delta_connector_conf(_settings("auto", empty)) == {}
    require_delta_spark(spark)
    jars = Path(DELTA_JARS[0]).parent
    assert delta_connector_conf(_settings("delta-rs", jars)) == {}
    conf = delta_connector_conf(_settings("auto", jars))
    assert conf["spark.sql.extensions"] == connector.EXTENSION
    assert conf["spark.sql.catalog.spark_catalog"] == connector.CATALOG
    assert conf["spark.jars"].split(",") == DELTA_JARS


def test_explicit_delta_spark_without_jars_is_a_one_line_error_before_spark_starts(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "no-jars"
    empty.mkdir()
    command = [sys.executable, "-m", "genre_spark.cli", "tables", "--lake", str(tmp_path)]
    command += ["--set", "engine=delta-spark", "--set", f"spark.delta_jars={empty}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000"}  # rich wraps at 80
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the delta-spark engine needs"), lines
    assert "make setup" in lines[0] and "--packages" in lines[0]


def test_auto_without_the_connector_says_once_that_it_uses_delta_rs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connector, "_said_fallback", False)
    with caplog.at_level(logging.WARNING, logger=connector.__name__):
        connector.say_fallback_once("no connector here")
        connector.say_fallback_once("no connector here")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["using the delta-rs engine"]
    assert "make setup" in caplog.records[0].getMessage()


@pytest.mark.parametrize("writer", ENGINES)
def test_each_engine_reads_appends_and_merges_what_the_other_wrote(
    spark: SparkSession, tmp_path: Path, writer: str
) -> None:
    require_delta_spark(spark)
    other = next(e for e in ENGINES if e != writer)
    first = Lake(spark, str(tmp_path / "lake"), writer)  # type: ignore[arg-type]
    second = Lake(spark, str(tmp_path / "lake"), other)  # type: ignore[arg-type]
    table = GOLD_SCORED  # partitioned by model_version: the "genre" of these rows
    keys = ["track_id", "model_version"]
    base = scored(spark, [("a", "rock", 0.5), ("b", "pop", 0.25)])
    assert first.write(base, table) == 0
    assertDataFrameEqual(second.read(table), base)

    assert second.write(scored(spark, [("c", "jazz", 0.1)]), table, mode="append") == 1
    merged = scored(spark, [("b", "pop", 0.75), ("d", "metal", 0.9)])
    assert second.merge(merged, table, keys) == 2
    assert (
        first.replace(scored(spark, [("e", "jazz", 0.3)]), table, [{"model_version": "jazz"}]) == 3
    )
    expected = scored(
        spark, [("a", "rock", 0.5), ("b", "pop", 0.75), ("e", "jazz", 0.3), ("d", "metal", 0.9)]
    )
    for lake in (first, second):
        assert lake.partition_columns(table) == ["model_version"]
        assertDataFrameEqual(lake.read(table), expected)
        assertDataFrameEqual(lake.read(table, version=0), base)
        assert [h["operation"] for h in lake.history(table)] == [
            "REPLACE",
            "MERGE",
            "APPEND",
            "OVERWRITE",
        ]
        assert lake.version(table) == 3
    assert first.files(table) == second.files(table)


def test_delta_spark_commits_carry_deltas_own_engine_info_and_the_write_id(
    spark: SparkSession, tmp_path: Path
) -> None:
    require_delta_spark(spark)
    lake = Lake(spark, str(tmp_path / "lake"), "delta-spark")
    lake.write(frame(spark, [("a", "rock", 0.5)]), SILVER_TRACKS)
    lake.merge(frame(spark, [("a", "rock", 0.6)]), SILVER_TRACKS, ["track_id"])
    log = Path(lake.path(SILVER_TRACKS)) / "_delta_log"
    for version in (0, 1):
        actions = [
            json.loads(line)
            for line in (log / f"{version:020d}.json").read_text().split("\n")
            if line
        ]
        (info,) = [a["commitInfo"] for a in actions if "commitInfo" in a]
        assert re.fullmatch(r"Apache-Spark/4\.2\.\d+ Delta-Lake/4\.4\.\d+", info["engineInfo"]), (
            info
        )
        assert len(json.loads(info["userMetadata"])[WRITE_ID_KEY]) == 32
    assert [a["commitInfo"]["operation"] for a in actions if "commitInfo" in a] == ["MERGE"]
