"""Scoring (the Arrow scorer, under mapInArrow or over the files) equals in-process torch; re-scoring
is idempotent."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scoring_data import GENRES, catalogue, register_cnn
from test_lake_partitions import files_by_partition
from typer.testing import CliRunner

from genre_spark import score
from genre_spark.cli import app
from genre_spark.config import load_settings
from genre_spark.features.spark import fit_transform, transform_table
from genre_spark.features.transform import FeatureTransform, FittedFeature
from genre_spark.lake import Lake, content_hash
from genre_spark.lake.catalog import GOLD_NORMALIZER, GOLD_SCORED, SILVER_TRACKS, spec
from genre_spark.lake.engine import arrow_schema
from genre_spark.model.registry import ModelArtifact, load_model
from genre_spark.model.scoring import Scorer, input_columns

N_TRACKS = 240


@pytest.fixture(scope="module")
def env(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """One lake with silver.tracks, gold.normalizer and a registered model, shared by the tests."""
    root = Path(tmp_path_factory.mktemp("score"))
    settings = load_settings(
        overrides={"lake": str(root / "lake"), "score.batch_size": 64}, environ={}
    )
    lake = Lake(spark, settings.lake, settings.engine)
    silver = catalogue(spark, N_TRACKS, seed=1)
    lake.write(silver.repartition(3), SILVER_TRACKS)
    transform = fit_transform(silver.where("track_id is not null"), scaler="quantile").transform
    lake.write(transform_table(spark, transform, version=0), GOLD_NORMALIZER)
    version, model = register_cnn(lake, settings, seed=3, transform=transform)
    first = score.run(lake, settings)
    yield settings, lake, version, model, first, transform


def _silver_pandas(lake: Lake) -> pd.DataFrame:
    return lake.read(SILVER_TRACKS).where("track_id is not null").toPandas()


def _expected(lake: Lake, model: torch.nn.Module, transform: FeatureTransform) -> dict[str, tuple]:
    """In-process torch on the numpy application of ``transform``: {track_id: (predicted, probs, top3)}."""
    rows = _silver_pandas(lake)
    x = torch.tensor(transform.apply(rows), dtype=torch.float32)
    with torch.inference_mode():
        probs = torch.softmax(model(x), dim=1).double().numpy()
    expected = {}
    for track_id, p in zip(rows["track_id"], probs, strict=True):
        order = np.argsort(-p, kind="stable")
        expected[track_id] = (GENRES[int(np.argmax(p))], p, [GENRES[i] for i in order[:3]])
    return expected


def _gaps(lake: Lake) -> pd.Series:
    """Tracks with a missing value of any model feature (key -1 included)."""
    rows = _silver_pandas(lake).set_index("track_id")
    return rows[["instrumentalness", "popularity"]].isna().any(axis=1) | (rows["key"] < 0)


def _assert_scores(scored: DataFrame, expected: dict[str, tuple]) -> None:
    got = {r["track_id"]: r for r in scored.collect()}
    assert set(got) == set(expected)
    for track_id, (predicted, probs, top3) in expected.items():
        row = got[track_id]
        assert row["predicted_genre"] == predicted
        assert row["top3"] == top3
        assert sorted(row["probabilities"]) == GENRES
        np.testing.assert_allclose([row["probabilities"][g] for g in GENRES], probs, atol=1e-5)


def test_scores_equal_in_process_torch_and_rescoring_is_idempotent(env: tuple) -> None:
    settings, lake, version, model, first, transform = env

    assert first.model_version == version
    assert (first.scored, first.skipped_null_track_id) == (N_TRACKS - 1, 1)
    assert first.missing_feature == int(_gaps(lake).sum()) > 0
    scored = lake.read(GOLD_SCORED)
    assert scored.columns == spec(GOLD_SCORED).schema.fieldNames()
    _assert_scores(
        scored.where(F.col("model_version") == version), _expected(lake, model, transform)
    )
    before = content_hash(scored)

    cli = CliRunner().invoke(
        app,
        [
            "score",
            "--model-version",
            version,
            "--lake",
            settings.lake,
            "--set",
            "score.batch_size=64",
        ],
    )

    assert cli.exit_code == 0, cli.output
    assert (
        f"scored {N_TRACKS - 1} tracks of silver.tracks with model version {version}"
        in " ".join(cli.output.split())
    )
    assert lake.version(GOLD_SCORED) > first.table_version
    rescored = lake.read(GOLD_SCORED)
    assert rescored.groupBy(*spec(GOLD_SCORED).keys).count().where("count > 1").count() == 0
    assert content_hash(rescored) == before


def test_workers_load_the_artifact_they_are_given_without_the_tracking_store(env: tuple) -> None:
    """Only the driver talks to MLflow: with the tracking store moved away after the model was
    located, the Python workers still score (they read the artifact alone) and no store is
    re-created where the tracking URI points (SQLite creates the file on first touch)."""
    settings, lake, version, model, _, transform = env
    spec = score.model_spec(settings, version)
    store = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    assert spec.artifact.uri.startswith("file://") and store.is_file()
    away = store.with_name("away.db")
    store.rename(away)
    try:
        scored = score.score(lake.read(SILVER_TRACKS), spec, settings)
        _assert_scores(scored, _expected(lake, model, transform))
        assert not store.exists()
    finally:
        away.rename(store)


def test_new_version_adds_rows_beside_the_old_ones(env: tuple, tmp_path: Path) -> None:
    """Version 2 goes into a partition of its own: version 1's files are the same files after,
    and the table equals both versions scored into a fresh lake."""
    settings, lake, first_version, _, _, transform = env
    old = content_hash(lake.read(GOLD_SCORED).where(F.col("model_version") == first_version))
    first_files = files_by_partition(lake.path(GOLD_SCORED))[first_version]
    second_version, second_model = register_cnn(lake, settings, seed=4, transform=transform)
    skip = settings.model_copy(
        update={"score": settings.score.model_copy(update={"missing": "skip"})}
    )

    result = score.run(lake, skip, model_version="latest")

    assert result.model_version == second_version != first_version
    gaps = _gaps(lake)
    assert (result.scored, result.missing_feature) == (N_TRACKS - 1 - gaps.sum(), gaps.sum())
    table = lake.read(GOLD_SCORED)
    assert content_hash(table.where(F.col("model_version") == first_version)) == old
    expected = _expected(lake, second_model, transform)
    kept = {k: v for k, v in expected.items() if not gaps[k]}
    _assert_scores(table.where(F.col("model_version") == second_version), kept)
    assert files_by_partition(lake.path(GOLD_SCORED))[first_version] == first_files

    fresh = Lake(lake.spark, str(tmp_path / "fresh"), lake.engine.name)
    for name in (SILVER_TRACKS, GOLD_NORMALIZER):
        fresh.write(lake.read(name), name)
    score.run(fresh, settings, model_version=first_version)
    score.run(fresh, skip, model_version=second_version)
    # Only this test's two versions: other tests of the module score versions of their own
    # into the shared lake, before or after this one (random order).
    ours = lake.read(GOLD_SCORED).where(F.col("model_version").isin(first_version, second_version))
    assert fresh.content_hash(GOLD_SCORED) == content_hash(ours)


def test_scoring_part_of_the_tracks_again_keeps_the_version_s_other_rows(env: tuple) -> None:
    """Re-scoring a version merges: the earlier rows of tracks this run does not score stay.

    Another table (here silver.tracks rewritten with part of its tracks and new ones) keeps
    the tracks it lacks; under ``skip`` the tracks with a missing value keep their earlier
    (imputed) scores. Only a run that scores every track the version has replaces them all."""
    settings, lake, _, _, _, transform = env
    version, model = register_cnn(lake, settings, seed=6, transform=transform)
    score.run(lake, settings, model_version=version)
    scored = lake.read(GOLD_SCORED).where(F.col("model_version") == version)
    before, earlier = content_hash(scored), _expected(lake, model, transform)
    skip = settings.model_copy(
        update={"score": settings.score.model_copy(update={"missing": "skip"})}
    )

    score.run(lake, skip, model_version=version)

    assert content_hash(lake.read(GOLD_SCORED).where(F.col("model_version") == version)) == before
    silver_version = lake.version(SILVER_TRACKS)
    part = lake.read(SILVER_TRACKS).where("track_id < 't1-0100'")
    lake.write(part.unionByName(catalogue(lake.spark, 30, seed=7)), SILVER_TRACKS)
    try:
        score.run(lake, settings, model_version=version)
        now = _expected(lake, model, transform)
    finally:
        lake.write(lake.read(SILVER_TRACKS, version=silver_version), SILVER_TRACKS)
    assert set(earlier) - set(now) and set(now) - set(earlier)  # some kept, some new
    scored = lake.read(GOLD_SCORED).where(F.col("model_version") == version)
    _assert_scores(scored, {**earlier, **now})


def test_raw_columns_are_read_from_arrow_and_rows_are_built_as_arrow() -> None:
    """The worker's Arrow views: a sliced batch reads its own rows, a null is NaN (an integer
    column with one is float), what the transform reads as missing; the gold.scored row is
    built from the probabilities with the top 3 by falling probability, ties to the lower label;
    a row without track_id is left out, and (``skip``) one with a missing value."""
    tracks = pa.RecordBatch.from_pydict(
        {"tempo": pa.array([0.5, None, 2.5, 3.5]), "key": pa.array([1, 2, None, 4], pa.int32())}
    )
    columns = input_columns(tracks.slice(1, 3), ["tempo", "key"])
    assert list(columns) == ["tempo", "key"]
    np.testing.assert_array_equal(columns["tempo"], [np.nan, 2.5, 3.5])
    np.testing.assert_array_equal(columns["key"], [2.0, np.nan, 4.0])
    assert input_columns(tracks.slice(3, 1), ["key"])["key"].tolist() == [4]

    at = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    scorer = Scorer(
        uuid.uuid4(),
        ModelArtifact("unused", "7", "file:///nowhere", "run"),
        "7",
        ("a", "b", "c", "d"),
        FeatureTransform(
            (FittedFeature("tempo", "continuous", "standard", 0.0, False, 1.0, 0.0, 1.0),)
        ),
        64,
        True,
        at,
        arrow_schema(spec(GOLD_SCORED).schema),
    )
    probabilities = np.array([[0.2, 0.5, 0.2, 0.1], [0.4, 0.1, 0.4, 0.1]])
    batch = {"track_id": ["x", None, "y", "z"], "tempo": [1.0, 2.0, 3.0, None]}
    rows = scorer.rows(pa.RecordBatch.from_pydict(batch), lambda _: probabilities)
    assert rows.schema == arrow_schema(spec(GOLD_SCORED).schema)
    assert rows.to_pylist() == [
        {
            "track_id": "x",
            "model_version": "7",
            "predicted_genre": "b",
            "probabilities": list(zip("abcd", [0.2, 0.5, 0.2, 0.1], strict=True)),
            "top3": ["b", "a", "c"],  # a tie goes to the lower label index
            "scored_at": at,
        },
        {
            "track_id": "y",
            "model_version": "7",
            "predicted_genre": "a",
            "probabilities": list(zip("abcd", [0.4, 0.1, 0.4, 0.1], strict=True)),
            "top3": ["a", "c", "b"],
            "scored_at": at,
        },
    ]


def test_a_version_is_scored_with_the_transform_it_was_trained_with(env: tuple) -> None:
    """gold.normalizer re-fitted after training (other features, other numbers) changes nothing."""
    settings, lake, _, _, _, _ = env
    silver = lake.read(SILVER_TRACKS).where("track_id is not null")
    trained_with = fit_transform(
        silver.where("track_id < 't1-0060'"), ["tempo", "energy", "popularity", "key"]
    ).transform
    lake.write(
        transform_table(lake.spark, fit_transform(silver).transform, version=1), GOLD_NORMALIZER
    )
    version, model = register_cnn(lake, settings, seed=5, transform=trained_with)
    assert load_model(settings, version).transform == trained_with

    score.run(lake, settings, model_version=version)

    scored = lake.read(GOLD_SCORED).where(F.col("model_version") == version)
    _assert_scores(scored, _expected(lake, model, trained_with))


def test_repeated_track_ids_fail_before_writing(env: tuple) -> None:
    settings, lake, version, _, _, _ = env
    before = lake.version(SILVER_TRACKS)
    silver = lake.read(SILVER_TRACKS)
    lake.write(silver.unionByName(silver.where("track_id is not null").limit(2)), SILVER_TRACKS)
    scored_version = lake.version(GOLD_SCORED)
    try:
        with pytest.raises(score.ScoreInputError, match="2 repeated track_id"):
            score.run(lake, settings, model_version=version)
        assert lake.version(GOLD_SCORED) == scored_version
    finally:
        lake.write(lake.read(SILVER_TRACKS, version=before), SILVER_TRACKS)
