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
    GOLD_FEATURES,
    GOLD_PREPARE_MANIFEST,
    GOLD_SCORED,
    SILVER_TRACKS,
    TABLES,
    UnknownTableError,
    spec,
)
from genre_spark.prepare import manifest

WRITES_CONFUSION = stages.Stage("test", (GOLD_CONFUSION,), (GOLD_CONFUSION,))
#: A stage on a table the caller names, merging into gold.scored (as ``genre score``).
MERGES_SCORED = stages.Stage("test-merge", (), (GOLD_SCORED,), source=SILVER_TRACKS)


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


def test_the_declared_stages_name_catalogue_tables_and_prepare_is_the_catalogues_prepare_set() -> (
    None
):
    for stage in stages.ALL:
        for name in (*stage.inputs, *stage.outputs, *([stage.source] if stage.source else [])):
            assert spec(name).name == name, (stage.name, name)
    by_prepare = {n for n, t in TABLES.items() if t.written_by == "prepare"}
    assert set(stages.PREPARE.outputs) == by_prepare - {GOLD_PREPARE_MANIFEST}
    reading_prepare = {s.name for s in stages.ALL if s.reads_prepare}
    assert reading_prepare == {"train", "tune", "references", "evaluate", "report"}


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


def test_undeclared_reads_of_versions_files_and_existence_are_refused(lake: Lake) -> None:
    with stages.run(lake, WRITES_CONFUSION) as io:
        for look in (io.version, io.files, io.exists):
            with pytest.raises(stages.StageWiringError, match=r"test reads gold\.features"):
                look(GOLD_FEATURES)


def test_a_stage_on_a_chosen_table_reads_that_table_and_only_it(
    spark: SparkSession, lake: Lake
) -> None:
    tracks = spark.createDataFrame([("t1", "rock")], "track_id string, genre string")
    lake.write(tracks, SILVER_TRACKS)
    lake.write(tracks, GOLD_FEATURES)
    with stages.run(lake, MERGES_SCORED) as io:  # the declared default
        assert io.source == SILVER_TRACKS and io.version(SILVER_TRACKS) == 0
        assertDataFrameEqual(io.read(io.source), tracks)
        with pytest.raises(stages.StageWiringError, match=r"reads gold\.features"):
            io.read(GOLD_FEATURES)
    with stages.run(lake, MERGES_SCORED, source=GOLD_FEATURES) as io:  # the caller's choice
        assert io.source == GOLD_FEATURES
        assertDataFrameEqual(io.read(GOLD_FEATURES), tracks)
        with pytest.raises(stages.StageWiringError, match=r"reads silver\.tracks"):
            io.read(SILVER_TRACKS)
    with (
        pytest.raises(UnknownTableError, match=r"gold\.nope"),
        stages.run(lake, MERGES_SCORED, source="gold.nope"),
    ):
        pass
    with (
        pytest.raises(stages.StageWiringError, match="takes no source"),
        stages.run(lake, WRITES_CONFUSION, source=SILVER_TRACKS),
    ):
        pass
    with (
        stages.run(lake, WRITES_CONFUSION) as io,
        pytest.raises(stages.StageWiringError, match="declares no source"),
    ):
        io.source  # noqa: B018


def scored(spark: SparkSession, rows: list[tuple[str, str, str]]) -> DataFrame:
    """gold.scored rows (track_id, model_version, predicted_genre) with fixed probabilities."""
    return spark.createDataFrame(
        [(t, v, g, {g: 1.0}, [g], None) for t, v, g in rows], spec(GOLD_SCORED).schema
    )


def test_a_merge_is_checked_like_a_write_and_upserts_on_the_catalogue_keys(
    spark: SparkSession, lake: Lake
) -> None:
    first = scored(spark, [("t1", "1", "rock"), ("t2", "1", "pop"), ("t1", "2", "jazz")])
    with stages.run(lake, MERGES_SCORED) as io:
        with pytest.raises(stages.SchemaMismatchError, match=r"missing column\(s\) \['top3'\]"):
            io.merge(first.drop("top3"), GOLD_SCORED)
        assert not lake.exists(GOLD_SCORED)
        with pytest.raises(stages.StageWiringError, match=r"writes gold\.confusion"):
            io.merge(confusion(spark), GOLD_CONFUSION)
        created = io.merge(first, GOLD_SCORED)
        # Re-scoring version 1: t1 replaced, t3 added, version 2's row kept.
        again = scored(spark, [("t1", "1", "blues"), ("t3", "1", "rock")])
        merged = io.merge(again, GOLD_SCORED, partitions=[{"model_version": "1"}])
        assert io.written == {GOLD_SCORED: merged} and merged == created + 1
        # The partitions are passed through: a row outside them is refused, nothing committed.
        with pytest.raises(Exception, match=r"outside the partitions written \(model_version=1\)"):
            io.merge(scored(spark, [("t9", "3", "rock")]), GOLD_SCORED, [{"model_version": "1"}])
    assert lake.version(GOLD_SCORED) == merged
    assert lake.partition_columns(GOLD_SCORED) == ["model_version"]
    expected = scored(
        spark, [("t1", "1", "blues"), ("t2", "1", "pop"), ("t3", "1", "rock"), ("t1", "2", "jazz")]
    )
    assertDataFrameEqual(lake.read(GOLD_SCORED), expected)


@pytest.mark.parametrize("stage", [s for s in stages.ALL if s.reads_prepare], ids=lambda s: s.name)
def test_every_stage_reading_prepares_tables_is_refused_while_prepare_is_running(
    lake: Lake, stage: stages.Stage
) -> None:
    manifest.mark_running(lake, stages.PREPARE.outputs)
    with (
        pytest.raises(manifest.IncompletePrepareError, match="did not finish"),
        stages.run(lake, stage),
    ):
        pass
