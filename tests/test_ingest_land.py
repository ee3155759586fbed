"""land / refresh_silver / genre functions: bronze per source, silver from bronze, genre selection."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from test_validate import raw_rows

from genre_spark.config import Settings
from genre_spark.ingest.genres import (
    GenreMapError,
    coarsen,
    load_genre_map,
    select_genres,
)
from genre_spark.ingest.land import RawSchemaError, land, refresh_silver, source_key
from genre_spark.ingest.validate import validate
from genre_spark.lake import Lake, content_hash
from genre_spark.lake.catalog import BRONZE_QUARANTINE, BRONZE_TRACKS_RAW, SILVER_TRACKS

#: Real 'Top Genre' values of spotify_top2000.csv and TidyTuesday's playlist genres.
REAL_LABELS = {
    "album rock": "rock",
    "adult standards": "jazz",
    "dutch pop": "pop",
    "alternative metal": "metal",
    "dance pop": "pop",
    "dutch indie": "rock",
    "permanent wave": "rock",
    "britpop": "rock",
    "british soul": "r&b",
    "dutch hip hop": "hip-hop",
    "big beat": "electronic",
    "arkansas country": "country",
    "latin alternative": "latin",
    "classic soundtrack": "classical",
    "indie pop": "pop",
    "modern folk rock": "rock",
    "classic country pop": "country",
    "glam metal": "metal",
    "  Dance   Pop ": "pop",
    "edm": "electronic",
    "rap": "hip-hop",
    "r&b": "r&b",
    "latin hip hop": "latin",
    "pop edm": "electronic",
    "hip pop": "r&b",
}


def test_coarsen_maps_real_fine_genres(spark: SparkSession) -> None:
    labels = [*REAL_LABELS, "reggae", "N/A", "unknown", ""]
    raw = raw_rows(spark, [{"track_id": f"t{i}", "genre": g} for i, g in enumerate(labels)])
    coarse = coarsen(raw, load_genre_map("default")).select("track_id", "genre", "reject_reason")
    expected = [(f"t{i}", g, None) for i, g in enumerate(REAL_LABELS.values())]
    n = len(REAL_LABELS)
    expected += [(f"t{n + i}", None, "unknown_genre") for i in range(3)]
    expected.append((f"t{n + 3}", None, None))
    assertDataFrameEqual(coarse, spark.createDataFrame(expected, coarse.schema))


def test_identity_map_only_normalises(spark: SparkSession) -> None:
    raw = raw_rows(
        spark, [{"track_id": "a", "genre": " Dutch  Pop"}, {"track_id": "b", "genre": "other"}]
    )
    coarse = coarsen(raw, load_genre_map("none")).select("genre", "reject_reason")
    assert load_genre_map(None) == load_genre_map("none")
    assertDataFrameEqual(coarse, [("dutch pop", None), (None, "unknown_genre")])


def test_genre_map_file_errors_are_named(tmp_path) -> None:
    bad = tmp_path / "map.yaml"
    bad.write_text("rules: [{pattern: '(', genre: rock}]\n")
    with pytest.raises(GenreMapError, match="rule 0"):
        load_genre_map(str(bad))
    with pytest.raises(GenreMapError, match="not found"):
        load_genre_map(str(tmp_path / "missing.yaml"))


def test_select_genres_top_n_and_cap(spark: SparkSession) -> None:
    genres = ["rock"] * 6 + ["pop"] * 4 + ["jazz"] * 2
    raw = raw_rows(spark, [{"track_id": f"id{i}", "genre": g} for i, g in enumerate(genres)])
    silver = validate(raw).silver
    kept, quarantine, report = select_genres(silver, top_genres=2, cap_per_genre=3, min_per_genre=4)

    by_hash = silver.withColumn("h", F.xxhash64("track_id")).filter("genre != 'jazz'")
    ranked = {
        g: [r["track_id"] for r in by_hash.filter(F.col("genre") == g).orderBy("h").collect()]
        for g in ("rock", "pop")
    }
    expected_kept = ranked["rock"][:3] + ranked["pop"][:3]
    assertDataFrameEqual(kept.select("track_id"), [(t,) for t in expected_kept])
    expected_out = [(t, "over_genre_cap") for t in ranked["rock"][3:] + ranked["pop"][3:]]
    expected_out += [(f"id{i}", "genre_not_in_top_n") for i in (10, 11)]
    assertDataFrameEqual(quarantine.select("track_id", "reason"), expected_out)
    assert report.kept == ["pop", "rock"]
    assert report.counts == {"pop": 3, "rock": 3}
    assert report.counts_before == {"rock": 6, "pop": 4, "jazz": 2}
    assert report.short_genres == ["pop", "rock"]
    assert json.loads(quarantine.first()["record"])["track_id"].startswith("id")


def test_land_replaces_only_its_source(spark: SparkSession, lake: Lake) -> None:
    land(lake, raw_rows(spark, [{"track_id": "c1"}, {"track_id": "c2"}]), "csv")
    land(lake, raw_rows(spark, [{"track_id": "s1"}]), "spotify")
    land(lake, raw_rows(spark, [{"track_id": "c3"}]), "csv")
    table = lake.read(BRONZE_TRACKS_RAW).select("track_id", "source")
    assertDataFrameEqual(table, [("s1", "spotify"), ("c3", "csv")])
    assert lake.version(BRONZE_TRACKS_RAW) == 2


def _files_of(lake: Lake, source: str) -> set[str]:
    """The snapshot's bronze files of one source (its partition folder), as the log lists them."""
    return {f for f in lake.files(BRONZE_TRACKS_RAW) if f"/source_key={source_key(source)}/" in f}


def test_landing_a_second_source_keeps_the_first_sources_files(
    spark: SparkSession, engine_lake: Lake, tmp_path
) -> None:
    """One partition replace per source, on both engines: the other source's files stay the same
    files, a re-run changes no content, and bronze equals both sources landed from scratch."""
    first = raw_rows(spark, [{"track_id": f"a{i}"} for i in range(6)]).repartition(2)
    second = raw_rows(spark, [{"track_id": f"b{i}"} for i in range(4)]).repartition(2)
    land(engine_lake, first, "csv:/data/first.csv")
    files = _files_of(engine_lake, "csv:/data/first.csv")
    assert files
    land(engine_lake, second, "csv:/data/second.csv")
    assert _files_of(engine_lake, "csv:/data/first.csv") == files
    assert engine_lake.partition_columns(BRONZE_TRACKS_RAW) == ["source_key"]
    landed = engine_lake.content_hash(BRONZE_TRACKS_RAW)
    land(engine_lake, second, "csv:/data/second.csv")  # the re-run
    assert engine_lake.content_hash(BRONZE_TRACKS_RAW) == landed
    assert _files_of(engine_lake, "csv:/data/first.csv") == files

    scratch = Lake(spark, str(tmp_path / "scratch"), engine_lake.engine.name)  # type: ignore[arg-type]
    land(scratch, second, "csv:/data/second.csv")
    land(scratch, first, "csv:/data/first.csv")
    assert content_hash(scratch.read(BRONZE_TRACKS_RAW)) == landed


def test_land_rejects_wrong_columns(spark: SparkSession, lake: Lake) -> None:
    raw = raw_rows(spark, [{"track_id": "x"}]).drop("tempo").withColumn("bpm", F.lit("1"))
    with pytest.raises(RawSchemaError, match=r"missing \['tempo'\], unexpected \['bpm'\]"):
        land(lake, raw, "csv")
    assert not lake.exists(BRONZE_TRACKS_RAW)


def test_refresh_silver_keeps_the_invariant(
    spark: SparkSession, lake: Lake, settings: Settings
) -> None:
    rows = [
        {"track_id": "a", "genre": "album rock"},
        {"track_id": "b", "genre": "dutch pop"},
        {"track_id": "c", "genre": "reggae"},
        {"track_id": "d", "genre": "dance pop", "tempo": "fast"},
        {"track_id": "b", "genre": "dutch pop"},
    ]
    land(lake, raw_rows(spark, rows), "csv")
    summary = refresh_silver(lake, settings)
    assert (summary.rows_in, summary.silver_rows, summary.quarantined) == (5, 2, 3)
    assert summary.reasons == {"bad_type:tempo": 1, "duplicate_track_id": 1, "unknown_genre": 1}
    assert summary.genres == {"pop": 1, "rock": 1}
    assert summary.short_genres == ["pop", "rock"]
    assertDataFrameEqual(
        lake.read(SILVER_TRACKS).select("track_id", "genre"), [("a", "rock"), ("b", "pop")]
    )
    fine = lake.read(BRONZE_QUARANTINE).filter("reason = 'unknown_genre'").first()["record"]
    assert json.loads(fine)["genre"] == "reggae"
