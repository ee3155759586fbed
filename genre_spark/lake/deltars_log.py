"""The delta-rs engine's side of the Delta log: what a snapshot holds, and one commit per write.

Executors write the Parquet files; :func:`commit_files` (run once, on the
driver side) turns them into one Delta transaction with ``deltalake``:

- an append adds the files, rebased by delta-rs onto whatever committed
  meanwhile (appends never conflict);
- an overwrite of the whole table, or of a set of partitions, removes exactly
  the files it replaces and adds the new ones. It was computed from a table
  version (``read_version``), so it first reads every commit since then and
  loses with :class:`ConcurrentWriteError` if one changed data it replaces
  (the whole table, or a file in one of its partitions) or the table's
  metadata. Commits that only rewrite files (``dataChange: false``, a
  compaction) and commits to other partitions do not conflict: two writers
  replacing different partitions both land, as with Delta's own
  ``replaceWhere``. The commit itself is attempted without delta-rs' own
  retries, so a commit that slips in between this check and the commit is
  checked the same way before the next attempt.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from genre_spark.lake.engine import (
    WRITE_ID_KEY,
    ConcurrentWriteError,
    commit_tags,
    local_path,
    user_metadata,
)
from genre_spark.lake.partitions import (
    Partitions,
    describe,
    matches,
    normalized,
    partition_string,
)

#: Attempts of a checked commit when other writers keep committing in between.
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class DataFile:
    """One data file of a snapshot: where it is, its partition values and size."""

    path: str  # absolute local path
    relative: str  # as the table folder names it (decoded)
    values: dict[str, str | None]
    size: int


@dataclass(frozen=True)
class Commit:
    """What a write asks of the log; travels to the commit worker as JSON."""

    operation: str
    write_id: str | None = None
    overwrite: bool = False
    #: The table version the rows were computed from (overwrites).
    read_version: int | None = None
    #: Partition columns of a table this commit creates or wholly overwrites.
    partition_by: tuple[str, ...] = ()
    #: The partitions an overwrite replaces; None with ``overwrite``: the whole table.
    replace: Partitions | None = None
    #: Table properties of a table this commit creates (``delta.checkpointInterval``).
    properties: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {**self.__dict__, "replace": list(self.replace) if self.replace is not None else None}
        )

    @classmethod
    def from_json(cls, text: str) -> Commit:
        data = json.loads(text)
        replace = data.pop("replace")
        return cls(
            **{**data, "partition_by": tuple(data["partition_by"])},
            replace=normalized(replace) if replace is not None else None,
        )


def _relative(path: str) -> str:
    return urllib.parse.unquote(path)


def snapshot(path: str, version: int | None = None) -> list[DataFile]:
    """The data files of a table version, with their partition values (log metadata only).

    The log stores paths URI-encoded (``%20``...), relative to the table
    folder unless absolute; ``DataFile.path`` is the file on disk.
    """
    from deltalake import DeltaTable

    table = DeltaTable(path, version=version)
    columns = table.metadata().partition_columns
    actions = pa.table(table.get_add_actions(flatten=True))
    root = local_path(table.table_uri).rstrip("/")
    files = []
    for row in actions.to_pylist():
        relative = _relative(row["path"])
        absolute = local_path(relative) if "://" in relative or relative.startswith("/") else None
        values = {c: partition_string(row.get(f"partition.{c}")) for c in columns}
        files.append(
            DataFile(absolute or f"{root}/{relative}", relative, values, int(row["size_bytes"]))
        )
    return sorted(files, key=lambda f: f.path)


def partition_columns(path: str, version: int | None = None) -> list[str]:
    from deltalake import DeltaTable

    return list(DeltaTable(path, version=version).metadata().partition_columns)


def _entry(path: str, version: int) -> list[dict[str, Any]] | None:
    """The actions of one commit's JSON log entry; None when it is gone (log cleaned up)."""
    entry = os.path.join(local_path(path), "_delta_log", f"{version:020d}.json")
    try:
        with open(entry) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return None


def conflict(path: str, since: int, until: int, replace: Partitions | None) -> str | None:
    """Why a write computed from version ``since`` cannot commit after ``until``, or None.

    ``replace`` is what the write replaces (None: the whole table).
    """
    for version in range(since + 1, until + 1):
        actions = _entry(path, version)
        if actions is None:
            return f"the log entry of version {version} is gone"
        for action in actions:
            if "metaData" in action or "protocol" in action:
                return f"version {version} changed the table's schema or properties"
            for kind in ("add", "remove"):
                changed = action.get(kind)
                if not changed or not changed.get("dataChange", True):
                    continue
                if replace is None or matches(changed.get("partitionValues") or {}, replace):
                    what = "the table" if replace is None else f"partition {describe(replace)}"
                    return f"version {version} changed {what} since version {since}"
    return None


def _adds(files: Sequence[dict[str, Any]]) -> list[Any]:
    from deltalake.transaction import AddAction

    return [
        AddAction(
            path=f["path"],
            size=f["size"],
            partition_values=f.get("values") or {},
            modification_time=f["mtime"],
            data_change=True,
            stats=json.dumps({"numRecords": f["rows"]}),
        )
        for f in files
    ]


def _removes(files: Sequence[DataFile]) -> list[Any]:
    from deltalake.transaction import RemoveAction

    now = int(time.time() * 1000)
    return [
        RemoveAction(
            path=f.relative,
            data_change=True,
            deletion_timestamp=now,
            size=f.size,
            partition_values=f.values,
        )
        for f in files
    ]


def commit_files(
    path: str, arrow_schema: pa.Schema, files: list[dict[str, Any]], commit: Commit
) -> None:
    """Commit files already written into the table folder as one Delta transaction.

    ``files``: what the write tasks reported (``path`` relative to the table,
    ``values`` its partition values, ``size``, ``rows``, ``mtime``).
    ``arrow_schema``: the whole table's, partition columns included.
    """
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    adds = _adds(files)
    metadata = {"userMetadata": user_metadata(commit.operation, commit.write_id)}
    schema = Schema.from_arrow(arrow_schema)
    try:
        if not DeltaTable.is_deltatable(path):
            os.makedirs(path, exist_ok=True)
            create_table_with_add_actions(
                path,
                schema,
                adds,
                mode="append",
                partition_by=list(commit.partition_by) or None,
                configuration=commit.properties or None,
                commit_properties=CommitProperties(custom_metadata=metadata),
            )
        elif not commit.overwrite:
            table = DeltaTable(path)
            table.create_write_transaction(
                adds,
                mode="append",
                schema=schema,
                partition_by=table.metadata().partition_columns or None,
                commit_properties=CommitProperties(custom_metadata=metadata),
            )
        else:
            _commit_checked(path, schema, adds, commit, metadata)
    except CommitFailedError as exc:
        raise ConcurrentWriteError.lost(path, exc) from exc


def _commit_checked(
    path: str, schema: Any, adds: list[Any], commit: Commit, metadata: dict[str, str]
) -> None:
    """An overwrite (whole or partitions) on top of the latest version, once nothing conflicts."""
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    # Without a read version (a blind overwrite: SQL INSERT OVERWRITE) the
    # commit lands on whatever version it finds, and loses only to a commit
    # made between that look and its own.
    checked = commit.read_version if commit.read_version is not None else DeltaTable(path).version()
    for _ in range(MAX_ATTEMPTS):
        latest = DeltaTable(path)
        version = latest.version()
        reason = conflict(path, checked, version, commit.replace)
        if reason is not None:
            raise ConcurrentWriteError.lost(path, reason)
        checked = version
        props = CommitProperties(custom_metadata=metadata, max_commit_retries=0)
        try:
            if commit.replace is None and list(commit.partition_by) != list(
                latest.metadata().partition_columns
            ):
                # A new layout: only "create or replace" may change partition columns.
                create_table_with_add_actions(
                    path,
                    schema,
                    adds,
                    mode="overwrite",
                    partition_by=list(commit.partition_by) or None,
                    configuration={**latest.metadata().configuration, **commit.properties},
                    commit_properties=props,
                )
            elif commit.replace is None:
                latest.create_write_transaction(
                    adds,
                    mode="overwrite",
                    schema=schema,
                    partition_by=list(commit.partition_by) or None,
                    commit_properties=props,
                )
            else:
                replaced = [f for f in snapshot(path, version) if matches(f.values, commit.replace)]
                latest.create_write_transaction(
                    [*_removes(replaced), *adds],
                    mode="append",
                    schema=schema,
                    partition_by=latest.metadata().partition_columns or None,
                    commit_properties=props,
                )
            return
        except CommitFailedError:
            if DeltaTable(path).version() == version:
                raise  # not a race: nothing committed in between
    raise ConcurrentWriteError.lost(path, f"other writers kept committing ({MAX_ATTEMPTS} tries)")


def committed_version(path: str, write_id: str) -> int:
    """The version of the commit made by write ``write_id``.

    Searched in the newest commits first: another writer may have committed
    after this one, so the table's latest version is not necessarily ours.
    """
    from deltalake import DeltaTable

    table = DeltaTable(path)
    for limit in (32, None):
        for entry in table.history(limit=limit):
            if commit_tags(entry).get(WRITE_ID_KEY) == write_id:
                return int(entry["version"])
    raise RuntimeError(f"write {write_id} reported success but no commit of {path} carries it")
