"""The delta-rs engine: Spark executors write Parquet, the driver commits once.

Used where Delta's JVM connector is not on the classpath (laptops, CI here).
Spark's Python Data Source API gives the split of work Delta itself uses:
each write task writes its own Parquet files into the table folder (one per
partition it holds rows of, under ``col=value/`` as Spark and Delta lay
them out, partition columns left out of the file) and reports them; the
driver's commit turns all reports into one Delta transaction
(``deltars_log.commit_files``). A failed job never commits, so readers keep
seeing the previous version; files of failed tasks are orphans that no
snapshot references (``genre vacuum`` removes them). Reads use Spark's
native Parquet reader on the exact file list of the snapshot, each
partition's values put back from the log; the same source also reads (for
``CREATE TABLE ... USING genre_delta`` in SQL). A covered ``merge_mapped``
skips Spark's rows altogether: its tasks read the source's files with
pyarrow, run the Python mapping and write the target's files, and the driver
commits their reports the same way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import operator
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)

from genre_spark.lake import deltars_log
from genre_spark.lake.connector import session_has_connector
from genre_spark.lake.deltars_log import Commit, DataFile, committed_version, snapshot
from genre_spark.lake.engine import (
    CHECKPOINT_INTERVAL_KEY,
    ArrowMap,
    Compaction,
    ConcurrentWriteError,
    arrow_schema,
    delta_table_ddl,
    local_path,
    new_write_id,
    operation_of,
    upserted,
    user_metadata,
)
from genre_spark.lake.partitions import (
    PartitionError,
    Partitions,
    column_condition,
    describe,
    folder,
    matches,
    partition_string,
    require_partition_columns,
)

FORMAT = "genre_delta"


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


class _PartFiles:
    """The Parquet files one write task writes: one per partition it holds rows of.

    Partition columns are left out of the files (Delta keeps them in the log);
    a table without partition columns gets one file per task, as before.
    """

    def __init__(self, root: str, schema: pa.Schema, partition_by: Sequence[str]) -> None:
        from pyspark import TaskContext

        context = TaskContext.get()
        # The partition index first: a snapshot's files then sort in the order of
        # the DataFrame's partitions, so readers that split files between workers
        # (training ranks) see the same shards on every run of the same plan.
        self.index = context.partitionId() if context is not None else 0
        self.root = root
        self.schema = schema
        self.partition_by = list(partition_by)
        self.data_schema = pa.schema([f for f in schema if f.name not in self.partition_by])
        self.open: dict[tuple[str | None, ...], tuple[str, Any, int]] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        table = pa.Table.from_batches([batch]).cast(self.schema)
        if not self.partition_by:
            self._write((), table)
            return
        keys = table.select(self.partition_by).group_by(self.partition_by).aggregate([]).to_pylist()
        for key in keys:
            # A batch of one partition (a scoped write's every batch) goes whole: filtering
            # would copy every column, maps and arrays included, to keep every row.
            rows = table if len(keys) == 1 else table.filter(self._mask(table, key))
            values = tuple(partition_string(key[c]) for c in self.partition_by)
            self._write(values, rows.drop_columns(self.partition_by))

    def _mask(self, table: pa.Table, key: dict[str, Any]) -> Any:
        tests = [
            pc.is_null(table[c])
            if v is None
            else pc.fill_null(pc.equal(table[c], pa.scalar(v, table[c].type)), False)
            for c, v in key.items()
        ]
        return functools.reduce(operator.and_, tests)

    def _write(self, values: tuple[str | None, ...], rows: pa.Table) -> None:
        import pyarrow.parquet as pq

        if values not in self.open:
            prefix = folder(dict(zip(self.partition_by, values, strict=True)), self.partition_by)
            relative = os.path.join(
                prefix, f"part-{self.index:05d}-{uuid.uuid4().hex}.snappy.parquet"
            )
            os.makedirs(os.path.dirname(os.path.join(self.root, relative)), exist_ok=True)
            writer = pq.ParquetWriter(
                os.path.join(self.root, relative), self.data_schema, compression="snappy"
            )
            self.open[values] = (relative, writer, 0)
        relative, writer, count = self.open[values]
        writer.write_table(rows.select(self.data_schema.names).cast(self.data_schema))
        self.open[values] = (relative, writer, count + rows.num_rows)

    def close(self) -> list[dict[str, Any]]:
        """Close every file; what the task reports (path relative to the table, values, size)."""
        reports = []
        for values, (relative, writer, rows) in self.open.items():
            writer.close()
            stat = os.stat(os.path.join(self.root, relative))
            reports.append(
                {
                    "path": relative,
                    "values": dict(zip(self.partition_by, values, strict=True)),
                    "size": stat.st_size,
                    "rows": rows,
                    "mtime": int(stat.st_mtime * 1000),
                }
            )
        return reports


class _DeltaRsWriter(DataSourceArrowWriter):
    def __init__(
        self, path: str, schema: T.StructType, commit: Commit, partition_by: Sequence[str]
    ) -> None:
        self.path = path
        self.arrow_schema = arrow_schema(schema)
        self.commit_spec = commit
        self.partition_by = list(partition_by)

    def write(self, iterator: Iterator[pa.RecordBatch]) -> _FilesWritten:
        os.makedirs(self.path, exist_ok=True)
        files = _PartFiles(self.path, self.arrow_schema, self.partition_by)
        try:
            for batch in iterator:
                files.add(batch)
        finally:
            reports = files.close()
        return _FilesWritten(reports)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        files = [f for m in messages if isinstance(m, _FilesWritten) for f in m.files]
        deltars_log.commit_files(self.path, self.arrow_schema, files, self.commit_spec)

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        for message in messages:
            for f in message.files if isinstance(message, _FilesWritten) else []:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.path, f["path"]))


class _FilePartition(InputPartition):
    def __init__(self, file: DataFile) -> None:
        self.file = file


class _DeltaRsReader(DataSourceReader):
    def __init__(self, files: list[DataFile], arrow_schema: pa.Schema) -> None:
        self.files = files
        self.arrow_schema = arrow_schema

    def partitions(self) -> list[_FilePartition]:
        return [_FilePartition(f) for f in self.files]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        if not isinstance(partition, _FilePartition):
            return  # a table of no files: Spark still reads one (empty) partition
        yield from file_batches(partition.file, self.arrow_schema)


def file_batches(
    file: DataFile, schema: pa.Schema, batch_rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """One data file's rows as batches of ``schema`` (some of the table's columns).

    Only those columns are read; a partition column's value comes from the log.
    """
    import pyarrow.parquet as pq

    stored = [name for name in schema.names if name not in file.values]
    sizes = {"batch_size": batch_rows} if batch_rows else {}
    for batch in pq.ParquetFile(file.path).iter_batches(columns=stored, **sizes):
        table = pa.Table.from_batches([batch])
        for column, value in file.values.items():
            if column in schema.names:
                filled = pa.array([value] * table.num_rows, pa.string())
                table = table.append_column(column, filled.cast(schema.field(column).type))
        yield from table.select(schema.names).cast(schema).to_batches()


class _MappedFiles:
    """One Spark task of ``merge_mapped``: source files in, the mapping's rows written as target files.

    The task reads its share of the source's files (``file_batches``), runs
    the mapping over their batches in this Python worker, and writes what it
    yields as a write task would (``_PartFiles``); it returns the reports of
    the files it wrote. No row goes through the JVM.
    """

    def __init__(
        self,
        root: str,
        source_schema: pa.Schema,
        mapping: ArrowMap,
        partition_by: Sequence[str],
        batch_rows: int,
    ) -> None:
        self.root = root
        self.source_schema = source_schema
        self.mapping = mapping
        self.partition_by = list(partition_by)
        self.batch_rows = batch_rows

    def __call__(self, files: Iterable[DataFile]) -> Iterator[dict[str, Any]]:
        batches = (
            batch for f in files for batch in file_batches(f, self.source_schema, self.batch_rows)
        )
        written = _PartFiles(self.root, arrow_schema(self.mapping.schema), self.partition_by)
        try:
            for batch in self.mapping.function(batches):
                written.add(batch)
        finally:
            reports = written.close()
        yield from reports


class DeltaRsSource(DataSource):
    """``genre_delta``: a Delta table through delta-rs, for ``df.write`` and SQL tables.

    Options: ``table_path`` (table folder), ``version`` (time travel, read
    only), ``commit`` (write only: a :class:`~genre_spark.lake.deltars_log.Commit`
    as JSON: the operation and write id recorded, what an overwrite replaces,
    the version its rows were computed from, the layout of a new table).
    Without ``commit`` (a SQL ``INSERT``) the write appends, or overwrites the
    whole table, in the table's own layout.
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
        return _DeltaRsReader(snapshot(self._path(), self._version()), arrow_schema(schema))

    def writer(self, schema: T.StructType, overwrite: bool) -> _DeltaRsWriter:
        text = self.options.get("commit")
        path = self._path()
        if text:
            commit = Commit.from_json(text)
        else:  # a SQL INSERT: the table's own layout
            operation = "OVERWRITE" if overwrite else "APPEND"
            commit = Commit(operation, overwrite=overwrite, partition_by=_layout(path))
        return _DeltaRsWriter(path, schema, commit, file_layout(path, commit))

    def _path(self) -> str:
        path = self.options.get("table_path", self.default_path)
        if not path:
            raise ValueError(f"{FORMAT}: option table_path is required")
        return path

    def _version(self) -> int | None:
        version = self.options.get("version")
        return int(version) if version not in (None, "") else None


def _layout(path: str) -> tuple[str, ...]:
    """The partition columns of the table at ``path``; () when it does not exist yet."""
    from deltalake import DeltaTable

    return tuple(deltars_log.partition_columns(path)) if DeltaTable.is_deltatable(path) else ()


def file_layout(path: str, commit: Commit) -> tuple[str, ...]:
    """The partition columns a commit's files are laid out by.

    A table created or wholly overwritten takes the commit's layout; an append
    or a partition replace follows the table's own (the log's partition
    columns cannot change in such a commit).
    """
    if commit.overwrite and commit.replace is None:
        return commit.partition_by
    return _layout(path) or commit.partition_by


def sql_source(path: str) -> type[DeltaRsSource]:
    """A source bound to one table folder, registered under its own name for SQL tables."""
    source_name = f"{FORMAT}_{hashlib.sha1(path.encode()).hexdigest()[:16]}"
    return type(
        f"DeltaRsSource_{source_name}",
        (DeltaRsSource,),
        {"name": classmethod(lambda cls: source_name), "default_path": path},
    )


class DeltaRsEngine:
    """Table operations on the delta-rs engine. All data moves through Spark executors.

    ``properties`` are given to every table this engine creates
    (``delta.checkpointInterval``: delta-rs writes a checkpoint of the log
    after every that many commits).
    """

    name = "delta-rs"

    def __init__(self, spark: SparkSession, properties: dict[str, str] | None = None) -> None:
        self.spark = spark
        self.properties = dict(properties or {})
        spark.dataSource.register(DeltaRsSource)
        # Delta's catalogue, when the session has it, cannot resolve a table backed
        # by a Python data source; it reads the same Delta log itself.
        self._sql_through_delta = session_has_connector(spark)
        #: Names of the per-table SQL sources this session already has.
        self._sql_sources: set[str] = set()

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def partition_columns(self, path: str) -> list[str]:
        return deltars_log.partition_columns(path)

    def read(self, path: str, version: int | None = None) -> DataFrame:
        """The snapshot's files through Spark's Parquet reader, partition values from the log.

        One scan per partition, each with its values as literals: a filter on a
        partition column folds to ``false`` for the others, so Spark reads only
        the partitions a query asks for.
        """
        schema = _spark_schema(_table_arrow_schema(path, version))
        files = snapshot(path, version)
        columns = deltars_log.partition_columns(path, version)
        if not files:
            return self.spark.createDataFrame([], schema)
        if not columns:
            return self.spark.read.schema(schema).parquet(*[f.path for f in files])
        data = T.StructType([f for f in schema.fields if f.name not in columns])
        groups: dict[tuple[str | None, ...], list[str]] = defaultdict(list)
        for f in files:
            groups[tuple(f.values[c] for c in columns)].append(f.path)
        scans = []
        for values, paths in sorted(groups.items(), key=repr):
            literal = dict(zip(columns, values, strict=True))
            scans.append(
                self.spark.read.schema(data)
                .parquet(*paths)
                .select(
                    *[
                        F.lit(literal[f.name]).cast(f.dataType).alias(f.name)
                        if f.name in literal
                        else F.col(f"`{f.name}`")
                        for f in schema.fields
                    ]
                )
            )
        return functools.reduce(DataFrame.union, scans)

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

        An overwrite is checked against ``unchanged_since`` or else the table
        as it stands now (``land`` re-reads bronze): a writer that commits
        meanwhile makes it fail with ConcurrentWriteError instead of losing
        that writer's rows. The check runs inside the commit step.
        """
        exists = self.exists(path)
        if unchanged_since is None and overwrite and exists:
            unchanged_since = self.version(path)
        commit = Commit(
            operation,
            overwrite=overwrite,
            read_version=unchanged_since,
            partition_by=tuple(partition_by),
            properties=self.properties,
        )
        return self._save(df, path, commit)

    def replace(self, df: DataFrame, path: str, partitions: Partitions, operation: str) -> int:
        """One commit that removes the files of ``partitions`` and adds ``df``'s.

        Checked against the version current when the write started: a commit to
        those partitions since then makes it lose (ConcurrentWriteError); commits
        to other partitions do not.
        """
        commit = Commit(
            operation, overwrite=True, read_version=self.version(path), replace=partitions
        )
        return self._save(df, path, commit)

    def _save(self, df: DataFrame, path: str, commit: Commit) -> int:
        _activate(df.sparkSession)
        write_id = new_write_id()
        commit = Commit(**{**commit.__dict__, "write_id": write_id})
        require_partition_columns(df.schema, file_layout(path, commit), path)
        writer = (
            df.write.format(FORMAT)
            .mode("overwrite" if commit.overwrite else "append")
            .option("table_path", path)
            .option("commit", commit.to_json())
        )
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

        For small batches (API responses): the driver writes the files as a
        write task would (``_PartFiles``, one per partition) and commits them
        through ``deltars_log.commit_files``, the one commit path, tagged with
        a write id so a concurrent writer's later commit is not taken for this
        one. Rows are cast to the table's schema (all columns nullable when
        this commit creates it, as ``write`` does).
        """
        exists = self.exists(path)
        if exists:
            schema = _table_arrow_schema(path)
        else:
            schema = pa.schema([f.with_nullable(True) for f in table.schema])
        partition_by = self.partition_columns(path) if exists else []
        write_id = new_write_id()
        files = _PartFiles(path, schema, partition_by)
        try:
            for batch in table.cast(schema).to_batches():
                files.add(batch)
        finally:
            reports = files.close()
        commit = Commit(
            "APPEND",
            write_id=write_id,
            partition_by=tuple(partition_by),
            properties=self.properties,
        )
        deltars_log.commit_files(path, schema, reports, commit)
        return committed_version(path, write_id)

    def merge(
        self,
        df: DataFrame,
        path: str,
        keys: list[str],
        partitions: Partitions | None = None,
        covered_at: int | None = None,
    ) -> int:
        """Upsert by copy-on-write: the target without the incoming keys, plus the incoming rows.

        With ``partitions`` the target is those partitions only (the other
        files are neither read nor rewritten) and the commit replaces just
        them. One commit, computed by executors; the old files stay in the
        log's history until vacuumed, so reading the target while replacing it
        is safe. The commit is checked against the version the target was read
        at, so a write that lands meanwhile in what the merge rewrites makes it
        fail with ConcurrentWriteError instead of being overwritten unseen.

        With ``covered_at`` the caller has found, at that version, that no row
        of ``partitions`` would be kept: the upsert is ``df`` itself, written
        without reading or joining the old rows (the costly half of a merge
        whose every row is replaced) and checked against ``covered_at``, so a
        commit to those partitions since then still makes it lose.
        """
        read_version = self.version(path) if covered_at is None else covered_at
        commit = Commit(
            "MERGE",
            overwrite=True,
            read_version=read_version,
            partition_by=tuple(self.partition_columns(path)),
            replace=partitions,
        )
        if covered_at is not None and partitions is not None:
            return self._save(df, path, commit)
        target = self.read(path, read_version)
        if partitions is not None:
            target = target.where(column_condition(partitions))
        return self._save(upserted(target, df, keys), path, commit)

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
        """The covered merge of ``mapping`` over ``source``'s files, with no Spark rows in between.

        One Spark task per data file of the source's snapshot reads it with
        pyarrow, runs the mapping in its Python worker and writes the result
        as the target's files (``_MappedFiles``); the driver checks that every
        file lies in ``partitions`` and commits them as those partitions'
        replacement, checked against ``covered_at``: the commit ``merge``
        makes for a covered ``df``. Reading the source as Spark rows, handing
        them to the Python worker and the mapped rows back, then to the
        writer's worker again, cost as much as the mapping itself (scoring,
        BENCHMARKS.md section 8d). Only the file reports reach the driver.
        """
        files = snapshot(source, source_version)
        layout = self.partition_columns(path)
        require_partition_columns(mapping.schema, layout, path)
        source_schema = _table_arrow_schema(source, source_version)
        read = pa.schema([source_schema.field(c) for c in mapping.columns])
        rows = int(self.spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") or 10_000)
        task = _MappedFiles(path, read, mapping, layout, rows)
        reports = (
            self.spark.sparkContext.parallelize(files, max(1, len(files)))
            .mapPartitions(task)
            .collect()
        )
        outside = [r["values"] for r in reports if not matches(r["values"], partitions)]
        if outside:
            raise PartitionError(
                f"rows for {path} lie outside the partitions written ({describe(partitions)}): "
                f"{outside[0]}"
            )
        write_id = new_write_id()
        commit = Commit(
            "MERGE",
            write_id=write_id,
            overwrite=True,
            read_version=covered_at,
            partition_by=tuple(layout),
            replace=partitions,
        )
        deltars_log.commit_files(path, arrow_schema(mapping.schema), reports, commit)
        return committed_version(path, write_id)

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
        """The snapshot's data files; a partitioned table's files lack their partition columns."""
        return sorted(f.path for f in snapshot(path))

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

    def optimize(self, path: str) -> Compaction:
        """delta-rs' compaction (bin-packing small files per partition), then a checkpoint.

        The compaction commit has ``dataChange: false``: readers' results and
        concurrent partition replaces are unaffected (see ``deltars_log.conflict``).
        """
        from deltalake import DeltaTable
        from deltalake.transaction import CommitProperties

        table = DeltaTable(path)
        wanted = {k: v for k, v in self.properties.items() if k == CHECKPOINT_INTERVAL_KEY}
        if wanted and any(table.metadata().configuration.get(k) != v for k, v in wanted.items()):
            table.alter.set_table_properties(wanted, raise_if_not_exists=False)
        metadata = {"userMetadata": user_metadata("OPTIMIZE", new_write_id())}
        metrics = table.optimize.compact(
            commit_properties=CommitProperties(custom_metadata=metadata)
        )
        table = DeltaTable(path)
        table.create_checkpoint()
        return Compaction(
            int(metrics.get("numFilesRemoved", 0)),
            int(metrics.get("numFilesAdded", 0)),
            table.version(),
        )

    def sql_ddl(self, qualified: str, path: str) -> str:
        if self._sql_through_delta:
            return delta_table_ddl(qualified, path)
        source = sql_source(path)
        if source.name() not in self._sql_sources:
            # Once per table and session: the source reads the latest snapshot at each query.
            self.spark.dataSource.register(source)
            self._sql_sources.add(source.name())
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

    Searched in partition folders too. Run only while no writer is working on
    the table: an in-flight writer's files are not in the log yet either.
    """
    live = {f.path for f in snapshot(path)}
    removed = []
    root = local_path(path)
    for folder_path, folders, names in os.walk(root):
        folders[:] = sorted(d for d in folders if d != "_delta_log")
        for name in sorted(names):
            full = os.path.join(folder_path, name)
            if name.endswith(".parquet") and full not in live:
                os.remove(full)
                removed.append(full)
    return removed
