"""Partition values and partition predicates, the same for both lake engines.

A partitioned table keeps each value of its partition columns in a folder of
its own (``model_version=2/``), and the Delta log records every file's
partition values. A *partition set* names some of those partitions: each
entry maps partition columns to values, and a file is in the set when its
values equal every entry of one of them. It is how a write says what it
replaces (``Lake.replace``), how a MERGE says what it may touch, and how the
delta-rs engine decides whether a concurrent commit conflicts with a write.

Values are kept as the Delta log stores them: strings, ``None`` for null.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.errors import GenreError

#: One partition (column -> value as the log stores it); a set is a tuple of them.
Partition = Mapping[str, "str | None"]
Partitions = tuple[Partition, ...]

#: The folder name Hive, Spark and Delta give a null partition value.
NULL_FOLDER = "__HIVE_DEFAULT_PARTITION__"
#: What a partition value may hold on the delta-rs engine: its folder name then
#: needs no escaping (readers disagree on how an escaped one is decoded from the log).
_FOLDER_SAFE = re.compile(r"[A-Za-z0-9._+-]+")
#: Partition columns must hold values a folder name and the log can carry as text.
PARTITION_TYPES = (T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.DateType)


class PartitionError(GenreError):
    """A partition predicate or a partitioned write that cannot be carried out as asked."""


def partition_string(value: object) -> str | None:
    """A value as the Delta log stores it in ``partitionValues`` (``None`` stays null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def normalized(partitions: Sequence[Mapping[str, object]]) -> Partitions:
    """A partition set with log-form values, each partition once, in a stable order."""
    unique = {
        tuple(sorted((c, partition_string(v)) for c, v in p.items())): None for p in partitions
    }
    return tuple(dict(items) for items in sorted(unique, key=repr))


def matches(values: Mapping[str, str | None], partitions: Partitions) -> bool:
    """True when a file with partition ``values`` is in the set."""
    return any(all(values.get(c) == v for c, v in p.items()) for p in partitions)


def describe(partitions: Partitions) -> str:
    """``model_version=2`` / ``a=1 AND b=x OR ...``: for messages and logs."""
    return " OR ".join(" AND ".join(f"{c}={v}" for c, v in p.items()) for p in partitions)


def _sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_condition(partitions: Partitions, qualifier: str = "") -> str:
    """The set as a Spark SQL condition (Delta's ``replaceWhere``, a MERGE's ON clause).

    ``qualifier`` prefixes each column (``t`` for a MERGE target). Null values
    compare with ``IS NULL``; an empty set is ``false`` (no partition).
    """
    prefix = f"{qualifier}." if qualifier else ""

    def equals(column: str, value: str | None) -> str:
        quoted = f"{prefix}`{column}`"
        return f"{quoted} IS NULL" if value is None else f"{quoted} = {_sql_literal(value)}"

    terms = ["(" + " AND ".join(equals(c, v) for c, v in p.items()) + ")" for p in partitions if p]
    if any(not p for p in partitions):
        return "true"
    return " OR ".join(terms) if terms else "false"


def column_condition(partitions: Partitions) -> Column:
    """The set as a Column predicate over a DataFrame with the partition columns."""

    def equals(column: str, value: str | None) -> Column:
        col = F.col(f"`{column}`")
        return col.isNull() if value is None else col.cast("string") == F.lit(value)

    terms = [
        functools.reduce(operator.and_, [equals(c, v) for c, v in p.items()], F.lit(True))
        for p in partitions
    ]
    return functools.reduce(operator.or_, terms, F.lit(False))


def within(df: DataFrame, partitions: Partitions, table: str) -> DataFrame:
    """``df``, failing its job at the first row outside ``partitions``.

    A scoped write removes exactly the files of its partitions; a row
    outside them would land beside rows it was meant to replace (or in a
    partition nobody asked to touch), so it stops the write before any commit.
    """
    column = next(iter(partitions[0]), None) if partitions else None
    if column is None:
        return df
    message = F.concat(
        F.lit(f"a row for {table} lies outside the partitions written ({describe(partitions)}): "),
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in partitions[0]])),
    )
    guarded = F.when(column_condition(partitions), F.col(f"`{column}`")).otherwise(
        F.raise_error(message)
    )
    return df.withColumn(column, guarded)


def distinct_partitions(df: DataFrame, columns: Sequence[str]) -> Partitions:
    """The partitions ``df``'s rows fall in: one small aggregate job (a row per partition)."""
    rows = df.select(*[F.col(f"`{c}`") for c in columns]).distinct().collect()
    return normalized([{c: row[c] for c in columns} for row in rows])


def require_partition_columns(schema: T.StructType, columns: Sequence[str], table: str) -> None:
    """Every partition column is in ``schema`` with a type a partition value can hold."""
    types = {f.name: f.dataType for f in schema.fields}
    missing = [c for c in columns if c not in types]
    if missing:
        raise PartitionError(
            f"{table} is partitioned by {list(columns)} but the rows lack {missing}"
        )
    odd = [c for c in columns if not isinstance(types[c], PARTITION_TYPES)]
    if odd:
        raise PartitionError(
            f"{table}: partition column(s) {odd} must be strings, integers or dates, "
            f"got {[types[c].simpleString() for c in odd]}"
        )


def folder(values: Mapping[str, str | None], columns: Sequence[str]) -> str:
    """``col=value/...`` for a file's partition values (null: Hive's default folder).

    Values are kept to letters, digits and ``._+-`` (the catalogue's partition
    values are model versions and hex source keys): any other character would
    have to be escaped in the folder name, and Delta readers do not agree on
    decoding such a path from the log.
    """
    for column in columns:
        value = values[column]
        if value is not None and not _FOLDER_SAFE.fullmatch(value):
            raise PartitionError(
                f"partition value {value!r} of {column} must be letters, digits or ._+- "
                "(a folder name without escaping)"
            )
    return "/".join(f"{c}={NULL_FOLDER if values[c] is None else values[c]}" for c in columns)
