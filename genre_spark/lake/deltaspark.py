"""The delta-spark engine: Delta's own JVM connector, for sessions that have it loaded.

Chosen when the session has Delta's jars, SQL extension and catalog
(``make setup`` locally, ``--packages io.delta:delta-spark_4.2_2.13:4.4.0`` on
a cluster, built into Databricks). Writes, MERGE, history, time travel and
vacuum are Delta's own, so a lake on an object store (``s3a://``) works where
every executor reaches it. The guarantees match the delta-rs engine's: every
write and merge records a write id in the commit's ``userMetadata`` and
returns the version of the commit carrying it (not the table's latest, which
a concurrent writer may have moved on), and Delta's conflict exceptions
become :class:`ConcurrentWriteError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from pyspark.sql import DataFrame, SparkSession

if TYPE_CHECKING:
    import pyarrow as pa

from genre_spark.lake.engine import (
    ABSENT,
    CHECKPOINT_INTERVAL_KEY,
    WRITE_ID_KEY,
    ArrowMap,
    Compaction,
    ConcurrentWriteError,
    commit_tags,
    delta_table_ddl,
    local_path,
    new_write_id,
    operation_of,
    user_metadata,
)
from genre_spark.lake.partitions import Partitions, sql_condition, within

T = TypeVar("T")

#: The session setting Delta reads a commit's ``userMetadata`` from when the
#: operation has no option for it (MERGE through the DeltaTable API).
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
RETENTION_CHECK_CONF = "spark.databricks.delta.retentionDurationCheck.enabled"
#: VACUUM lists a table's folders with this many tasks (Spark's default: 10,000,
#: meant for tables of many partitions on large clusters; a table of a few
#: folders then costs 10,000 empty tasks, minutes on two cores).
LISTING_PARALLELISM_CONF = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
#: Delta skips the commit of a write that adds and removes nothing (an empty
#: append) unless told otherwise; the lake's contract is one commit per write,
#: carrying its write id, on both engines (delta-rs records empty commits).
RECORD_EMPTY_COMMITS = {"spark.databricks.delta.skipRecordingEmptyCommits": "false"}
#: Table features whose snapshots cannot be read as plain Parquet files: rows
#: deleted by a vector, or columns stored under physical names.
UNREADABLE_AS_PARQUET = ("deletionVectors", "columnMapping")

#: MERGE takes its userMetadata from a session-wide setting; merges from
#: threads of one driver are serialised so none commits with another's write id.
_SESSION_CONF_LOCK = threading.Lock()


#: How Delta's conflict exceptions read once Spark has turned them into text.
CONFLICT_MARKERS = (
    "io.delta.exceptions.Concurrent",
    "io.delta.exceptions.MetadataChangedException",
    "io.delta.exceptions.ProtocolChangedException",
    "DELTA_CONCURRENT_",
)


def _is_conflict(exc: BaseException) -> bool:
    """Delta's concurrent-modification family (ConcurrentAppend, ConcurrentDeleteDelete, ...)."""
    from delta.exceptions.base import DeltaConcurrentModificationException

    return isinstance(exc, DeltaConcurrentModificationException) or any(
        marker in str(exc) for marker in CONFLICT_MARKERS
    )


def _committing(path: str, commit: Callable[[], T]) -> T:
    """Run a committing Delta call; a lost commit race becomes ConcurrentWriteError."""
    try:
        return commit()
    except Exception as exc:
        if _is_conflict(exc):
            raise ConcurrentWriteError.lost(path, exc) from exc
        raise


@contextmanager
def _session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Set session settings for one block and put the previous values back."""
    with _SESSION_CONF_LOCK:
        previous: dict[str, str | None] = {key: spark.conf.get(key, None) for key in settings}
        for key, value in settings.items():
            spark.conf.set(key, value)
        try:
            yield
        finally:
            for key, old in previous.items():
                if old is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, old)


def _checkpoint(spark: SparkSession, path: str) -> None:
    """Write a checkpoint of the log at its latest version now.

    The Python API has no call for it; Delta's ``DeltaLog`` (JVM, the same
    call its own commits make every ``delta.checkpointInterval`` commits) does.
    """
    jvm = spark.sparkContext._jvm
    none = jvm.scala.Option.empty()  # type: ignore[union-attr]
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)  # type: ignore[union-attr]
    log.checkpoint(log.update(False, none, none), none)


class DeltaSparkEngine:
    """Table operations through Delta's JVM connector."""

    name = "delta-spark"

    def __init__(self, spark: SparkSession, properties: dict[str, str] | None = None) -> None:
        self.spark = spark
        self.properties = dict(properties or {})
        for key, value in RECORD_EMPTY_COMMITS.items():
            spark.conf.set(key, value)

    def _table(self, path: str) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path)

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, path))

    def partition_columns(self, path: str) -> list[str]:
        return list(self._table(path).detail().select("partitionColumns").first()[0] or [])

    def read(self, path: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(path)

    def write(
        self,
        df: DataFrame,
        path: str,
        overwrite: bool,
        operation: str,
        partition_by: Sequence[str] = (),
        unchanged_since: int | None = None,
    ) -> int:
        """One commit of ``df``; returns that commit's version.

        A table this write creates gets ``properties`` (Delta takes ``delta.*``
        writer options as the new table's properties) and the ``partition_by``
        layout; an overwrite lays the table out by ``partition_by`` again.
        ``unchanged_since`` is checked just before the write starts its Delta
        transaction, whose own conflict check covers the rest: Delta fails an
        overwrite when a commit made while it ran removed any of the files it
        replaces (another overwrite does).
        """
        creates = not self.exists(path)
        if unchanged_since is not None:
            current = ABSENT if creates else self.version(path)
            if current != unchanged_since:
                raise ConcurrentWriteError.lost(
                    path, f"version {current} was committed since version {unchanged_since}"
                )
        writer = (
            df.write.format("delta")
            .mode("overwrite" if overwrite else "append")
            .option("overwriteSchema", "true" if overwrite else "false")
        )
        if partition_by and (overwrite or creates):
            writer = writer.partitionBy(*partition_by)
        if creates:
            writer = writer.options(**self.properties)
        return self._save(writer, path, operation)

    def replace(self, df: DataFrame, path: str, partitions: Partitions, operation: str) -> int:
        """Delta's ``replaceWhere`` on the partition predicate: one commit that removes the
        files of ``partitions`` only (a predicate on partition columns alone touches no
        other file) and adds ``df``'s; Delta checks every row of ``df`` lies within them."""
        writer = (
            df.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", sql_condition(partitions))
        )
        return self._save(writer, path, operation)

    def _save(self, writer: Any, path: str, operation: str) -> int:
        write_id = new_write_id()
        writer = writer.option("userMetadata", user_metadata(operation, write_id))
        _committing(path, lambda: writer.save(path))
        return self._committed_version(path, write_id)

    def append_arrow(self, path: str, table: pa.Table) -> int:
        """Append rows the driver already holds: Spark makes them a DataFrame, then ``write``."""
        return self.write(
            self.spark.createDataFrame(table), path, overwrite=False, operation="APPEND"
        )

    def merge(
        self,
        df: DataFrame,
        path: str,
        keys: list[str],
        partitions: Partitions | None = None,
        covered_at: int | None = None,
    ) -> int:
        """Delta's MERGE on ``keys``: matched rows updated, new rows inserted; that commit's version.

        With ``partitions`` their predicate on the target joins the ON clause:
        Delta then reads and rewrites only those partitions' files, and a
        concurrent commit to another partition does not conflict with it.
        ``covered_at`` is not used: Delta's ``replaceWhere`` cannot be checked
        against an earlier version, so a replace could drop a row committed
        since; the MERGE gives the same rows and sees every commit.
        """
        write_id = new_write_id()
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        if partitions is not None:
            condition = f"({sql_condition(partitions, 't')}) AND {condition}"
        builder = (
            self._table(path)
            .alias("t")
            .merge(df.alias("s"), condition)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
        )
        with _session_conf(self.spark, {USER_METADATA_CONF: user_metadata("MERGE", write_id)}):
            _committing(path, builder.execute)
        return self._committed_version(path, write_id)

    def merge_mapped(
        self,
        source: str,
        source_version: int | None,
        mapping: ArrowMap,
        path: str,
        keys: list[str],
        partitions: Partitions,
        covered_at: int,
    ) -> int:
        """The merge of ``mapping`` over Spark's read of ``source``: Delta's MERGE as ``merge``."""
        rows = within(mapping.over(self.read(source, source_version)), partitions, path)
        return self.merge(rows, path, keys, partitions, covered_at)

    def _committed_version(self, path: str, write_id: str) -> int:
        """The version of the commit carrying ``write_id``, searched newest first."""
        for limit in (32, None):
            history = self._table(path).history(limit) if limit else self._table(path).history()
            for row in history.select("version", "userMetadata").collect():
                if commit_tags(row.asDict()).get(WRITE_ID_KEY) == write_id:
                    return int(row["version"])
        raise RuntimeError(f"write {write_id} reported success but no commit of {path} carries it")

    def version(self, path: str) -> int:
        return int(self._table(path).history(1).first()["version"])

    def history(self, path: str) -> list[dict[str, Any]]:
        rows = (
            self._table(path).history().select("version", "timestamp", "operation", "userMetadata")
        ).collect()
        return [
            {
                "version": int(r["version"]),
                "timestamp": r["timestamp"],
                "operation": operation_of(r.asDict()),
            }
            for r in rows
        ]

    def files(self, path: str) -> list[str]:
        """The snapshot's data files as Delta's file index lists them (no folder listing).

        Training ranks read these files with pyarrow, so a table whose rows are
        not what its Parquet files hold (deletion vectors, column mapping) is refused.
        """
        features = self._table(path).detail().select("tableFeatures").first()["tableFeatures"]
        unreadable = sorted(set(features or []) & set(UNREADABLE_AS_PARQUET))
        if unreadable:
            raise ValueError(
                f"table {path} uses Delta feature(s) {unreadable}: its Parquet files alone do "
                "not give its rows, so they cannot be handed to training; rewrite the table "
                "without them"
            )
        return sorted(local_path(f) for f in self.read(path).inputFiles())

    def rows(self, path: str) -> int:
        return int(self.read(path).count())

    def vacuum(self, path: str) -> list[str]:
        """Delete every file no current snapshot reads (retention 0); returns the deleted files.

        A dry run lists the files first, then the same vacuum deletes them: run
        it while no job writes to the table (as with the delta-rs engine).
        """
        table = f"delta.`{path}`"
        listing = str(self.spark.sparkContext.defaultParallelism)
        with _session_conf(
            self.spark, {RETENTION_CHECK_CONF: "false", LISTING_PARALLELISM_CONF: listing}
        ):
            doomed = self.spark.sql(f"VACUUM {table} RETAIN 0 HOURS DRY RUN").collect()
            self.spark.sql(f"VACUUM {table} RETAIN 0 HOURS").collect()
        return sorted(local_path(r["path"]) for r in doomed)

    def optimize(self, path: str) -> Compaction:
        """Delta's OPTIMIZE (bin-packing per partition, a ``dataChange: false`` commit), the
        table's checkpoint interval aligned with ``properties``, then a log checkpoint."""
        table = f"delta.`{path}`"
        wanted = self.properties.get(CHECKPOINT_INTERVAL_KEY)
        current = self._table(path).detail().select("properties").first()[0] or {}
        if wanted is not None and current.get(CHECKPOINT_INTERVAL_KEY) != wanted:
            self.spark.sql(
                f"ALTER TABLE {table} SET TBLPROPERTIES ('{CHECKPOINT_INTERVAL_KEY}' = '{wanted}')"
            )
        with _session_conf(self.spark, {USER_METADATA_CONF: user_metadata("OPTIMIZE", None)}):
            metrics = _committing(path, self._table(path).optimize().executeCompaction)
        stats = metrics.select("metrics.numFilesAdded", "metrics.numFilesRemoved").first()
        _checkpoint(self.spark, path)
        return Compaction(
            int(stats["numFilesRemoved"]), int(stats["numFilesAdded"]), self.version(path)
        )

    def sql_ddl(self, qualified: str, path: str) -> str:
        return delta_table_ddl(qualified, path)
