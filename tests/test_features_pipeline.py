"""Features end to end: CSV exports with and without metadata columns, 40 % missing popularity,
and an old model version scored after a new prepare chose other features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from prepare_helpers import silver_pandas
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from typer.testing import CliRunner

from genre_spark import score
from genre_spark.cli import app
from genre_spark.config import Settings, load_settings
from genre_spark.features.spark import read_transform
from genre_spark.ingest.csv import run_csv
from genre_spark.lake import Lake, content_hash
from genre_spark.lake.catalog import GOLD_NORMALIZER, GOLD_SCORED, SILVER_TRACKS
from genre_spark.model import train
from genre_spark.model.registry import load_model
from genre_spark.prepare import run as prepare
from genre_spark.schema import FEATURES

TIDY_COLUMNS = {  # TidyTuesday's header (detected without a mapping) -> canonical field
    "track_id": "track_id",
    "track_name": "title",
    "track_artist": "artist",
    "track_popularity": "popularity",
    "track_album_release_date": "year",
    "playlist_genre": "genre",
    "playlist_subgenre": "genre",
    **{f: f for f in (*FEATURES, "key", "mode")},
}
AUDIO_ONLY_MAPPING = "name: audio_only\nfields:\n  track_id: id\n  genre: label\n" + "".join(
    f"  {f}: {f}\n" for f in FEATURES
)
TOP2000_PERCENT = {"energy", "danceability", "liveness", "valence", "acousticness", "speechiness"}
SMALL = {
    "train.epochs": 2,
    "train.members": 2,
    "train.channels": 8,
    "train.depth": 1,
    "train.batch_size": 64,
    "train.min_epoch_steps": 1,  # the epochs given (the rule is tests/test_train's)
    "score.batch_size": 64,
    "validation.min_per_genre": 0,
}


def _settings(root: Path, **overrides: object) -> Settings:
    return load_settings(overrides={"lake": str(root / "lake"), **SMALL, **overrides}, environ={})


def _tracks() -> pd.DataFrame:
    """Genre-clustered tracks; 40 % of popularity missing, some keys -1 (no key detected)."""
    pdf = silver_pandas(n_per_genre=60, seed=21).drop(columns=["source", "ingested_at"])
    pdf["popularity"] = pdf["popularity"].astype("float").where(pdf.index % 5 >= 2)
    pdf.loc[pdf.index % 13 == 0, "key"] = -1
    return pdf


def _tidy_csv(path: Path, tracks: pd.DataFrame) -> Path:
    frame = pd.DataFrame({column: tracks[field] for column, field in TIDY_COLUMNS.items()})
    frame["track_album_release_date"] = tracks["year"].astype(str) + "-06-01"
    frame["track_popularity"] = tracks["popularity"].map(lambda v: "" if pd.isna(v) else int(v))
    frame.to_csv(path, index=False)
    return path


def _top2000_csv(path: Path, tracks: pd.DataFrame, with_metadata: bool) -> Path:
    """The Top 2000 export's shape: BOM, CRLF, 0-100 integers, seconds; Year/Popularity optional."""
    percent = {f: (tracks[f] * 100).round().astype(int) for f in TOP2000_PERCENT}
    frame = pd.DataFrame(
        {
            "Index": range(1, len(tracks) + 1),
            "Title": tracks["title"],
            "Artist": tracks["artist"] + " " + tracks["genre"],  # one id per (artist, title)
            "Top Genre": tracks["genre"],
            "Year": tracks["year"],
            "Beats Per Minute (BPM)": tracks["tempo"].round().astype(int),
            "Energy": percent["energy"],
            "Danceability": percent["danceability"],
            "Loudness (dB)": tracks["loudness"].round().astype(int),
            "Liveness": percent["liveness"],
            "Valence": percent["valence"],
            "Length (Duration)": (tracks["duration_ms"] / 1000).round().astype(int),
            "Acousticness": percent["acousticness"],
            "Speechiness": percent["speechiness"],
            "Popularity": tracks["popularity"].fillna(50).astype(int),
        }
    )
    if not with_metadata:
        frame = frame.drop(columns=["Year", "Popularity"])
    frame.to_csv(path, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    return path


def _expected_scores(lake: Lake, settings: Settings, version: str) -> dict[str, np.ndarray]:
    """In-process: the version's own transform (numpy) on silver's raw values, then its torch model."""
    loaded = load_model(settings, version)
    silver = lake.read(SILVER_TRACKS).toPandas()
    x = torch.tensor(loaded.transform.apply(silver), dtype=torch.float32)
    with torch.inference_mode():
        probabilities = torch.softmax(loaded.model(x), dim=1).double().numpy()
    return dict(zip(silver["track_id"], probabilities, strict=True))


def _assert_scored_like(lake: Lake, version: str, expected: dict[str, np.ndarray]) -> None:
    rows = lake.read(GOLD_SCORED).where(F.col("model_version") == version).collect()
    assert {r["track_id"] for r in rows} == set(expected)
    genres = sorted(rows[0]["probabilities"])
    for row in rows:
        got = [row["probabilities"][g] for g in genres]
        np.testing.assert_allclose(got, expected[row["track_id"]], atol=1e-5)


def test_metadata_columns_are_used_imputed_and_kept_per_model_version(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    lake = Lake(spark, settings.lake, settings.engine)
    tracks = _tracks()
    run_csv(lake, settings, str(_tidy_csv(tmp_path / "spotify_songs.csv", tracks)))

    # A CSV with popularity and year trains on them, with no flag; 40 % missing popularity
    # is imputed with an indicator input.
    summary = prepare.run(lake, settings)
    assert summary.features == [*FEATURES, "popularity", "year", "key", "mode"]
    assert summary.indicators == ["popularity", "key"]
    assert summary.imputed["popularity"] == tracks["popularity"].isna().sum() > 0.35 * len(tracks)
    trained = train.run(lake, settings)
    assert trained.features == summary.features
    assert "popularity_missing" in trained.result.inputs
    first = score.run(lake, settings, model_version=trained.version)
    assert first.scored == len(tracks) and first.missing_feature > 0
    expected = _expected_scores(lake, settings, trained.version)
    _assert_scored_like(lake, trained.version, expected)
    before = content_hash(lake.read(GOLD_SCORED))

    # A new prepare with other features and another scaler (so other fill values) ...
    other = settings.model_copy(
        update={
            "features": ["tempo", "energy", "danceability", "popularity"],
            "prepare": settings.prepare.model_copy(update={"scaler": "standard"}),
        }
    )
    prepare.run(lake, other)
    current = read_transform(lake.read(GOLD_NORMALIZER))
    own = load_model(settings, trained.version).transform
    assert current.names == other.features != own.names
    assert current.feature("popularity").fill != own.feature("popularity").fill

    # ... and the old version still scores with its own feature list and fill values.
    cli = CliRunner().invoke(
        app,
        ["score", "--model-version", trained.version, "--lake", settings.lake]
        + [x for key, value in SMALL.items() for x in ("--set", f"{key}={value}")],
    )
    assert cli.exit_code == 0, cli.output
    assert content_hash(lake.read(GOLD_SCORED)) == before
    _assert_scored_like(lake, trained.version, expected)


def test_a_csv_without_metadata_columns_trains_on_what_it_has(
    spark: SparkSession, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, **{"train.epochs": 1, "train.members": 1})
    lake = Lake(spark, settings.lake, settings.engine)
    tracks = _tracks().rename(columns={"track_id": "id", "genre": "label"})
    path = tmp_path / "audio.csv"
    tracks[["id", "label", *FEATURES]].to_csv(path, index=False)
    mapping = tmp_path / "audio_only.yaml"
    mapping.write_text(AUDIO_ONLY_MAPPING)
    run_csv(lake, settings, str(path), str(mapping))

    summary = prepare.run(lake, settings)
    assert summary.features == list(FEATURES)
    assert summary.present == pytest.approx(
        {**dict.fromkeys(FEATURES, 1.0), **dict.fromkeys(("popularity", "year", "key", "mode"), 0)}
    )
    assert any(line.startswith("left out: popularity (0% present)") for line in summary.lines())
    assert train.run(lake, settings).features == list(FEATURES)


@pytest.mark.parametrize("with_metadata", [True, False], ids=["with-year-popularity", "without"])
def test_a_top2000_export_is_detected_and_trains_on_the_columns_it_has(
    spark: SparkSession, tmp_path: Path, with_metadata: bool
) -> None:
    """Header detection needs the required columns only: Year and Popularity may be missing."""
    settings = _settings(tmp_path, **{"train.epochs": 1, "train.members": 1})
    path = _top2000_csv(tmp_path / "Spotify-2000.csv", _tracks(), with_metadata)
    ingest = CliRunner().invoke(app, ["ingest", "csv", str(path), "--lake", settings.lake])
    assert ingest.exit_code == 0, ingest.output
    assert "format spotify_top2000" in ingest.output
    notes = [line for line in ingest.output.splitlines() if line.startswith("note:")]
    assert notes == ([] if with_metadata else [
        "note: this file has no column for optional field(s) popularity, year of "
        "spotify_top2000: null in every row"
    ])  # fmt: skip

    lake = Lake(spark, settings.lake, settings.engine)
    silver = lake.read(SILVER_TRACKS)
    assert silver.count() == len(_tracks())
    assert silver.filter(F.col("year").isNotNull()).count() == (
        len(_tracks()) if with_metadata else 0
    )
    summary = prepare.run(lake, settings)
    audio = [f for f in FEATURES if f != "instrumentalness"]  # the export has none
    assert summary.features == ([*audio, "popularity", "year"] if with_metadata else audio)
    assert train.run(lake, settings).features == summary.features
