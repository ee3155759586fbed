"""Partitioned tables on both engines: a replace or a merge rewrites only its partitions.

gold.scored (by model_version) stands in for any partitioned table. After a
scoped write every file of the other partitions is still in the snapshot,
the same path; the table equals the same rows written from scratch; every
Delta reader (Spark, DuckDB, Polars) gets the partition values back; the
previous version stays readable. ``optimize`` compacts and checkpoints.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator

import duckdb
import duckdb_extensions
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.ingest.land import source_key, source_key_column
from genre_spark.lake import ConcurrentWriteError, Lake, PartitionError, content_hash
from genre_spark.lake.catalog import BRONZE_TRACKS_RAW, GOLD_SCORED
from genre_spark.lake.engine import CHECKPOINT_INTERVAL_KEY, ArrowMap
from genre_spark.lake.partitions import folder

KEYS = ["track_id", "model_version"]
SCHEMA = "track_id string, model_version string, p double"


def scored(spark: SparkSession, versions: dict[str, range], p: float = 0.5) -> DataFrame:
    data = [(f"t{i}", v, p + i / 100) for v, ids in versions.items() for i in ids]
    return spark.createDataFrame(data, SCHEMA).repartition(2)


def files_by_partition(path: str) -> dict[str, set[str]]:
    """The snapshot's data files per model_version, as the Delta log states them."""
    actions = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()
    files: dict[str, set[str]] = defaultdict(set)
    for action in actions:
        files[action["partition.model_version"]].add(action["path"])
    return dict(files)


def test_replace_swaps_one_partition_and_keeps_every_other_file(
    spark: SparkSession, engine_lake: Lake
) -> None:
    base = scored(spark, {"1": range(6), "2": range(4), "3": range(3)})
    assert engine_lake.write(base, GOLD_SCORED) == 0
    before = files_by_partition(engine_lake.path(GOLD_SCORED))
    assert sorted(before) == ["1", "2", "3"]

    new = scored(spark, {"2": range(10, 13)}, p=0.9)
    assert engine_lake.replace(new, GOLD_SCORED, [{"model_version": "2"}]) == 1

    after = files_by_partition(engine_lake.path(GOLD_SCORED))
    assert after["1"] == before["1"] and after["3"] == before["3"]
    assert not after["2"] & before["2"]
    expected = scored(spark, {"1": range(6), "3": range(3)}).union(new)
    assertDataFrameEqual(engine_lake.read(GOLD_SCORED), expected)
    assertDataFrameEqual(engine_lake.read(GOLD_SCORED, version=0), base)  # time travel
    assert engine_lake.history(GOLD_SCORED)[0]["operation"] == "REPLACE"
    assert engine_lake.partition_columns(GOLD_SCORED) == ["model_version"]

    path = engine_lake.path(GOLD_SCORED)
    want = [("1", 6), ("2", 3), ("3", 3)]
    duckdb_extensions.import_extension("delta")
    con = duckdb.connect()
    con.execute("LOAD delta")
    sql = f"SELECT model_version, count(*) FROM delta_scan('{path}') GROUP BY 1 ORDER BY 1"
    assert con.execute(sql).fetchall() == want
    polars = pl.read_delta(path).group_by("model_version").len().sort("model_version").rows()
    assert polars == want
    engine_lake.register_sql()
    spark_sql = spark.sql(
        f"SELECT model_version, count(*) AS n FROM {GOLD_SCORED} GROUP BY 1 ORDER BY 1"
    )
    assert [tuple(r) for r in spark_sql.collect()] == want


def test_a_scoped_merge_rewrites_only_the_partitions_of_its_source(
    spark: SparkSession, engine_lake: Lake
) -> None:
    engine_lake.write(scored(spark, {"1": range(5), "2": range(5)}), GOLD_SCORED)
    before = files_by_partition(engine_lake.path(GOLD_SCORED))

    update = scored(spark, {"3": range(3, 8)}, p=0.7)  # a new version, as genre score adds
    engine_lake.merge(update, GOLD_SCORED, KEYS, partitions=[{"model_version": "3"}])
    again = scored(spark, {"2": range(3, 8)}, p=0.8)  # partitions found from the rows
    engine_lake.merge(again, GOLD_SCORED, KEYS)

    after = files_by_partition(engine_lake.path(GOLD_SCORED))
    assert after["1"] == before["1"]
    assert not after["2"] & before["2"]
    # The same rows computed from scratch, in one plain write:
    recompute = scored(spark, {"1": range(5), "2": range(3)}).union(again).union(update)
    assert content_hash(engine_lake.read(GOLD_SCORED)) == content_hash(recompute)
    versions = engine_lake.version(GOLD_SCORED)
    engine_lake.merge(again, GOLD_SCORED, KEYS)  # re-run: identical content
    assert engine_lake.version(GOLD_SCORED) == versions + 1
    assert content_hash(engine_lake.read(GOLD_SCORED)) == content_hash(recompute)


def test_a_covered_merge_is_the_merge_and_loses_to_a_commit_in_its_partition(
    spark: SparkSession, engine_lake: Lake
) -> None:
    """``covered_at``: the caller found, at that version, every row of the partition matched by
    the source. The result is the merge's; on delta-rs it is a replace checked against that
    version, so a commit to the partition since then (rows the source does not have) makes it
    lose instead of vanishing, and a commit to another partition does not."""
    engine_lake.write(scored(spark, {"1": range(5), "2": range(5)}), GOLD_SCORED)
    before = files_by_partition(engine_lake.path(GOLD_SCORED))
    update = scored(spark, {"2": range(5)}, p=0.8)
    scope = [{"model_version": "2"}]

    engine_lake.merge(update, GOLD_SCORED, KEYS, scope, covered_at=engine_lake.version(GOLD_SCORED))

    assert files_by_partition(engine_lake.path(GOLD_SCORED))["1"] == before["1"]
    recompute = scored(spark, {"1": range(5)}).union(update)
    assert content_hash(engine_lake.read(GOLD_SCORED)) == content_hash(recompute)

    at = engine_lake.version(GOLD_SCORED)
    engine_lake.merge(scored(spark, {"1": range(5, 7)}), GOLD_SCORED, KEYS)  # another partition
    engine_lake.merge(update, GOLD_SCORED, KEYS, scope, covered_at=at)
    at = engine_lake.version(GOLD_SCORED)
    late = scored(spark, {"2": range(5, 7)}, p=0.3)  # lands in the partition after ``at``
    engine_lake.merge(late, GOLD_SCORED, KEYS, scope)
    if engine_lake.engine.name == "delta-rs":
        with pytest.raises(ConcurrentWriteError, match="partition model_version=2"):
            engine_lake.merge(update, GOLD_SCORED, KEYS, scope, covered_at=at)
    else:  # delta-spark merges (Delta cannot check a replaceWhere against an older version)
        engine_lake.merge(update, GOLD_SCORED, KEYS, scope, covered_at=at)
    recompute = scored(spark, {"1": range(7)}).union(update).union(late)
    assert content_hash(engine_lake.read(GOLD_SCORED)) == content_hash(recompute)


def test_rows_outside_the_named_partitions_fail_the_write_before_it_commits(
    spark: SparkSession, engine_lake: Lake
) -> None:
    engine_lake.write(scored(spark, {"1": range(3)}), GOLD_SCORED)
    stray = scored(spark, {"2": range(2), "9": range(1)})
    with pytest.raises(Exception, match=r"lies outside the partitions written \(model_version=2\)"):
        engine_lake.replace(stray, GOLD_SCORED, [{"model_version": "2"}])
    with pytest.raises(Exception, match="lies outside the partitions written"):
        engine_lake.merge(stray, GOLD_SCORED, KEYS, partitions=[{"model_version": "2"}])
    with pytest.raises(PartitionError, match=r"partitioned by \['model_version'\]"):
        engine_lake.replace(stray, GOLD_SCORED, [{"genre": "x"}])
    assert engine_lake.version(GOLD_SCORED) == 0
    assertDataFrameEqual(engine_lake.read(GOLD_SCORED), scored(spark, {"1": range(3)}))


def test_a_table_from_before_the_partitioning_is_laid_out_by_its_next_write(
    spark: SparkSession, engine_lake: Lake
) -> None:
    rows = scored(spark, {"1": range(4), "2": range(2)})
    engine_lake.engine.write(
        rows, engine_lake.path(GOLD_SCORED), True, "OVERWRITE"
    )  # unpartitioned
    assert engine_lake.partition_columns(GOLD_SCORED) == []
    new = scored(spark, {"2": range(5, 7)})
    engine_lake.merge(new, GOLD_SCORED, KEYS, partitions=[{"model_version": "2"}])
    assert engine_lake.partition_columns(GOLD_SCORED) == []  # merged whole, as before
    engine_lake.replace(new, GOLD_SCORED, [{"model_version": "2"}])
    assert engine_lake.partition_columns(GOLD_SCORED) == ["model_version"]
    expected = scored(spark, {"1": range(4)}).union(new)
    assert content_hash(engine_lake.read(GOLD_SCORED)) == content_hash(expected)


def test_genre_optimize_lays_out_an_unpartitioned_table_then_replaces_keep_other_files(
    spark: SparkSession, engine_lake: Lake
) -> None:
    rows = scored(spark, {"1": range(4), "2": range(2)})
    engine_lake.engine.write(
        rows, engine_lake.path(GOLD_SCORED), True, "OVERWRITE"
    )  # unpartitioned
    args = [
        "optimize",
        GOLD_SCORED,
        "--lake",
        engine_lake.root,
        "--set",
        f"engine={engine_lake.engine.name}",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "log checkpointed at version" in result.output
    assert engine_lake.partition_columns(GOLD_SCORED) == ["model_version"]
    assert content_hash(engine_lake.read(GOLD_SCORED)) == content_hash(rows)
    before = files_by_partition(engine_lake.path(GOLD_SCORED))
    engine_lake.replace(scored(spark, {"2": range(9, 10)}), GOLD_SCORED, [{"model_version": "2"}])
    assert files_by_partition(engine_lake.path(GOLD_SCORED))["1"] == before["1"]


def test_optimize_compacts_small_files_and_checkpoints_the_log(
    spark: SparkSession, engine_lake: Lake
) -> None:
    engine_lake.write(scored(spark, {"1": range(4), "2": range(4)}), GOLD_SCORED)
    for start in (10, 20, 30):
        engine_lake.write(scored(spark, {"1": range(start, start + 2)}), GOLD_SCORED, mode="append")
    path = engine_lake.path(GOLD_SCORED)
    before = files_by_partition(path)
    content = engine_lake.content_hash(GOLD_SCORED)
    assert DeltaTable(path).metadata().configuration[CHECKPOINT_INTERVAL_KEY] == "10"

    result = engine_lake.optimize(GOLD_SCORED)

    after = files_by_partition(path)
    assert len(after["1"]) == 1 < len(before["1"])  # every small file of the partition, one file
    assert result.files_removed == sum(len(f) for f in before.values() if len(f) > 1)
    assert engine_lake.content_hash(GOLD_SCORED) == content
    assert result.checkpoint_version == engine_lake.version(GOLD_SCORED)
    checkpoint = f"{result.checkpoint_version:020d}.checkpoint.parquet"
    assert checkpoint in os.listdir(os.path.join(path, "_delta_log"))
    assert engine_lake.history(GOLD_SCORED)[0]["operation"] == "OPTIMIZE"


def test_the_source_key_is_the_same_in_python_and_in_spark(spark: SparkSession) -> None:
    sources = ["csv:/data/a b/ü.csv", "synthetic", "csv:/x/" + "y" * 300 + ".csv"]
    got = spark.createDataFrame([(s,) for s in sources], "source string").select(
        source_key_column()
    )
    keys = [source_key(s) for s in sources]
    assert [r[0] for r in got.collect()] == keys
    assert len(set(keys)) == 3 and all(len(k) == 16 and k.isalnum() for k in keys)


def test_partition_values_a_folder_name_would_have_to_escape_are_refused() -> None:
    assert folder({"v": "12", "k": None}, ["v", "k"]) == "v=12/k=__HIVE_DEFAULT_PARTITION__"
    with pytest.raises(PartitionError, match=r"'a/b' of v must be letters, digits or \._\+-"):
        folder({"v": "a/b"}, ["v"])


def test_a_mapped_merge_is_the_merge_of_the_mapped_rows_and_keeps_other_files(
    spark: SparkSession, engine_lake: Lake
) -> None:
    """``merge_mapped``: the rows of ``mapping.over(read(source))``, merged. A covered one (on
    delta-rs run over the source's files, no row through Spark) gives the same table as the
    plain merge, leaves other partitions' files as they were and restores the source's
    partition values from its log; a row outside the partitions fails before any commit."""
    source = spark.createDataFrame(
        [(f"s{i % 3}", f"t{i}", i / 10) for i in range(9)],
        "source_key string, track_id string, x double",
    ).repartition(3)
    engine_lake.write(source, BRONZE_TRACKS_RAW)  # partitioned by source_key: 3 partitions
    engine_lake.write(scored(spark, {"1": range(5), "2": range(5)}), GOLD_SCORED)
    before = files_by_partition(engine_lake.path(GOLD_SCORED))

    def rows(batches: Iterator[pa.RecordBatch], version: str = "2") -> Iterator[pa.RecordBatch]:
        for batch in batches:  # p depends on the partition value: it must come back
            digit = pa.compute.cast(
                pa.compute.utf8_slice_codeunits(batch["source_key"], 1), "double"
            )
            p = pa.compute.add(batch["x"], digit)
            versions = pa.array([version] * batch.num_rows)
            yield pa.RecordBatch.from_arrays(
                [batch["track_id"], versions, p], ["track_id", "model_version", "p"]
            )

    schema = spark.createDataFrame([], SCHEMA).schema
    mapping = ArrowMap(("track_id", "source_key", "x"), rows, schema)
    scope = [{"model_version": "2"}]
    expected = scored(spark, {"1": range(5)}).union(mapping.over(source))
    at = engine_lake.version(GOLD_SCORED)

    version = engine_lake.merge_mapped(BRONZE_TRACKS_RAW, mapping, GOLD_SCORED, KEYS, scope, at)

    assert version == at + 1
    assertDataFrameEqual(engine_lake.read(GOLD_SCORED), expected)
    assert sorted(
        r["p"] for r in engine_lake.read(GOLD_SCORED).where("model_version = '2'").collect()
    ) == sorted(i % 3 + i / 10 for i in range(9))
    assert files_by_partition(engine_lake.path(GOLD_SCORED))["1"] == before["1"]
    uncovered = engine_lake.merge_mapped(BRONZE_TRACKS_RAW, mapping, GOLD_SCORED, KEYS, scope)
    assertDataFrameEqual(engine_lake.read(GOLD_SCORED, uncovered), expected)  # the plain merge

    def elsewhere(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return rows(batches, version="3")

    wrong = ArrowMap(mapping.columns, elsewhere, schema)
    latest = engine_lake.version(GOLD_SCORED)
    with pytest.raises(Exception, match="outside the partitions written"):
        engine_lake.merge_mapped(BRONZE_TRACKS_RAW, wrong, GOLD_SCORED, KEYS, scope, latest)
    assert engine_lake.version(GOLD_SCORED) == latest
