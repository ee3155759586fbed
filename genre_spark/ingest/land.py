"""The I/O layer of ingestion: land a source's rows in bronze, rebuild silver from bronze.

Each source (csv, spotify, synthetic) lands its rows with ``land``, which
replaces that source's rows and keeps the others, so re-ingesting a source is
idempotent. bronze.tracks_raw is partitioned by ``source_key`` (a hash of the
source), so landing one source is one commit that swaps that partition's
files and leaves every other source's files as they were. ``refresh_silver`` then rebuilds silver.tracks and bronze.quarantine
from all of bronze: silver is a function of bronze, never patched in place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.errors import GenreError
from genre_spark.ingest.genres import coarsen, load_genre_map, select_genres
from genre_spark.ingest.validate import decide, split_decided, with_record
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_TRACKS_RAW,
    SILVER_TRACKS,
    raw_row_schema,
)
from genre_spark.schema import INGESTED_AT, SOURCE, SOURCE_KEY

#: Hex digits of SHA-256 kept in a source key: 64 bits, so two sources of one
#: lake share a partition with negligible odds (it would replace both).
KEY_DIGITS = 16


class RawSchemaError(GenreError):
    """Rows handed to ``land`` that lack (or add to) the bronze.tracks_raw columns."""


class IngestInvariantError(GenreError):
    """Rows in bronze != rows in silver + rows in quarantine: a row was lost or doubled."""


@dataclass(frozen=True)
class IngestSummary:
    """What one refresh of silver did, from Spark aggregates over the written tables."""

    rows_in: int
    silver_rows: int
    quarantined: int
    reasons: dict[str, int]
    genres: dict[str, int]
    short_genres: list[str]


def conform_raw(raw: DataFrame, source: str) -> DataFrame:
    """``raw`` in raw_row_schema() column order and types, stamped with ``source``.

    Raises RawSchemaError naming the missing and unexpected columns, so an
    adapter's mistake fails before anything is written.
    """
    expected = [f.name for f in raw_row_schema().fields]
    missing = [c for c in expected if c not in raw.columns]
    extra = [c for c in raw.columns if c not in expected]
    if missing or extra:
        raise RawSchemaError(
            f"rows for {source!r} do not match bronze.tracks_raw: "
            f"missing {missing}, unexpected {extra}; expected {expected}"
        )
    columns = {f.name: F.col(f.name).cast(f.dataType) for f in raw_row_schema().fields}
    columns[SOURCE] = F.lit(source)
    columns[INGESTED_AT] = F.coalesce(F.col(INGESTED_AT), F.current_timestamp())
    return raw.select(*[columns[f.name].alias(f.name) for f in raw_row_schema().fields])


def source_key(source: str) -> str:
    """The partition value of ``source``'s rows: hex of its SHA-256, as short as is safe.

    A source is a URI or path (``csv:/data/exports/...``): too long and too
    full of ``/`` and ``:`` for a folder name; its hash is neither.
    """
    return hashlib.sha256(source.encode()).hexdigest()[:KEY_DIGITS]


def source_key_column() -> Column:
    """``source_key`` of each row's ``source`` in Spark: the same value as ``source_key``."""
    return F.substring(F.sha2(F.col(SOURCE), 256), 1, KEY_DIGITS)


def land(lake: Lake, raw: DataFrame, source: str) -> int:
    """Replace ``source``'s rows in bronze.tracks_raw with ``raw``, other sources kept; one commit.

    Every row of ``raw`` is stamped with ``source`` and its ``source_key``, so
    the next ``land`` of that source replaces exactly these rows, by removing
    that one partition's files. Returns the new table version.
    """
    key = source_key(source)
    rows = conform_raw(raw, source).withColumn(SOURCE_KEY, F.lit(key))
    with stages.run(lake, stages.LAND) as io:
        if io.exists(BRONZE_TRACKS_RAW) and SOURCE_KEY not in io.read(BRONZE_TRACKS_RAW).columns:
            # bronze from before the partitioning: rewritten whole, once, keyed.
            others = io.read(BRONZE_TRACKS_RAW).filter(~F.col(SOURCE).eqNullSafe(F.lit(source)))
            keyed = others.withColumn(SOURCE_KEY, source_key_column())
            return io.write(keyed.unionByName(rows), BRONZE_TRACKS_RAW)
        return io.replace(rows, BRONZE_TRACKS_RAW, [{SOURCE_KEY: key}])


def _counts(df: DataFrame, column: str) -> dict[str, int]:
    return {row[column]: int(row["count"]) for row in df.groupBy(column).count().collect()}


def refresh_silver(lake: Lake, settings: Settings) -> IngestSummary:
    """bronze.tracks_raw -> coarsen -> validate -> select_genres -> bronze.quarantine, silver.tracks.

    Two commits, quarantine first: a crash between them leaves the new
    rejections visible next to the old silver (rows in both, never in
    neither), and the next run rewrites both. The other order could publish a
    silver table whose rejected rows appear nowhere. The counts are read back
    from the written tables, and rows in must equal silver + quarantined.

    Two jobs may refresh at once, each after landing its own source. Each
    notes the outputs' versions before it reads bronze (at one version), and
    its writes are checked against them: a refresh that committed in between
    may have seen rows this one did not, so this one fails with
    ConcurrentWriteError instead of replacing them with an older silver.
    """
    options = settings.validation
    with stages.run(lake, stages.INGEST) as io:
        based_on = {name: io.output_version(name) for name in (BRONZE_QUARANTINE, SILVER_TRACKS)}
        bronze_at = io.version(BRONZE_TRACKS_RAW)
        bronze = io.read(BRONZE_TRACKS_RAW, bronze_at).drop(SOURCE_KEY)
        staged = coarsen(with_record(bronze), load_genre_map(options.genre_map))
        # Persisted once: the genre counts, the quarantine write and the silver
        # write all read the decided rows, which would otherwise re-read bronze
        # and re-run the checks and the per-track_id window three times.
        decided = decide(staged, options.allowed_genres).persist()
        try:
            result = split_decided(decided)
            silver, excluded, report = select_genres(
                result.silver, options.top_genres, options.cap_per_genre, options.min_per_genre
            )
            quarantine = result.quarantine.unionByName(excluded)
            io.write(quarantine, BRONZE_QUARANTINE, based_on[BRONZE_QUARANTINE])
            io.write(silver, SILVER_TRACKS, based_on[SILVER_TRACKS])
        finally:
            decided.unpersist()
        reasons = _counts(io.read(BRONZE_QUARANTINE), "reason")
        genres = _counts(io.read(SILVER_TRACKS), "genre")
    summary = IngestSummary(
        rows_in=bronze.count(),
        silver_rows=sum(genres.values()),
        quarantined=sum(reasons.values()),
        reasons=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        genres=dict(sorted(genres.items())),
        short_genres=report.short_genres,
    )
    if summary.rows_in != summary.silver_rows + summary.quarantined:
        raise IngestInvariantError(
            f"{summary.rows_in} rows in bronze but {summary.silver_rows} in silver + "
            f"{summary.quarantined} quarantined"
        )
    return summary
