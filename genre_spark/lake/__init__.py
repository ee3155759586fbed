"""The Delta lake every stage reads and writes: one API, two engines.

``Lake(spark, root)`` picks delta-spark when the session has Delta's JVM
connector loaded and delta-rs otherwise (``engine: auto``). Every write is one
atomic Delta commit; every table is reachable by path and, after
``register_sql``, as ``layer.name`` in Spark SQL.

Tables the catalogue partitions are written part by part: ``replace`` swaps
the rows of some partitions in one commit that removes only their files, and
``merge`` reads and rewrites only the partitions its source rows fall in, so
the cost of a change follows the change, not the table. Every table the lake
creates checkpoints its log every ``checkpoint_interval`` commits; ``optimize``
compacts small files.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.config import ConfigError
from genre_spark.errors import GenreError
from genre_spark.lake import connector
from genre_spark.lake.catalog import TABLES, TIME_COLUMNS, UnknownTableError, spec, table_path
from genre_spark.lake.connector import DeltaConnectorMissingError
from genre_spark.lake.deltars import DeltaRsEngine
from genre_spark.lake.deltaspark import DeltaSparkEngine
from genre_spark.lake.engine import (
    ABSENT,
    CHECKPOINT_INTERVAL_KEY,
    ArrowMap,
    Compaction,
    ConcurrentWriteError,
    Engine,
    is_local,
)
from genre_spark.lake.partitions import (
    Partition,
    PartitionError,
    column_condition,
    distinct_partitions,
    normalized,
    within,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "TABLES",
    "Compaction",
    "ConcurrentWriteError",
    "DeltaConnectorMissingError",
    "Lake",
    "NonLocalLakeError",
    "PartitionError",
    "TableInfo",
    "TableNotFoundError",
    "UnknownTableError",
    "content_hash",
]

EngineName = Literal["auto", "delta-spark", "delta-rs"]
#: A session's own default for ``engine: auto`` (see ``choose_engine``).
SESSION_ENGINE_CONF = "spark.genre.lake.engine"
#: Commits between two checkpoints of a table's log (Delta's own default is 10,
#: delta-rs' 100): a reader opens the latest checkpoint plus at most this many entries.
DEFAULT_CHECKPOINT_INTERVAL = 10

#: Serialises SQL (re)registration: Spark's session catalogue is shared by every
#: thread of the driver, and two threads registering one table (drop, then
#: create) could otherwise interleave into TABLE_OR_VIEW_ALREADY_EXISTS.
_CATALOG_LOCK = threading.Lock()


class TableNotFoundError(GenreError):
    """A catalogue table that has not been written yet."""


class NonLocalLakeError(ConfigError):
    """An object-store lake asked of the delta-rs engine, which writes with local file paths."""


@dataclass(frozen=True)
class TableInfo:
    name: str
    path: str
    version: int
    rows: int


def choose_engine(
    spark: SparkSession,
    root: str,
    engine: EngineName = "auto",
    properties: dict[str, str] | None = None,
) -> Engine:
    """The engine for a lake at ``root`` on ``spark``; a choice that cannot work fails in one line.

    ``auto`` is the session's ``spark.genre.lake.engine`` if set (a session
    with the connector that should still default to delta-rs: the test
    suite's), else delta-spark when the session has Delta's connector, else
    delta-rs (said once). delta-rs executors write with local file paths, so it
    refuses a lake on an object store rather than write somewhere unexpected.
    """
    has_connector = connector.session_has_connector(spark)
    if engine == "auto":
        engine = spark.conf.get(SESSION_ENGINE_CONF, None) or "auto"  # type: ignore[assignment]
    if engine == "auto":
        engine = "delta-spark" if has_connector else "delta-rs"
        if not has_connector and is_local(root):
            connector.say_fallback_once("Delta's JVM connector is not loaded in this Spark session")
    if engine == "delta-spark":
        if not has_connector:
            raise connector.missing("Delta's JVM connector loaded in the Spark session")
        return DeltaSparkEngine(spark, properties)
    if not is_local(root):
        reason = "" if has_connector else " (Delta's JVM connector is not loaded)"
        raise NonLocalLakeError(
            f"lake {root} is not on a local or shared filesystem: the delta-rs engine writes "
            f"with local file paths and cannot use it{reason}; use engine delta-spark "
            f"(--set engine=delta-spark, with {connector.DELTA_PACKAGE})"
        )
    return DeltaRsEngine(spark, properties)


def _hashable(name: str, data_type: T.DataType) -> Column:
    """A column Spark can hash: a map becomes its entries sorted by key.

    Spark refuses to hash maps (equal maps may iterate in different orders);
    sorted entries are the same for equal maps whatever order they were built in.
    """
    column = F.col(f"`{name}`")
    return F.array_sort(F.map_entries(column)) if isinstance(data_type, T.MapType) else column


def content_hash(df: DataFrame) -> str:
    """An order-independent fingerprint of a DataFrame's rows, wall-clock columns left out.

    Two runs over the same input must give the same rows; only the time they
    ran may differ. Computed by executors: a count and a sum of row hashes.
    """
    columns = sorted(c for c in df.columns if c not in TIME_COLUMNS)
    types = {f.name: f.dataType for f in df.schema.fields}
    row_hash = F.xxhash64(*[_hashable(c, types[c]) for c in columns]).cast("decimal(38,0)")
    result = df.agg(F.count(F.lit(1)).alias("n"), F.sum(row_hash).alias("h")).first()
    assert result is not None  # a global aggregate has exactly one row
    return f"{result['n']}:{result['h'] or 0}:{','.join(columns)}"


class Lake:
    """The lake at ``root``: read, write, merge and inspect catalogue tables."""

    def __init__(
        self,
        spark: SparkSession,
        root: str,
        engine: EngineName = "auto",
        checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> None:
        self.spark = spark
        self.root = root
        properties = {CHECKPOINT_INTERVAL_KEY: str(checkpoint_interval)}
        self.engine: Engine = choose_engine(spark, root, engine, properties)

    def path(self, name: str) -> str:
        return table_path(self.root, name)

    def exists(self, name: str) -> bool:
        return self.engine.exists(self.path(name))

    def _require(self, name: str) -> str:
        path = self.path(name)
        if not self.engine.exists(path):
            raise TableNotFoundError(
                f"table {name} does not exist yet at {path}; run the stage that writes it "
                f"({spec(name).written_by}) first"
            )
        return path

    def read(self, name: str, version: int | None = None) -> DataFrame:
        return self.engine.read(self._require(name), version)

    def partition_columns(self, name: str) -> list[str]:
        """The partition columns the table is laid out by now (the catalogue's after a write)."""
        return self.engine.partition_columns(self._require(name))

    def _laid_out(self, name: str) -> bool:
        """True when the table exists and is partitioned as the catalogue says.

        A table written before its partitioning was declared is not: the next
        whole write (``write``, or ``optimize``) lays it out anew.
        """
        return self.exists(name) and self.partition_columns(name) == list(spec(name).partition_by)

    def write(
        self,
        df: DataFrame,
        name: str,
        mode: Literal["overwrite", "append"] = "overwrite",
        unchanged_since: int | None = None,
    ) -> int:
        """Overwrite or append as one atomic commit; returns the version of that commit.

        An overwrite (or the write creating the table) lays the table out by the
        catalogue's partition columns. No SQL DDL: ``register_sql`` makes tables
        queryable, once per command. ``unchanged_since`` (an overwrite): the
        version (``version_or_absent``) the caller decided on this write at; a
        commit since then makes the write fail with ConcurrentWriteError.
        """
        if mode not in ("overwrite", "append"):
            raise ValueError(f"mode must be 'overwrite' or 'append', got {mode!r}")
        if unchanged_since is not None and mode != "overwrite":
            raise ValueError("unchanged_since checks an overwrite; an append replaces nothing")
        return self.engine.write(
            df,
            self.path(name),
            overwrite=mode == "overwrite",
            operation=mode.upper(),
            partition_by=spec(name).partition_by,
            unchanged_since=unchanged_since,
        )

    def replace(self, df: DataFrame, name: str, where: list[Partition]) -> int:
        """Replace the rows of the partitions ``where`` names with ``df``: one atomic commit.

        ``where`` lists partitions of the catalogue's partition columns
        (``[{"model_version": "2"}]``); every row of ``df`` must lie in one of
        them, or the write fails before committing. Only those partitions'
        files leave the snapshot: every other file stays, the same file. A
        table not yet laid out so is written whole (other partitions' rows
        kept), once. Returns the version of the commit.
        """
        partitions = self._partition_set(name, where)
        rows = within(df, partitions, name)
        if not self._laid_out(name):
            if self.exists(name):
                kept = self._old_rows(name).where(~column_condition(partitions))
                rows = kept.unionByName(rows.select(*kept.columns))
            return self.write(rows, name)
        return self.engine.replace(rows, self.path(name), partitions, "REPLACE")

    def _old_rows(self, name: str) -> DataFrame:
        """A table written before its partitioning was declared, which has the columns."""
        table = self.read(name)
        missing = [c for c in spec(name).partition_by if c not in table.columns]
        if missing:
            raise PartitionError(
                f"{name} at {self.path(name)} was written before it was partitioned by "
                f"{missing} and lacks the column(s); rewrite it (re-run {spec(name).written_by})"
            )
        return table

    def _partition_set(self, name: str, where: list[Partition]) -> tuple[Partition, ...]:
        columns = spec(name).partition_by
        wrong = [p for p in where if sorted(p) != sorted(columns)]
        if not columns or wrong:
            raise PartitionError(
                f"{name} is partitioned by {list(columns)}: a partition names exactly those "
                f"column(s), got {wrong or where}"
            )
        return normalized(where)

    def append_arrow(self, name: str, table: pa.Table) -> int:
        """Append rows already on the driver (API responses) as one atomic commit; returns its version.

        No Spark job on the delta-rs engine.
        """
        return self.engine.append_arrow(self.path(name), table)

    def merge(
        self,
        df: DataFrame,
        name: str,
        keys: list[str],
        partitions: list[Partition] | None = None,
        covered_at: int | None = None,
    ) -> int:
        """Upsert on ``keys`` (unique in ``df``): matched rows replaced, new rows inserted.

        On a partitioned table whose partition columns are among ``keys`` the
        merge touches only the partitions ``df``'s rows fall in: ``partitions``
        when the caller knows them (``genre score``: its model version), else
        found by one small aggregate over ``df``. ``covered_at`` (with
        ``partitions``): the table version at which the caller found that
        ``df``'s keys match every row of those partitions, so that none is
        kept; the engine may then write ``df`` as their replacement, checked
        against that version, instead of joining it with the old rows (the
        delta-rs engine does). Returns the version of the merge's commit.
        """
        path = self.path(name)
        columns = spec(name).partition_by
        if not self.exists(name):
            return self.engine.write(df, path, True, "MERGE", columns)
        if self._merges_by_partition(name, keys):
            scope = (
                self._partition_set(name, partitions)
                if partitions is not None
                else distinct_partitions(df, columns)
            )
            covered = covered_at if partitions is not None else None
            return self.engine.merge(within(df, scope, name), path, keys, scope, covered)
        return self.engine.merge(df, path, keys)

    def _merges_by_partition(self, name: str, keys: list[str]) -> bool:
        """A merge on ``keys`` can touch partitions alone: they are keys, and the table is laid out by them."""
        columns = spec(name).partition_by
        return bool(columns) and set(columns) <= set(keys) and self._laid_out(name)

    def merge_mapped(
        self,
        source: str,
        mapping: ArrowMap,
        name: str,
        keys: list[str],
        partitions: list[Partition] | None = None,
        covered_at: int | None = None,
        source_version: int | None = None,
    ) -> int:
        """``merge`` of ``mapping``'s rows over ``source`` (at ``source_version``): the same rows.

        Where that merge is a covered replace (``partitions`` and
        ``covered_at``, on a table laid out by its partition columns) the
        engine runs the mapping itself: the delta-rs engine over the source's
        files, in Spark tasks that write the result, with no row in the JVM.
        Otherwise it is ``merge(mapping.over(read(source, source_version)), ...)``.
        """
        if (
            partitions is not None
            and covered_at is not None
            and self._merges_by_partition(name, keys)
        ):
            return self.engine.merge_mapped(
                self._require(source),
                source_version,
                mapping,
                self.path(name),
                keys,
                self._partition_set(name, partitions),
                covered_at,
            )
        rows = mapping.over(self.read(source, source_version))
        return self.merge(rows, name, keys, partitions, covered_at)

    def optimize(self, name: str) -> Compaction:
        """Compact the table's small files and checkpoint its log (``genre optimize``).

        A table not laid out as the catalogue says is first rewritten whole in
        that layout (one commit, the same rows).
        """
        if not self._laid_out(name):
            self.write(self.read(name), name)
        return self.engine.optimize(self._require(name))

    def version(self, name: str) -> int:
        return self.engine.version(self._require(name))

    def version_or_absent(self, name: str) -> int:
        """The table's latest version, or ``ABSENT`` before its first write."""
        path = self.path(name)
        return self.engine.version(path) if self.engine.exists(path) else ABSENT

    def history(self, name: str) -> list[dict[str, Any]]:
        return self.engine.history(self._require(name))

    def files(self, name: str) -> list[str]:
        """The data files of the current snapshot, sorted: what training ranks split between them."""
        return self.engine.files(self._require(name))

    def vacuum(self, name: str) -> list[str]:
        """Delete files that no current snapshot reads (old versions, killed writers' leftovers)."""
        return self.engine.vacuum(self._require(name))

    def tables(self) -> list[TableInfo]:
        """Every catalogue table written so far, with its version and row count."""
        infos = []
        for name in TABLES:
            path = self.path(name)
            if self.engine.exists(path):
                infos.append(
                    TableInfo(name, path, self.engine.version(path), self.engine.rows(path))
                )
        return infos

    def content_hash(self, name: str) -> str:
        return content_hash(self.read(name))

    def register_sql(self) -> None:
        """Make every existing table queryable as ``layer.name`` in Spark SQL, once per command.

        Writes run no SQL DDL: a command that queries SQL (``genre sql``, the
        notebook, a test) calls this once, after the writes it wants to see.
        A registered table reads the latest snapshot of its folder at each
        query, so later appends and merges show; a table created, or whose
        schema changed, since registration needs ``register_sql`` again (on
        delta-rs the SQL table keeps the schema it was registered with).
        """
        with _CATALOG_LOCK:
            for name in TABLES:
                if self.engine.exists(self.path(name)):
                    self._register(name)

    def _register(self, name: str) -> None:
        """(Re)create the SQL table ``name`` over its folder, so SQL sees its current schema."""
        layer = name.split(".", 1)[0]
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {layer}")
        self.spark.sql(f"DROP TABLE IF EXISTS {name}")
        self.spark.sql(self.engine.sql_ddl(name, self.path(name)))
