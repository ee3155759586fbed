"""What every lake engine provides, and the pieces both engines share.

``Lake`` talks to an engine through :class:`Engine` only, so delta-rs
(``deltars.py``) and Delta's JVM connector (``deltaspark.py``) are swapped by
configuration and give the same guarantees: each write or merge is one
atomic commit and returns that commit's own version, a lost commit race is a
:class:`ConcurrentWriteError`, and ``files`` is the snapshot's file list as
the Delta log states it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.errors import GenreError
from genre_spark.lake.partitions import Partitions

if TYPE_CHECKING:
    import pyarrow as pa

#: Commit metadata keys: the operation shown in history, and the id of the write
#: that made the commit (how a writer finds its own version among concurrent ones).
#: Both engines store them as JSON in the commit's ``userMetadata`` (Delta's field
#: for it), so either engine reads the other's history.
OPERATION_KEY = "genre_spark.operation"
WRITE_ID_KEY = "genre_spark.write_id"
#: The table property both engines read to checkpoint the log every N commits.
CHECKPOINT_INTERVAL_KEY = "delta.checkpointInterval"
#: The "version" of a table that does not exist yet, for ``unchanged_since``.
ABSENT = -1


class ConcurrentWriteError(GenreError):
    """Another writer committed to the table first; the caller may retry."""

    @classmethod
    def lost(cls, path: str, cause: BaseException | str) -> ConcurrentWriteError:
        """The error for a commit to ``path`` that lost, with the first line of why."""
        text = str(cause).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        return cls(f"commit to {path} lost to a concurrent writer: {first}")


@dataclass(frozen=True)
class Compaction:
    """What ``optimize`` did to one table."""

    files_removed: int
    files_added: int
    #: The version whose checkpoint the log now has (the latest after compaction).
    checkpoint_version: int

    def summary(self) -> str:
        return (
            f"{self.files_removed} file(s) compacted into {self.files_added}; "
            f"log checkpointed at version {self.checkpoint_version}"
        )


@dataclass(frozen=True)
class ArrowMap:
    """Rows made from a table's rows in Python, batch by batch: what ``mapInArrow`` runs.

    ``function`` reads batches of the source's ``columns`` and yields batches
    of ``schema``. Spark runs it over a DataFrame (``over``); an engine that
    reads its own files may run it over them without Spark's rows in between
    (``Engine.merge_mapped``): the same function, so the same rows.
    """

    columns: tuple[str, ...]
    function: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]
    schema: T.StructType

    def over(self, df: DataFrame) -> DataFrame:
        """The mapped rows of ``df`` (which has ``columns``), as a DataFrame."""
        columns = df.select(*[F.col(f"`{c}`") for c in self.columns])
        return columns.mapInArrow(self.function, self.schema)


def arrow_schema(schema: T.StructType) -> pa.Schema:
    """A table's Spark schema as Arrow: timestamps in UTC, every column nullable.

    Delta columns are stored nullable: Spark's non-null flags are promises
    about a plan, not constraints we want the log to enforce across engines.
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow = to_arrow_schema(schema, timezone="UTC")
    return pa.schema([f.with_nullable(True) for f in arrow])


class Engine(Protocol):
    """Table operations on one Delta implementation; paths are table folders or URIs.

    ``properties`` are the table properties (``delta.checkpointInterval``) a
    write gives a table it creates.
    """

    name: str
    properties: dict[str, str]

    def exists(self, path: str) -> bool: ...

    def read(self, path: str, version: int | None = None) -> DataFrame: ...

    def partition_columns(self, path: str) -> list[str]: ...

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

        An overwrite (or the write that creates the table) lays the table out
        by ``partition_by``; an append follows the table's own layout.
        ``unchanged_since``: the table version (``ABSENT``: none yet) the
        caller based ``df`` on; a commit to the table since then makes this
        write lose with ConcurrentWriteError instead of replacing that commit.
        """
        ...

    def replace(self, df: DataFrame, path: str, partitions: Partitions, operation: str) -> int:
        """Replace the rows of ``partitions`` with ``df`` (rows within them) in one commit.

        Only the files of those partitions are removed; every other file stays
        in the snapshot as it was. Returns that commit's version.
        """
        ...

    def merge(
        self,
        df: DataFrame,
        path: str,
        keys: list[str],
        partitions: Partitions | None = None,
        covered_at: int | None = None,
    ) -> int:
        """Upsert on ``keys`` in one commit; returns that commit's version.

        With ``partitions`` (the source's rows all lie in them, and the
        partition columns are keys) only those partitions are read and rewritten.
        ``covered_at`` (with ``partitions``): the table version at which the
        caller found every row of those partitions matched by a key of ``df``,
        so the merge keeps none of them and may write ``df`` as their
        replacement, checked against that version.
        """
        ...

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
        """``merge`` of ``mapping``'s rows over the table at ``source`` (at ``source_version``).

        The rows lie in ``partitions`` and cover them at ``covered_at``, as
        ``merge`` takes them: the same rows and the same commit as
        ``merge(mapping.over(read(source, source_version)), ...)``, which is
        what an engine that cannot do better runs.
        """
        ...

    def append_arrow(self, path: str, table: pa.Table) -> int:
        """Append rows already on the driver (an Arrow table) in one commit; returns its version."""
        ...

    def version(self, path: str) -> int: ...

    def history(self, path: str) -> list[dict[str, Any]]:
        """Commits newest first: ``version``, ``timestamp``, ``operation`` (the project's name)."""
        ...

    def files(self, path: str) -> list[str]:
        """The current snapshot's data files, sorted (local paths, or URIs off this machine)."""
        ...

    def rows(self, path: str) -> int: ...

    def vacuum(self, path: str) -> list[str]:
        """Delete files no current snapshot reads; returns what was deleted."""
        ...

    def optimize(self, path: str) -> Compaction:
        """Compact small files (one commit that changes no data), align the table's
        properties with ``properties``, and checkpoint the log at its latest version."""
        ...

    def sql_ddl(self, qualified: str, path: str) -> str:
        """The ``CREATE TABLE`` statement that makes ``path`` queryable as ``qualified``."""
        ...


def delta_table_ddl(qualified: str, path: str) -> str:
    """A catalogue table over a Delta folder, read by Delta's own connector."""
    return f"CREATE TABLE {qualified} USING delta LOCATION '{path}'"


def user_metadata(operation: str, write_id: str | None) -> str:
    """The ``userMetadata`` of a commit this project makes."""
    tags = {OPERATION_KEY: operation, WRITE_ID_KEY: write_id}
    return json.dumps({k: v for k, v in tags.items() if v is not None}, sort_keys=True)


def commit_tags(commit: Mapping[str, Any]) -> dict[str, Any]:
    """The operation and write id a commit's info carries, {} for other tools' commits.

    Read from ``userMetadata``, or from top-level keys where delta-rs tables
    written before both engines shared that field keep them.
    """
    tags = {k: commit[k] for k in (OPERATION_KEY, WRITE_ID_KEY) if commit.get(k) is not None}
    try:
        parsed = json.loads(commit.get("userMetadata") or "{}")
    except ValueError:
        parsed = {}
    if isinstance(parsed, dict):
        tags.update({k: parsed[k] for k in (OPERATION_KEY, WRITE_ID_KEY) if k in parsed})
    return tags


def operation_of(commit: Mapping[str, Any]) -> str:
    """The project's operation name (OVERWRITE, APPEND, MERGE), else Delta's own."""
    return str(commit_tags(commit).get(OPERATION_KEY, commit.get("operation")))


def upserted(target: DataFrame, df: DataFrame, keys: list[str]) -> DataFrame:
    """A MERGE's result computed by copy-on-write: ``target`` without ``df``'s keys, plus ``df``.

    ``df``'s rows take ``target``'s column order; keys compare null-safe, as
    Delta's MERGE on ``<=>`` does (the anti-join on equal keys).
    """
    matched = F.lit(True)
    for key in keys:
        matched = matched & target[key].eqNullSafe(F.col(f"_in.{key}"))
    incoming = df.select(*keys).distinct().alias("_in")
    kept = target.join(incoming, on=matched, how="left_anti")
    return kept.unionByName(df.select(*target.columns))


def new_write_id() -> str:
    return uuid.uuid4().hex


def local_path(uri: str) -> str:
    """A ``file:`` URI as a plain path (``file:///a``, ``file:/a`` -> ``/a``); other URIs as given.

    Both engines hand out the same form, so callers (training ranks, vacuum
    reports) compare and open files without caring which engine listed them.
    """
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if uri.startswith("file:"):
        return uri[len("file:") :]
    return uri


def arrow_file(uri: str) -> tuple[Any, str]:
    """A data file as ``files`` lists it, as pyarrow opens it: ``(filesystem or None, path)``.

    Local paths need no filesystem; ``s3a://`` (Hadoop's name for S3) becomes
    pyarrow's S3 filesystem, which takes its credentials, region and endpoint
    from the standard ``AWS_*`` environment, as boto3 does.
    """
    if "://" not in uri:
        return None, uri
    import pyarrow.fs as pafs

    scheme, rest = uri.split("://", 1)
    found: tuple[Any, str] = pafs.FileSystem.from_uri(
        f"s3://{rest}" if scheme in ("s3a", "s3n") else uri
    )
    return found


def is_local(root: str) -> bool:
    """True for a folder on this machine's filesystem (a plain path or a ``file:`` URI)."""
    return "://" not in root or root.startswith("file:")
