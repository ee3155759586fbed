"""validate(): every reason, the check order, typing, dedup, and rows in = silver + quarantine."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from genre_spark.ingest.validate import validate, with_record
from genre_spark.lake.catalog import SILVER_TRACKS, raw_row_schema, spec
from genre_spark.schema import FEATURES

EARLY = datetime(2026, 1, 1, 12, 0, 0)
LATE = datetime(2026, 1, 2, 12, 0, 0)

GOOD: dict[str, Any] = {
    "title": "Song",
    "artist": "Band",
    "genre": "rock",
    "year": "1999",
    "tempo": "120.5",
    "energy": "0.8",
    "danceability": "0.5",
    "loudness": "-6.5",
    "liveness": "0.1",
    "valence": "0.4",
    "duration_ms": "200000",
    "acousticness": "0.05",
    "speechiness": "0.04",
    "instrumentalness": "0.0",
    "key": "5",
    "mode": "1",
    "popularity": "50",
    "source": "test",
    "reject_reason": None,
    "ingested_at": EARLY,
}


def raw_rows(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    """Raw rows: GOOD values overridden per row, source_row numbered in order."""
    full = [
        tuple({**GOOD, "source_row": i, **row}[f.name] for f in raw_row_schema().fields)
        for i, row in enumerate(rows)
    ]
    return spark.createDataFrame(full, raw_row_schema())


#: (overrides, expected reason or None for silver), one case per reason and order rule.
CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"track_id": "t01"}, None),
    ({"track_id": "t02", "reject_reason": "malformed_line", "tempo": None}, "malformed_line"),
    ({"track_id": "t03", "tempo": None, "energy": "abc"}, "missing:tempo"),
    ({"track_id": "t04", "energy": "  "}, "missing:energy"),
    ({"track_id": "", "energy": "abc"}, "missing:track_id"),
    ({"track_id": "t05", "energy": "abc", "valence": "2"}, "bad_type:energy"),
    ({"track_id": "t06", "key": "3.5"}, "bad_type:key"),
    ({"track_id": "t07", "tempo": "NaN"}, "bad_type:tempo"),
    ({"track_id": "t08", "energy": "1.5"}, "out_of_range:energy"),
    ({"track_id": "t09", "year": "1850"}, "out_of_range:year"),
    ({"track_id": "t10", "loudness": "-Infinity"}, "out_of_range:loudness"),
    ({"track_id": "t11", "genre": "polka"}, "unknown_genre"),
    ({"track_id": "t12", "genre": "rock"}, "conflicting_genre"),
    ({"track_id": "t12", "genre": "pop"}, "conflicting_genre"),
    ({"track_id": "t12", "genre": "jazz", "tempo": "x"}, "bad_type:tempo"),
    ({"track_id": "t13", "ingested_at": EARLY}, "duplicate_track_id"),
    ({"track_id": "t13", "ingested_at": LATE, "title": "Newer"}, None),
    ({"track_id": "t14", "genre": "pop", "energy": "oops"}, "bad_type:energy"),
    ({"track_id": "t14", "genre": "rock"}, None),
    ({"track_id": " t15 ", "year": "2004.0", "instrumentalness": "", "title": " "}, None),
    ({"track_id": "t16", "source": None}, "missing:source"),
]


@pytest.fixture(scope="module")
def result(spark: SparkSession):
    raw = raw_rows(spark, [row for row, _ in CASES])
    return raw, validate(raw, allowed_genres=["rock", "pop", "jazz"])


def _silver_row(overrides: dict[str, Any]) -> tuple[Any, ...]:
    row = {**GOOD, **overrides}
    typed = {
        "track_id": row["track_id"].strip(),
        "title": row["title"].strip() or None,
        "artist": row["artist"],
        "genre": row["genre"],
        "year": int(float(row["year"])),
        **{f: float(row[f]) if row[f] else None for f in FEATURES},
        "key": int(row["key"]),
        "mode": int(row["mode"]),
        "popularity": int(row["popularity"]),
        "source": row["source"],
        "ingested_at": row["ingested_at"],
    }
    return tuple(typed[f.name] for f in spec(SILVER_TRACKS).schema.fields)


def test_silver_rows_are_typed_and_deduplicated(spark: SparkSession, result) -> None:
    _, validated = result
    expected = spark.createDataFrame(
        [_silver_row(row) for row, reason in CASES if reason is None], spec(SILVER_TRACKS).schema
    )
    assertDataFrameEqual(validated.silver, expected)


def test_each_rejected_row_has_its_first_failing_reason(spark: SparkSession, result) -> None:
    _, validated = result
    expected = spark.createDataFrame(
        [(row["track_id"], reason) for row, reason in CASES if reason is not None],
        "track_id string, reason string",
    )
    assertDataFrameEqual(validated.quarantine.select("track_id", "reason"), expected)


def test_rows_in_equal_silver_plus_quarantine(result) -> None:
    raw, validated = result
    assert raw.count() == validated.silver.count() + validated.quarantine.count()


def test_quarantine_record_is_the_row_as_received(result) -> None:
    _, validated = result
    row = validated.quarantine.filter("reason = 'bad_type:key'").first()
    record = json.loads(row["record"])
    assert record["key"] == "3.5"
    assert record["reject_reason"] is None
    assert "ingested_at" not in record
    assert row["source_row"] == 6
    assert row["quarantined_at"] is not None


def test_an_attached_record_survives_later_rewrites(spark: SparkSession) -> None:
    raw = with_record(raw_rows(spark, [{"track_id": "x", "genre": "Album Rock"}]))
    validated = validate(raw.withColumn("genre", raw["genre"].substr(1, 0)))
    row = validated.quarantine.first()
    assert row["reason"] == "missing:genre"
    assert json.loads(row["record"])["genre"] == "Album Rock"
