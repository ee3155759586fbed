"""The lake contract on both engines: atomic commits, merge, time travel, SQL, other Delta readers.

Every test that takes ``engine_lake`` runs once on delta-rs and once on
delta-spark (Delta's JVM connector), in the one shared Spark session.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

import duckdb
import duckdb_extensions
import polars as pl
import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from genre_spark.lake import (
    ConcurrentWriteError,
    Lake,
    TableNotFoundError,
    UnknownTableError,
    content_hash,
)
from genre_spark.lake.catalog import BRONZE_QUARANTINE, GOLD_FEATURES, GOLD_MODELS, SILVER_TRACKS

SCHEMA = T.StructType(
    [
        T.StructField("track_id", T.StringType()),
        T.StructField("genre", T.StringType()),
        T.StructField("energy", T.DoubleType()),
        T.StructField("tags", T.ArrayType(T.DoubleType())),
        T.StructField("ingested_at", T.TimestampType()),
    ]
)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def rows(spark: SparkSession, data: list[tuple[str, str, float]]) -> DataFrame:
    return spark.createDataFrame(
        [(t, g, e, [e, e * 2], NOW) for t, g, e in data], SCHEMA
    ).repartition(2)


def test_write_then_read_roundtrip(spark: SparkSession, engine_lake: Lake) -> None:
    df = rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.25), ("c", "jazz", 0.125)])
    version = engine_lake.write(df, SILVER_TRACKS)
    assert version == 0
    assertDataFrameEqual(engine_lake.read(SILVER_TRACKS), df)
    assert engine_lake.path(SILVER_TRACKS).endswith(os.path.join("lake", "silver", "tracks"))


def test_an_empty_append_is_a_commit_of_its_own(spark: SparkSession, engine_lake: Lake) -> None:
    """A stage that quarantines nothing still appends its (empty) batch: one commit, its version."""
    engine_lake.write(rows(spark, [("a", "rock", 0.5)]), SILVER_TRACKS)
    empty = spark.createDataFrame([], SCHEMA)
    assert engine_lake.write(empty, SILVER_TRACKS, mode="append") == 1
    newest_first = [h["operation"] for h in engine_lake.history(SILVER_TRACKS)]
    assert newest_first == ["APPEND", "OVERWRITE"]
    assertDataFrameEqual(engine_lake.read(SILVER_TRACKS), rows(spark, [("a", "rock", 0.5)]))


def test_an_empty_table_reads_as_no_rows_through_the_delta_rs_source(
    spark: SparkSession, tmp_path: Path
) -> None:
    """What a SQL table over delta-rs reads (no Delta catalog): a table of no files is no rows."""
    from genre_spark.lake.deltars import FORMAT

    lake = Lake(spark, str(tmp_path / "lake"), "delta-rs")  # registers the genre_delta source
    lake.write(spark.createDataFrame([], SCHEMA), SILVER_TRACKS)
    read = spark.read.format(FORMAT).option("table_path", lake.path(SILVER_TRACKS)).load()
    assert read.count() == 0
    assert read.columns == SCHEMA.names


def test_overwrite_and_append_are_single_commits_with_history(
    spark: SparkSession, engine_lake: Lake
) -> None:
    engine_lake.write(rows(spark, [("a", "rock", 0.5)]), SILVER_TRACKS)
    engine_lake.write(rows(spark, [("b", "pop", 0.25)]), SILVER_TRACKS, mode="append")
    engine_lake.write(rows(spark, [("c", "jazz", 0.1)]), SILVER_TRACKS)
    assert engine_lake.version(SILVER_TRACKS) == 2
    ops = [h["operation"] for h in engine_lake.history(SILVER_TRACKS)]
    assert ops == ["OVERWRITE", "APPEND", "OVERWRITE"]
    assertDataFrameEqual(engine_lake.read(SILVER_TRACKS), rows(spark, [("c", "jazz", 0.1)]))
    assertDataFrameEqual(
        engine_lake.read(SILVER_TRACKS, version=1),
        rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.25)]),
    )


def test_failed_write_leaves_previous_version_intact(
    spark: SparkSession, engine_lake: Lake
) -> None:
    original = rows(spark, [(str(i), "rock", i / 100) for i in range(50)])
    engine_lake.write(original, SILVER_TRACKS)
    before = engine_lake.content_hash(SILVER_TRACKS)

    @F.udf("double")
    def explode_midway(x: float) -> float:
        if x > 0.3:
            raise RuntimeError("simulated crash in the middle of a write")
        return x

    failing = original.withColumn("energy", explode_midway("energy"))
    with pytest.raises(Exception, match="simulated crash"):
        engine_lake.write(failing, SILVER_TRACKS)
    assert engine_lake.version(SILVER_TRACKS) == 0
    assert engine_lake.content_hash(SILVER_TRACKS) == before


def test_merge_upserts_on_keys(spark: SparkSession, engine_lake: Lake) -> None:
    table = GOLD_MODELS  # not partitioned: test_lake_partitions.py merges partitioned ones
    engine_lake.write(rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.25)]), table)
    engine_lake.merge(rows(spark, [("b", "pop", 0.75), ("c", "jazz", 0.1)]), table, ["track_id"])
    expected = rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.75), ("c", "jazz", 0.1)])
    assertDataFrameEqual(engine_lake.read(table), expected)
    engine_lake.merge(rows(spark, [("b", "pop", 0.75), ("c", "jazz", 0.1)]), table, ["track_id"])
    assertDataFrameEqual(engine_lake.read(table), expected)
    assert engine_lake.history(table)[0]["operation"] == "MERGE"


def test_sql_sees_every_written_table(spark: SparkSession, engine_lake: Lake) -> None:
    engine_lake.write(rows(spark, [("a", "rock", 0.5), ("b", "rock", 0.25)]), SILVER_TRACKS)
    engine_lake.register_sql()
    result = spark.sql("SELECT genre, count(*) AS n FROM silver.tracks GROUP BY genre")
    assertDataFrameEqual(result, spark.createDataFrame([("rock", 2)], "genre string, n long"))
    # Registered once: later commits show without registering again.
    engine_lake.write(rows(spark, [("c", "pop", 0.1)]), SILVER_TRACKS, mode="append")
    assert spark.sql("SELECT count(*) AS n FROM silver.tracks").first()["n"] == 3
    engine_lake.merge(rows(spark, [("d", "jazz", 0.2)]), SILVER_TRACKS, ["track_id"])
    assert spark.sql("SELECT count(*) AS n FROM silver.tracks").first()["n"] == 4


def test_a_write_runs_no_sql_ddl(spark: SparkSession, engine_lake: Lake) -> None:
    """Writes leave the SQL catalogue alone: registration is register_sql's, once per command."""
    spark.sql("CREATE DATABASE IF NOT EXISTS gold")
    spark.sql("DROP TABLE IF EXISTS gold.models")
    engine_lake.write(rows(spark, [("a", "rock", 0.5)]), GOLD_MODELS)
    engine_lake.merge(rows(spark, [("b", "pop", 0.5)]), GOLD_MODELS, ["track_id"])
    assert not spark.catalog.tableExists(GOLD_MODELS)
    engine_lake.register_sql()
    assert spark.sql("SELECT count(*) AS n FROM gold.models").first()["n"] == 2


def test_other_delta_readers_see_the_same_table(spark: SparkSession, engine_lake: Lake) -> None:
    data = [(f"t{i}", "rock" if i % 2 else "pop", i / 10) for i in range(20)]
    engine_lake.write(rows(spark, data), SILVER_TRACKS)
    engine_lake.write(rows(spark, data[:5]), SILVER_TRACKS, mode="append")
    path = engine_lake.path(SILVER_TRACKS)
    expected_sum = round(sum(e for _, _, e in data) + sum(e for _, _, e in data[:5]), 9)

    duckdb_extensions.import_extension("delta")
    con = duckdb.connect()
    con.execute("LOAD delta")
    n, total = con.execute(f"SELECT count(*), sum(energy) FROM delta_scan('{path}')").fetchone()
    assert (n, round(total, 9)) == (25, expected_sum)

    frame = pl.read_delta(path)
    assert frame.height == 25 and round(frame["energy"].sum(), 9) == expected_sum
    assert DeltaTable(path).to_pyarrow_table().num_rows == 25


def test_vacuum_removes_orphans_and_old_files_only(spark: SparkSession, engine_lake: Lake) -> None:
    engine_lake.write(rows(spark, [("a", "rock", 0.5)]), SILVER_TRACKS)
    engine_lake.write(rows(spark, [("b", "pop", 0.25)]), SILVER_TRACKS)
    orphan = os.path.join(
        engine_lake.path(SILVER_TRACKS), "part-orphan-from-a-killed-writer.parquet"
    )
    with open(orphan, "wb") as handle:
        handle.write(b"not a parquet file")
    removed = engine_lake.vacuum(SILVER_TRACKS)
    assert orphan in removed
    live = set(engine_lake.files(SILVER_TRACKS))
    on_disk = {
        os.path.join(engine_lake.path(SILVER_TRACKS), f)
        for f in os.listdir(engine_lake.path(SILVER_TRACKS))
        if f.endswith(".parquet")
    }
    assert on_disk == live
    assertDataFrameEqual(engine_lake.read(SILVER_TRACKS), rows(spark, [("b", "pop", 0.25)]))


def test_tables_lists_versions_and_rows(spark: SparkSession, engine_lake: Lake) -> None:
    engine_lake.write(rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.25)]), SILVER_TRACKS)
    engine_lake.write(rows(spark, [("x", "rock", 0.5)]), BRONZE_QUARANTINE)
    infos = {(i.name, i.version, i.rows) for i in engine_lake.tables()}
    assert infos == {(SILVER_TRACKS, 0, 2), (BRONZE_QUARANTINE, 0, 1)}


def in_threads(*fns: object) -> tuple[list[object], list[BaseException]]:
    """Start callables together in threads; their results and exceptions."""
    start = threading.Barrier(len(fns))
    results: list[object] = []
    errors: list[BaseException] = []

    def go(fn: object) -> None:
        start.wait()
        try:
            results.append(fn())  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(fn,)) for fn in fns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return results, errors


def test_concurrent_appends_both_land_and_each_returns_its_own_version(
    spark: SparkSession, engine_lake: Lake
) -> None:
    engine_lake.write(rows(spark, [("v0", "rock", 0.0)]), SILVER_TRACKS)
    a = rows(spark, [(f"a{i}", "pop", i / 10) for i in range(5)])
    b = rows(spark, [(f"b{i}", "jazz", i / 10) for i in range(3)])
    results, errors = in_threads(
        lambda: ("a", engine_lake.write(a, SILVER_TRACKS, mode="append")),
        lambda: ("b", engine_lake.write(b, SILVER_TRACKS, mode="append")),
    )
    assert errors == [], [str(e)[:2000] for e in errors]
    assert sorted(v for _, v in results) == [1, 2]  # type: ignore[misc]
    for tag, version in results:  # type: ignore[misc]
        added = engine_lake.read(SILVER_TRACKS, version).exceptAll(
            engine_lake.read(SILVER_TRACKS, version - 1)
        )
        assertDataFrameEqual(added, a if tag == "a" else b)
    assertDataFrameEqual(
        engine_lake.read(SILVER_TRACKS), rows(spark, [("v0", "rock", 0.0)]).union(a).union(b)
    )


def test_a_merge_never_drops_a_write_that_committed_while_it_ran(
    spark: SparkSession, engine_lake: Lake, tmp_path: Path
) -> None:
    """The merge's source waits until an append has committed: the merge loses, or keeps it."""
    table = GOLD_MODELS
    base = rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.25)])
    appended = rows(spark, [("c", "jazz", 0.1)])
    engine_lake.write(base, table)
    started, go = tmp_path / "merge-started", tmp_path / "append-committed"

    @F.udf("double")
    def wait_for_the_append(energy: float) -> float:
        started.touch()
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return energy

    update = rows(spark, [("b", "pop", 0.75)]).withColumn("energy", wait_for_the_append("energy"))

    def append_while_the_merge_runs() -> int:
        deadline = time.monotonic() + 300
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            return engine_lake.write(appended, table, mode="append")
        finally:
            go.touch()

    _, errors = in_threads(
        lambda: engine_lake.merge(update, table, keys=["track_id"]), append_while_the_merge_runs
    )
    after_append = base.union(appended)
    if errors:  # the merge lost the race, said so, and the append stands alone
        assert len(errors) == 1 and isinstance(errors[0], ConcurrentWriteError), errors
        assert engine_lake.path(table) in str(errors[0])
        assertDataFrameEqual(engine_lake.read(table), after_append)
    else:  # Delta rebased the merge onto the append: both are in
        merged = rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.75), ("c", "jazz", 0.1)])
        assertDataFrameEqual(engine_lake.read(table), merged)


def test_content_hash_ignores_order_and_wall_clock(spark: SparkSession) -> None:
    a = rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.25)])
    b = rows(spark, [("b", "pop", 0.25), ("a", "rock", 0.5)]).withColumn(
        "ingested_at", F.current_timestamp()
    )
    changed = rows(spark, [("a", "rock", 0.5), ("b", "pop", 0.26)])
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(changed)


def test_unknown_and_missing_tables_have_clear_errors(lake: Lake) -> None:
    with pytest.raises(UnknownTableError, match="known tables"):
        lake.path("silver.nope")
    with pytest.raises(TableNotFoundError, match="run the stage that writes it"):
        lake.read(GOLD_FEATURES)
