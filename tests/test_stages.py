"""The stage runner: declared reads and writes, outputs checked against the catalogue's schemas."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from genre_spark import stages
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_CONFUSION,
    GOLD_EVALUATION,
    GOLD_PREPARE_MANIFEST,
    SILVER_TRACKS,
    TABLES,
    spec,
)

WRITES_CONFUSION = stages.Stage("test", (GOLD_CONFUSION,), (GOLD_CONFUSION,))


def confusion(spark: SparkSession) -> DataFrame:
    rows = [("cnn-v1", "test", "rock", "rock", 3), ("cnn-v1", "test", "rock", "pop", 1)]
    return spark.createDataFrame(rows, spec(GOLD_CONFUSION).schema)


def test_every_table_has_a_schema_its_keys_and_time_columns_are_columns_of() -> None:
    for table in TABLES.values():
        columns = table.schema.fieldNames()
        assert columns and len(set(columns)) == len(columns), table.name
        declared = (*table.keys, *table.partition_by, *table.time_columns)
        assert set(declared) <= set(columns), (table.name, declared)
        assert set(table.stamped_schema().fieldNames()) == set(columns) - set(table.time_columns)


def test_a_matching_output_passes_and_is_written(spark: SparkSession, lake: Lake) -> None:
    with stages.run(lake, WRITES_CONFUSION) as io:
        version = io.write(confusion(spark), GOLD_CONFUSION)
        assertDataFrameEqual(io.read(GOLD_CONFUSION), confusion(spark))
    assert io.written == {GOLD_CONFUSION: version} and lake.version(GOLD_CONFUSION) == version


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop("count"), r"missing column\(s\) \['count'\]"),
        (lambda df: df.withColumn("extra", F.lit(1)), r"unexpected column\(s\) \['extra'\]"),
        (lambda df: df.withColumn("count", F.col("count").cast("string")), "count is string"),
        (lambda df: df.select("split", "model", "genre", "predicted", "count"), "in order"),
    ],
    ids=["missing", "unexpected", "mistyped", "reordered"],
)
def test_an_output_unlike_its_catalogue_schema_is_refused_before_writing(
    spark: SparkSession, lake: Lake, change: Callable[[DataFrame], DataFrame], message: str
) -> None:
    with (
        pytest.raises(stages.SchemaMismatchError, match=message) as raised,
        stages.run(lake, WRITES_CONFUSION) as io,
    ):
        io.write(change(confusion(spark)), GOLD_CONFUSION)
    assert str(raised.value).startswith(GOLD_CONFUSION)
    assert not lake.exists(GOLD_CONFUSION)


def test_undeclared_tables_are_refused(spark: SparkSession, lake: Lake) -> None:
    with stages.run(lake, WRITES_CONFUSION) as io:
        with pytest.raises(stages.StageWiringError, match=r"reads silver\.tracks"):
            io.read(SILVER_TRACKS)
        with pytest.raises(stages.StageWiringError, match=r"writes gold\.evaluation"):
            io.write(confusion(spark), GOLD_EVALUATION)
    assert not lake.exists(GOLD_EVALUATION)


def test_a_prepare_run_that_fails_before_writing_leaves_no_manifest(
    spark: SparkSession, lake: Lake
) -> None:
    """The manifest is marked running at the first write, not at the start."""
    with pytest.raises(RuntimeError, match="before any write"), stages.run(lake, stages.PREPARE):
        raise RuntimeError("fails before any write")
    assert not lake.exists(GOLD_PREPARE_MANIFEST)
