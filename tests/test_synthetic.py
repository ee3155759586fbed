"""The synthetic catalogue: determinism, balance, realism, difficulty, bad rows, and the ingest run."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import DEFAULT_GENRES, Settings, SyntheticSettings, load_settings
from genre_spark.ingest import synthetic
from genre_spark.ingest.land import IngestSummary
from genre_spark.lake import Lake, content_hash
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_TRACKS_RAW,
    SILVER_TRACKS,
    raw_row_schema,
)
from genre_spark.schema import FEATURES

N = 3000
runner = CliRunner()


@pytest.fixture(scope="module")
def ingested(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Lake, Settings, IngestSummary]:
    """One synthetic ingest of N rows (5 % bad, 2 % outliers) into a fresh lake."""
    root = tmp_path_factory.mktemp("synthetic") / "lake"
    settings = load_settings(
        overrides={
            "lake": str(root),
            "ingest.synthetic.tracks": N,
            "ingest.synthetic.bad_fraction": 0.05,
            "ingest.synthetic.outlier_fraction": 0.02,
        },
        environ={},
    )
    lake = Lake(spark, settings.lake, settings.engine)
    return lake, settings, synthetic.run(lake, settings)


@pytest.fixture(scope="module")
def silver(ingested) -> Iterator[DataFrame]:
    lake, _, _ = ingested
    table = lake.read(SILVER_TRACKS).cache()
    yield table
    table.unpersist()


def test_same_seed_same_rows_whatever_the_partitioning(spark: SparkSession) -> None:
    cfg = SyntheticSettings(tracks=400, seed=7, bad_fraction=0.1, partitions=1)
    first = synthetic.generate(spark, cfg)
    again = synthetic.generate(spark, cfg.model_copy(update={"partitions": 5}))
    other_seed = synthetic.generate(spark, cfg.model_copy(update={"seed": 8}))
    assert [(f.name, f.dataType) for f in first.schema] == [
        (f.name, f.dataType) for f in raw_row_schema()
    ]
    assert content_hash(first) == content_hash(again)
    assert content_hash(first) != content_hash(other_seed)
    assert first.count() == 400


def test_rows_look_like_spotify_tracks(spark: SparkSession) -> None:
    rows = synthetic.generate(spark, SyntheticSettings(tracks=300, bad_fraction=0.0))
    ids = rows.filter(~F.col("track_id").rlike("^[0-9A-Za-z]{22}$")).count()
    assert ids == 0
    assert rows.select("track_id").distinct().count() == 300
    assert rows.filter("title = '' or artist = '' or title is null or artist is null").count() == 0


def test_every_row_is_accounted_for(ingested) -> None:
    lake, _, summary = ingested
    assert summary.rows_in == N == lake.read(BRONZE_TRACKS_RAW).count()
    assert summary.silver_rows + summary.quarantined == N
    assert summary.silver_rows == lake.read(SILVER_TRACKS).count()


def test_bad_rows_produce_every_kind_of_reason(ingested) -> None:
    _, _, summary = ingested
    kinds = {reason.split(":")[0] for reason in summary.reasons}
    assert kinds == {
        "missing",
        "bad_type",
        "out_of_range",
        "unknown_genre",
        "duplicate_track_id",
        "conflicting_genre",
    }
    assert 0.04 * N < summary.quarantined < 0.09 * N


def test_genres_are_balanced(ingested) -> None:
    _, _, summary = ingested
    assert sorted(summary.genres) == sorted(DEFAULT_GENRES)
    for genre, count in summary.genres.items():
        assert abs(count - N / 10) <= 0.2 * N / 10, (genre, count)
    assert summary.short_genres == list(sorted(DEFAULT_GENRES))  # all below min_per_genre=500


def test_genre_profiles_are_spotify_like(silver: DataFrame) -> None:
    means = {
        row["genre"]: row
        for row in silver.groupBy("genre")
        .agg(*[F.avg(c).alias(c) for c in ("speechiness", "acousticness", "energy", "year")])
        .collect()
    }
    by = lambda feature: sorted(means, key=lambda g: means[g][feature])  # noqa: E731
    assert by("speechiness")[-1] == "hip-hop"
    assert set(by("acousticness")[-2:]) == {"classical", "jazz"}
    assert by("energy")[-1] == "metal"
    assert means["electronic"]["year"] > means["jazz"]["year"] + 15
    assert silver.stat.corr("energy", "loudness") > 0.5
    assert silver.stat.corr("energy", "acousticness") < -0.4
    assert silver.agg(F.min("year"), F.max("year")).first() == (1960, 2025)


def test_outliers_are_extreme_yet_valid(silver: DataFrame) -> None:
    """Clean tempos lie in 55-215 BPM; outliers sit beyond, at one end of every feature."""
    outliers = silver.filter("tempo < 50 or tempo > 230")
    assert 0.01 * N < outliers.count() < 0.03 * N
    ends = sum(
        F.when((F.col(f) <= 0.03) | (F.col(f) >= 0.97), 1).otherwise(0)
        for f in ("energy", "danceability", "valence", "acousticness", "speechiness")
    )
    assert outliers.filter(ends < 5).count() == 0


def test_a_plain_classifier_is_good_but_not_perfect(silver: DataFrame) -> None:
    """Difficulty check: logistic regression on the clean rows lands between 70 and 90 %."""
    data = silver.filter("tempo between 50 and 230").select("genre", *FEATURES).toPandas()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = cross_val_score(model, data[list(FEATURES)], data["genre"], cv=3).mean()
    assert 0.70 < accuracy < 0.90, accuracy


def test_reingest_is_idempotent(ingested) -> None:
    lake, settings, _ = ingested
    before = {t: lake.content_hash(t) for t in (SILVER_TRACKS, BRONZE_QUARANTINE)}
    synthetic.run(lake, settings)
    after = {t: lake.content_hash(t) for t in (SILVER_TRACKS, BRONZE_QUARANTINE)}
    assert after == before


def test_genres_the_map_would_change_are_refused(spark: SparkSession) -> None:
    with pytest.raises(synthetic.SyntheticGenreError, match="blues"):
        synthetic.check_genres(spark, ["rock", "blues", "polka"], "default")
    synthetic.check_genres(spark, ["rock", "blues", "polka"], None)


def test_cli_prints_the_summary(spark: SparkSession, settings: Settings, lake: Lake) -> None:
    args = ["ingest", "synthetic", "--tracks", "400", "--seed", "3", "--lake", settings.lake]
    result = runner.invoke(app, [*args, "--set", "ingest.synthetic.bad_fraction=0.1"])
    assert result.exit_code == 0, result.output
    silver = lake.read(SILVER_TRACKS).count()
    quarantined = lake.read(BRONZE_QUARANTINE).count()
    assert silver + quarantined == 400
    assert re.search(rf"silver.tracks\s*│\s*{silver} ", result.stdout), result.stdout
    assert re.search(rf"quarantined\s*│\s*{quarantined} ", result.stdout), result.stdout
    assert "quarantined by reason" in result.stdout and lake.path(SILVER_TRACKS) in result.stdout

    refused = runner.invoke(app, [*args, "--genres", "rock,blues"])
    assert refused.exit_code == 2 and "blues" in refused.output
