"""What every lake engine provides, and the pieces both engines share.

``Lake`` talks to an engine through :class:`Engine` only, so delta-rs
(``deltars.py``) and Delta's JVM connector (``deltaspark.py``) are swapped by
configuration and give the same guarantees: each write or merge is one
atomic commit and returns that commit's own version, a lost commit race is a
:class:`ConcurrentWriteError`, and ``files`` is the snapshot's file list as
the Delta log states it.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from pyspark.sql import DataFrame

#: Commit metadata keys: the operation shown in history, and the id of the write
#: that made the commit (how a writer finds its own version among concurrent ones).
OPERATION_KEY = "genre_spark.operation"
WRITE_ID_KEY = "genre_spark.write_id"


class ConcurrentWriteError(RuntimeError):
    """Another writer committed to the table first; the caller may retry."""

    @classmethod
    def lost(cls, path: str, cause: BaseException) -> ConcurrentWriteError:
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return cls(f"commit to {path} lost to a concurrent writer: {first}")


class Engine(Protocol):
    """Table operations on one Delta implementation; paths are table folders or URIs."""

    name: str

    def exists(self, path: str) -> bool: ...

    def read(self, path: str, version: int | None = None) -> DataFrame: ...

    def write(self, df: DataFrame, path: str, overwrite: bool, operation: str) -> int:
        """One commit of ``df``; returns that commit's version."""
        ...

    def merge(self, df: DataFrame, path: str, keys: list[str]) -> int:
        """Upsert on ``keys`` in one commit; returns that commit's version."""
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

    def sql_ddl(self, qualified: str, path: str) -> str:
        """The ``CREATE TABLE`` statement that makes ``path`` queryable as ``qualified``."""
        ...


def delta_table_ddl(qualified: str, path: str) -> str:
    """A catalogue table over a Delta folder, read by Delta's own connector."""
    return f"CREATE TABLE {qualified} USING delta LOCATION '{path}'"


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


def is_local(root: str) -> bool:
    """True for a folder on this machine's filesystem (a plain path or a ``file:`` URI)."""
    return "://" not in root or root.startswith("file:")
