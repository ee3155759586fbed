"""The delta-rs engine: Spark executors write Parquet, the driver commits once.

Used where Delta's JVM connector is not on the classpath (laptops, CI here).
Spark's Python Data Source API gives the split of work Delta itself uses:
each write task writes its own Parquet file into the table folder and reports
it; the driver's ``commit`` turns all reports into one Delta transaction with
``deltalake``. A failed job never commits, so readers keep seeing the previous
version; files of failed tasks are orphans that no snapshot references (``genre
vacuum`` removes them). Reads use Spark's native Parquet reader on the exact
file list of the snapshot; the same source also reads (for ``CREATE TABLE ...
USING genre_delta`` in SQL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)

from genre_spark.lake.connector import session_has_connector
from genre_spark.lake.engine import (
    WRITE_ID_KEY,
    ConcurrentWriteError,
    commit_tags,
    delta_table_ddl,
    local_path,
    new_write_id,
    operation_of,
    user_metadata,
)

FORMAT = "genre_delta"


def _arrow_schema(schema: T.StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow = to_arrow_schema(schema, timezone="UTC")
    # Delta columns are stored nullable: Spark's non-null flags are promises
    # about a plan, not constraints we want the log to enforce across engines.
    return pa.schema([f.with_nullable(True) for f in arrow])


def _spark_schema(arrow: pa.Schema) -> T.StructType:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(arrow)


def _table_arrow_schema(path: str, version: int | None = None) -> pa.Schema:
    from deltalake import DeltaTable

    return pa.schema(DeltaTable(path, version=version).schema())


class _FilesWritten(WriterCommitMessage):
    """What one write task reports to the driver: the files it wrote."""

    def __init__(self, files: list[dict[str, Any]]) -> None:
        self.files = files


class _DeltaRsWriter(DataSourceArrowWriter):
    def __init__(
        self,
        path: str,
        schema: T.StructType,
        overwrite: bool,
        operation: str,
        write_id: str | None,
        read_version: int | None = None,
    ) -> None:
        self.path = path
        self.arrow_schema = _arrow_schema(schema)
        self.overwrite = overwrite
        self.operation = operation
        self.write_id = write_id
        self.read_version = read_version

    def write(self, iterator: Iterator[pa.RecordBatch]) -> _FilesWritten:
        import pyarrow.parquet as pq

        os.makedirs(self.path, exist_ok=True)
        # The partition index first: a snapshot's files then sort in the order of
        # the DataFrame's partitions, so readers that split files between workers
        # (training ranks) see the same shards on every run of the same plan.
        from pyspark import TaskContext

        context = TaskContext.get()
        index = context.partitionId() if context is not None else 0
        name = f"part-{index:05d}-{uuid.uuid4().hex}.snappy.parquet"
        full = os.path.join(self.path, name)
        writer = None
        rows = 0
        try:
            for batch in iterator:
                if batch.num_rows == 0:
                    continue
                batch = pa.Table.from_batches([batch]).cast(self.arrow_schema)
                if writer is None:
                    writer = pq.ParquetWriter(full, self.arrow_schema, compression="snappy")
                writer.write_table(batch)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            return _FilesWritten([])
        stat = os.stat(full)
        return _FilesWritten(
            [{"path": name, "size": stat.st_size, "rows": rows, "mtime": int(stat.st_mtime * 1000)}]
        )

    def commit(self, messages: list[_FilesWritten | None]) -> None:
        files = [f for m in messages if m is not None for f in m.files]
        commit_files(
            self.path,
            self.arrow_schema,
            files,
            self.overwrite,
            self.operation,
            self.write_id,
            self.read_version,
        )

    def abort(self, messages: list[_FilesWritten | None]) -> None:
        for message in messages:
            for f in message.files if message is not None else []:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.path, f["path"]))


class _FilePartition(InputPartition):
    def __init__(self, uri: str) -> None:
        self.uri = uri


class _DeltaRsReader(DataSourceReader):
    def __init__(self, uris: list[str], arrow_schema: pa.Schema) -> None:
        self.uris = uris
        self.arrow_schema = arrow_schema

    def partitions(self) -> list[_FilePartition]:
        return [_FilePartition(u) for u in self.uris]

    def read(self, partition: _FilePartition) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(local_path(partition.uri)).iter_batches():
            yield pa.Table.from_batches([batch]).cast(self.arrow_schema).to_batches()[0]


class DeltaRsSource(DataSource):
    """``genre_delta``: a Delta table through delta-rs, for ``df.write`` and SQL tables.

    Options: ``table_path`` (table folder), ``version`` (time travel, read only),
    ``operation`` and ``write_id`` (recorded in the commit, write only),
    ``read_version`` (write only: the version the written rows were computed
    from; the commit then fails if another writer committed since).
    """

    #: Set on the per-table subclasses that SQL tables use (see ``sql_source``):
    #: Spark passes no OPTIONS to a Python source behind a catalog table.
    default_path: str | None = None

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> T.StructType:
        return _spark_schema(_table_arrow_schema(self._path(), self._version()))

    def reader(self, schema: T.StructType) -> _DeltaRsReader:
        uris = snapshot_files(self._path(), self._version())
        return _DeltaRsReader(uris, _arrow_schema(schema))

    def writer(self, schema: T.StructType, overwrite: bool) -> _DeltaRsWriter:
        operation = self.options.get("operation", "OVERWRITE" if overwrite else "APPEND")
        write_id = self.options.get("write_id")
        read_version = self.options.get("read_version")
        return _DeltaRsWriter(
            self._path(),
            schema,
            overwrite,
            operation,
            write_id,
            int(read_version) if read_version not in (None, "") else None,
        )

    def _path(self) -> str:
        path = self.options.get("table_path", self.default_path)
        if not path:
            raise ValueError(f"{FORMAT}: option table_path is required")
        return path

    def _version(self) -> int | None:
        version = self.options.get("version")
        return int(version) if version not in (None, "") else None


def sql_source(path: str) -> type[DeltaRsSource]:
    """A source bound to one table folder, registered under its own name for SQL tables."""
    source_name = f"{FORMAT}_{hashlib.sha1(path.encode()).hexdigest()[:16]}"
    return type(
        f"DeltaRsSource_{source_name}",
        (DeltaRsSource,),
        {"name": classmethod(lambda cls: source_name), "default_path": path},
    )


def commit_files(
    path: str,
    arrow_schema: pa.Schema,
    files: list[dict[str, Any]],
    overwrite: bool,
    operation: str,
    write_id: str | None = None,
    read_version: int | None = None,
) -> None:
    """Commit files already written into the table folder as one Delta transaction.

    With ``read_version`` (a read-modify-write such as MERGE) the commit fails
    if another writer committed since that version, as Delta's own MERGE does:
    checked here first, then by delta-rs' conflict check from that snapshot
    (which catches removed files, though not an append in the instant between).
    Without it the transaction starts from the latest snapshot.
    """
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

    adds = [
        AddAction(
            path=f["path"],
            size=f["size"],
            partition_values={},
            modification_time=f["mtime"],
            data_change=True,
            stats=json.dumps({"numRecords": f["rows"]}),
        )
        for f in files
    ]
    props = CommitProperties(custom_metadata={"userMetadata": user_metadata(operation, write_id)})
    schema = Schema.from_arrow(arrow_schema)
    try:
        if read_version is not None and DeltaTable(path).version() != read_version:
            raise CommitFailedError(f"the table moved on from version {read_version}")
        if DeltaTable.is_deltatable(path):
            DeltaTable(path, version=read_version).create_write_transaction(
                adds,
                mode="overwrite" if overwrite else "append",
                schema=schema,
                commit_properties=props,
            )
        else:
            os.makedirs(path, exist_ok=True)
            create_table_with_add_actions(
                path, schema, adds, mode="append", commit_properties=props
            )
    except CommitFailedError as exc:
        raise ConcurrentWriteError.lost(path, exc) from exc


def committed_version(path: str, write_id: str) -> int:
    """The version of the commit made by write ``write_id``.

    Searched in the newest commits first: another writer may have committed
    after this one, so the table's latest version is not necessarily ours.
    """
    from deltalake import DeltaTable

    table = DeltaTable(path)
    for limit in (32, None):
        for commit in table.history(limit=limit):
            if commit_tags(commit).get(WRITE_ID_KEY) == write_id:
                return int(commit["version"])
    raise RuntimeError(f"write {write_id} reported success but no commit of {path} carries it")


def snapshot_files(path: str, version: int | None = None) -> list[str]:
    """Absolute URIs of the Parquet files in a table snapshot (metadata only)."""
    from deltalake import DeltaTable

    return DeltaTable(path, version=version).file_uris()


class DeltaRsEngine:
    """Table operations on the delta-rs engine. All data moves through Spark executors."""

    name = "delta-rs"

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        spark.dataSource.register(DeltaRsSource)
        # Delta's catalogue, when the session has it, cannot resolve a table backed
        # by a Python data source; it reads the same Delta log itself.
        self._sql_through_delta = session_has_connector(spark)

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def read(self, path: str, version: int | None = None) -> DataFrame:
        schema = _spark_schema(_table_arrow_schema(path, version))
        files = [local_path(u) for u in snapshot_files(path, version)]
        if not files:
            return self.spark.createDataFrame([], schema)
        return self.spark.read.schema(schema).parquet(*files)

    def write(self, df: DataFrame, path: str, overwrite: bool, operation: str) -> int:
        """One commit of ``df``; returns that commit's version."""
        return self._write(df, path, overwrite, operation)

    def _write(
        self,
        df: DataFrame,
        path: str,
        overwrite: bool,
        operation: str,
        read_version: int | None = None,
    ) -> int:
        _activate(df.sparkSession)
        if read_version is None and overwrite and self.exists(path):
            # An overwrite is computed from the table as it stands (``land``
            # re-reads bronze): a writer that commits meanwhile makes it fail
            # with ConcurrentWriteError instead of losing that writer's rows.
            read_version = self.version(path)
        write_id = new_write_id()
        writer = (
            df.write.format(FORMAT)
            .mode("overwrite" if overwrite else "append")
            .option("table_path", path)
            .option("operation", operation)
            .option("write_id", write_id)
        )
        if read_version is not None:
            writer = writer.option("read_version", str(read_version))
        try:
            writer.save()
        except Exception as exc:
            lost = _lost_race(exc)
            if lost is None:
                raise
            raise lost from exc
        return committed_version(path, write_id)

    def append_arrow(self, path: str, table: pa.Table) -> int:
        """Append rows the driver already holds as one commit, with no Spark job.

        For small batches (API responses): ``write_deltalake`` from the driver,
        tagged with a write id like ``write`` so a concurrent writer's later
        commit is not taken for this one. Rows are cast to the table's schema
        (all columns nullable when this commit creates it, as ``write`` does).
        """
        from deltalake import write_deltalake
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties

        if self.exists(path):
            schema = _table_arrow_schema(path)
        else:
            schema = pa.schema([f.with_nullable(True) for f in table.schema])
        write_id = new_write_id()
        props = CommitProperties(
            custom_metadata={"userMetadata": user_metadata("APPEND", write_id)}
        )
        try:
            write_deltalake(path, table.cast(schema), mode="append", commit_properties=props)
        except CommitFailedError as exc:
            raise ConcurrentWriteError.lost(path, exc) from exc
        return committed_version(path, write_id)

    def merge(self, df: DataFrame, path: str, keys: list[str]) -> int:
        """Upsert by copy-on-write: the table without the incoming keys, plus the incoming rows.

        One overwrite commit, computed by executors; the old files stay in the
        log's history until vacuumed, so reading the target while replacing it
        is safe. The commit is checked against the version the target was read
        at, so a write that lands meanwhile makes the merge fail with
        ConcurrentWriteError instead of being overwritten unseen.
        """
        if not self.exists(path):
            return self.write(df, path, overwrite=True, operation="MERGE")
        read_version = self.version(path)
        target = self.read(path, read_version)
        kept = target.join(df.select(*keys).distinct(), on=keys, how="left_anti")
        merged = kept.unionByName(df.select(*target.columns))
        return self._write(merged, path, True, "MERGE", read_version)

    def version(self, path: str) -> int:
        from deltalake import DeltaTable

        return DeltaTable(path).version()

    def history(self, path: str) -> list[dict[str, Any]]:
        from deltalake import DeltaTable

        return [
            {
                "version": h.get("version"),
                "timestamp": h.get("timestamp"),
                "operation": operation_of(h),
            }
            for h in DeltaTable(path).history()
        ]

    def files(self, path: str) -> list[str]:
        return sorted(local_path(u) for u in snapshot_files(path))

    def rows(self, path: str) -> int:
        from deltalake import DeltaTable

        adds = DeltaTable(path).get_add_actions(flatten=True)
        column = pa.table(adds).column("num_records") if adds.num_rows else None
        return int(sum(v or 0 for v in column.to_pylist())) if column is not None else 0

    def vacuum(self, path: str) -> list[str]:
        """Delete files no snapshot references any more (retention 0: batch jobs, no readers pinned)."""
        from deltalake import DeltaTable

        removed = DeltaTable(path).vacuum(
            retention_hours=0, enforce_retention_duration=False, dry_run=False
        )
        return list(removed) + _orphans(path)

    def sql_ddl(self, qualified: str, path: str) -> str:
        if self._sql_through_delta:
            return delta_table_ddl(qualified, path)
        source = sql_source(path)
        self.spark.dataSource.register(source)
        return f"CREATE TABLE {qualified} USING {source.name()}"


def _lost_race(exc: Exception) -> ConcurrentWriteError | None:
    """The ConcurrentWriteError a data source commit raised inside ``exc``, if it did.

    The commit runs in a Python worker, so Spark reports its exception as text
    inside PYTHON_DATA_SOURCE_ERROR; the caller gets the project's error back.
    """
    marker = f"{ConcurrentWriteError.__module__}.{ConcurrentWriteError.__name__}: "
    for line in str(exc).splitlines():
        if line.startswith(marker):
            return ConcurrentWriteError(line[len(marker) :])
    return None


def _activate(spark: SparkSession) -> None:
    """Make ``spark`` the active session of this thread before a ``genre_delta`` write.

    Spark looks Python data sources up in the thread's active session; a job
    started from a new Python thread has none (its JVM thread is new), and
    the write would fail with DATA_SOURCE_NOT_FOUND.
    """
    jvm = spark.sparkContext._jvm
    if jvm is not None:
        jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)


def _orphans(path: str) -> list[str]:
    """Delete Parquet files no snapshot ever referenced: the leftovers of killed writers.

    Run only while no writer is working on the table: an in-flight writer's
    files are not in the log yet either.
    """
    live = {os.path.basename(local_path(u)) for u in snapshot_files(path)}
    removed = []
    for name in sorted(os.listdir(path)):
        if name.endswith(".parquet") and name not in live:
            os.remove(os.path.join(path, name))
            removed.append(os.path.join(path, name))
    return removed
