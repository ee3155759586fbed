"""Validation: bronze rows (strings, as received) -> typed silver rows + quarantine rows.

Every source lands its rows in ``bronze.tracks_raw`` with the same string
columns, so one function types and checks them all. A row either becomes one
silver row or one quarantine row with exactly one reason; nothing is dropped,
so ``raw.count() == silver.count() + quarantine.count()``.

Checks, in order (the first that fails names the reason):

1. the row's own ``reject_reason`` (a source adapter, or ``coarsen``, already rejected it);
2. ``missing:<col>``: a required field (and ``source``) is null or blank;
3. ``bad_type:<col>``: a non-blank value does not parse as the field's type
   (``try_cast``; integers must be whole numbers; NaN is not a number here);
4. ``out_of_range:<col>``: outside the field's ``low``/``high``;
5. ``unknown_genre``: not among ``allowed_genres`` (when given);
6. ``conflicting_genre``: the track_id carries more than one genre among the
   rows that passed 1-5: all its rows are quarantined, since no label can be trusted;
7. ``duplicate_track_id``: the track_id repeats with one genre: the row with
   the latest ``ingested_at``, then the smallest ``xxhash64(record)`` (then
   ``record``) is kept, so the choice never depends on partitioning.

Fields are checked in ``schema.TRACK_FIELDS`` order within each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.lake.catalog import BRONZE_QUARANTINE, BRONZE_TRACKS_RAW, SILVER_TRACKS, spec
from genre_spark.schema import INGESTED_AT, REJECT_REASON, SOURCE, TRACK_FIELDS, Field

RECORD = "record"
CONFLICTING_GENRE = "conflicting_genre"
DUPLICATE_TRACK_ID = "duplicate_track_id"
UNKNOWN_GENRE = "unknown_genre"

_REASON = "_reason"
_NUMERIC = tuple(f for f in TRACK_FIELDS if not isinstance(f.dtype, T.StringType))


@dataclass(frozen=True)
class ValidationResult:
    """Typed rows for silver.tracks, and the rejected rows for bronze.quarantine."""

    silver: DataFrame
    quarantine: DataFrame


def record_json(columns: Sequence[str]) -> Column:
    """The row as JSON, nulls included, wall-clock columns left out.

    Leaving ``ingested_at`` out keeps a re-run's quarantine identical (it
    still has ``quarantined_at``); keeping nulls shows which field was missing.
    """
    wall_clock = spec(BRONZE_TRACKS_RAW).time_columns
    kept = [F.col(f"`{c}`") for c in columns if c not in wall_clock and c != RECORD]
    return F.to_json(F.struct(*kept), {"ignoreNullFields": "false"})


def with_record(df: DataFrame) -> DataFrame:
    """Attach the as-received ``record`` once, before any transform (coarsen) rewrites a field."""
    return df if RECORD in df.columns else df.withColumn(RECORD, record_json(df.columns))


def quarantine_rows(df: DataFrame, reason: Column) -> DataFrame:
    """Rows of ``df`` as bronze.quarantine rows with ``reason``, in its catalogue schema's order."""
    recorded = with_record(df)
    source_row = F.col("source_row") if "source_row" in df.columns else F.lit(None)
    columns = {
        "track_id": F.col("track_id"),
        SOURCE: F.col(SOURCE),
        "source_row": source_row,
        "reason": reason,
        RECORD: F.col(RECORD),
        "quarantined_at": F.current_timestamp(),
    }
    return recorded.select(
        *[
            columns[f.name].cast(f.dataType).alias(f.name)
            for f in spec(BRONZE_QUARANTINE).schema.fields
        ]
    )


def _blank(column: Column) -> Column:
    return column.isNull() | (F.trim(column) == "")


def _number(field: Field) -> Column:
    """The field parsed as a double, computed once per row by ``_with_numbers``."""
    return F.col(f"_number_{field.name}")


def _with_numbers(df: DataFrame) -> DataFrame:
    """Parse each numeric field once (integers as doubles, checked for wholeness later).

    The checks read a parsed value up to four times; one projection keeps the
    generated code small and each string parsed once.
    """
    return df.withColumns(
        {f"_number_{f.name}": F.trim(F.col(f.name)).try_cast("double") for f in _NUMERIC}
    )


def _bad_type(field: Field) -> Column:
    value = _number(field)
    bad = value.isNull() | F.isnan(value)
    if isinstance(field.dtype, T.IntegerType):
        bad = bad | (value != F.floor(value))
    return ~_blank(F.col(field.name)) & bad


def _out_of_range(field: Field) -> Column:
    value = _number(field)
    out = F.lit(False)
    if field.low is not None:
        out = out | (value < F.lit(field.low))
    if field.high is not None:
        out = out | (value > F.lit(field.high))
    return out


def _first_failure(allowed_genres: Sequence[str] | None) -> Column:
    """Checks 1-5 as one expression: the first failing check's reason, or null."""
    checks: list[tuple[Column, Column]] = [
        (~_blank(F.col(REJECT_REASON)), F.trim(F.col(REJECT_REASON)))
    ]
    required = [f.name for f in TRACK_FIELDS if f.required] + [SOURCE]
    checks += [(_blank(F.col(name)), F.lit(f"missing:{name}")) for name in required]
    checks += [(_bad_type(f), F.lit(f"bad_type:{f.name}")) for f in _NUMERIC]
    checks += [(_out_of_range(f), F.lit(f"out_of_range:{f.name}")) for f in _NUMERIC]
    if allowed_genres is not None:
        checks.append((~F.trim(F.col("genre")).isin(*allowed_genres), F.lit(UNKNOWN_GENRE)))
    expr = F.when(checks[0][0], checks[0][1])
    for condition, reason in checks[1:]:
        expr = expr.when(condition, reason)
    return expr


def _typed(field: Field) -> Column:
    if isinstance(field.dtype, T.StringType):
        return F.nullif(F.trim(F.col(field.name)), F.lit(""))
    return _number(field).try_cast(field.dtype)


def _dedup_reason(passed: Column) -> Column:
    """Checks 6-7 among the rows that passed 1-5, per (trimmed) track_id."""
    genre = F.when(passed, F.trim(F.col("genre")))
    per_track = Window.partitionBy(F.trim(F.col("track_id")))
    order = Window.partitionBy(F.trim(F.col("track_id")), passed).orderBy(
        F.col(INGESTED_AT).desc_nulls_last(), F.xxhash64(F.col(RECORD)), F.col(RECORD)
    )
    conflicting = F.min(genre).over(per_track) != F.max(genre).over(per_track)
    return F.when(conflicting, F.lit(CONFLICTING_GENRE)).when(
        F.row_number().over(order) > 1, F.lit(DUPLICATE_TRACK_ID)
    )


def decide(raw: DataFrame, allowed_genres: Sequence[str] | None = None) -> DataFrame:
    """Every row of ``raw`` with its reason to reject it (``_reason``, null: valid).

    The expensive half of ``validate`` (parsing, the checks, the per-track_id
    window): a caller that reads both outcomes can persist this once and
    ``split_decided`` it, instead of computing it for each outcome.
    """
    first = _first_failure(allowed_genres)
    checked = _with_numbers(with_record(raw)).withColumn(_REASON, first)
    return checked.withColumn(
        _REASON, F.coalesce(F.col(_REASON), _dedup_reason(F.col(_REASON).isNull()))
    )


def split_decided(decided: DataFrame) -> ValidationResult:
    """``decide``'s rows as typed silver rows and quarantine rows (a projection, nothing computed)."""
    silver_columns = [_typed(f).alias(f.name) for f in TRACK_FIELDS] + [
        F.col(SOURCE),
        F.coalesce(F.col(INGESTED_AT), F.current_timestamp()).alias(INGESTED_AT),
    ]
    silver = (
        decided.filter(F.col(_REASON).isNull())
        .select(*silver_columns)
        .select(*[F.col(f.name).cast(f.dataType) for f in spec(SILVER_TRACKS).schema.fields])
    )
    quarantine = quarantine_rows(decided.filter(F.col(_REASON).isNotNull()), F.col(_REASON))
    return ValidationResult(silver=silver, quarantine=quarantine)


def validate(raw: DataFrame, allowed_genres: Sequence[str] | None = None) -> ValidationResult:
    """Type and check ``raw`` (``schema.raw_schema()`` columns); see the module doc for the order.

    A pure DataFrame function: nothing is read or written, nothing collected.
    ``raw`` may carry a ``record`` column (``with_record``) holding the row as
    first received; otherwise the record is built from ``raw`` itself.
    """
    return split_decided(decide(raw, allowed_genres))
