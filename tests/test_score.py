"""Scoring through predict_batch_udf equals in-process torch, and merging is idempotent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from test_lake_partitions import files_by_partition
from typer.testing import CliRunner

from genre_spark import score
from genre_spark.cli import app
from genre_spark.config import Settings, load_settings
from genre_spark.lake import Lake, content_hash
from genre_spark.model.cnn import GenreCNN
from genre_spark.model.registry import load_model, register_model
from genre_spark.prepare.normalize import (
    Normalizer,
    apply_normalizer,
    fit_normalizer,
    normalizer_parameters,
)
from genre_spark.schema import FEATURES

GENRES = ["folk", "jazz", "metal", "pop"]
N_TRACKS = 240


def _catalogue(spark: SparkSession, n: int, seed: int) -> DataFrame:
    """Silver-like rows in Spotify units; every 17th lacks instrumentalness, one lacks its id."""
    rng = np.random.default_rng(seed)
    scale = {"tempo": 200.0, "loudness": -60.0, "duration_ms": 400_000.0}
    rows = []
    for i in range(n):
        values = {f: float(rng.random() * scale.get(f, 1.0)) for f in FEATURES}
        if i % 17 == 0:
            values["instrumentalness"] = None
        rows.append((f"t{seed}-{i:04d}" if i != 5 else None, *values.values()))
    ddl = "track_id string, " + ", ".join(f"{f} double" for f in FEATURES)
    return spark.createDataFrame(rows, ddl)


def _register(
    lake: Lake, settings: Settings, seed: int, normalizer: Normalizer | None = None
) -> tuple[str, GenreCNN]:
    torch.manual_seed(seed)
    model = GenreCNN(len(FEATURES), len(GENRES), channels=4, depth=1, kernel_size=3, dropout=0.0)
    version = register_model(
        lake,
        settings,
        model,
        params={"seed": seed},
        metrics={"val_accuracy": 0.5, "val_macro_f1": 0.4},
        genres=GENRES,
        features=list(FEATURES),
        normalizer=normalizer,
    ).version
    return version, model.eval()


@pytest.fixture(scope="module")
def env(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """One lake with silver.tracks, gold.normalizer and a registered model, shared by the tests."""
    root = Path(tmp_path_factory.mktemp("score"))
    settings = load_settings(
        overrides={"lake": str(root / "lake"), "score.batch_size": 64}, environ={}
    )
    lake = Lake(spark, settings.lake, settings.engine)
    silver = _catalogue(spark, N_TRACKS, seed=1)
    lake.write(silver.repartition(3), "silver.tracks")
    lake.write(fit_normalizer(silver.where("track_id is not null"), FEATURES), "gold.normalizer")
    version, model = _register(lake, settings, seed=3)
    first = score.run(lake, settings)
    yield settings, lake, version, model, first


def _expected(
    lake: Lake, model: torch.nn.Module, version: str, normalizer: Normalizer | None = None
) -> dict[str, tuple]:
    """In-process torch on the same normalized inputs: {track_id: (predicted, probs, top3)}.

    ``normalizer``: the scaling the model was registered with (default: gold.normalizer).
    """
    rows = (
        apply_normalizer(
            lake.read("silver.tracks").where("track_id is not null"),
            lake.read("gold.normalizer") if normalizer is None else normalizer,
            FEATURES,
        )
        .select("track_id", "features")
        .collect()
    )
    x = torch.tensor([r["features"] for r in rows], dtype=torch.float32)
    with torch.inference_mode():
        probs = torch.softmax(model(x), dim=1).double().numpy()
    expected = {}
    for row, p in zip(rows, probs, strict=True):
        order = np.argsort(-p, kind="stable")
        expected[row["track_id"]] = (GENRES[int(np.argmax(p))], p, [GENRES[i] for i in order[:3]])
    return expected


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
    settings, lake, version, model, first = env

    assert first.model_version == version
    assert (first.scored, first.skipped_null_track_id) == (N_TRACKS - 1, 1)
    assert first.missing_feature == len(range(0, N_TRACKS, 17))
    scored = lake.read("gold.scored")
    assert scored.columns == list(score.SCORED_COLUMNS)
    _assert_scores(scored.where(F.col("model_version") == version), _expected(lake, model, version))
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
    assert lake.version("gold.scored") > first.table_version
    rescored = lake.read("gold.scored")
    assert rescored.groupBy(*score.KEYS).count().where("count > 1").count() == 0
    assert content_hash(rescored) == before


def test_new_version_adds_rows_beside_the_old_ones(env: tuple, tmp_path: Path) -> None:
    """Version 2 goes into a partition of its own: version 1's files are the same files after,
    and the table equals both versions scored into a fresh lake."""
    settings, lake, first_version, _, _ = env
    old = content_hash(lake.read("gold.scored").where(F.col("model_version") == first_version))
    first_files = files_by_partition(lake.path("gold.scored"))[first_version]
    second_version, second_model = _register(lake, settings, seed=4)
    skip = settings.model_copy(
        update={"score": settings.score.model_copy(update={"missing": "skip"})}
    )

    result = score.run(lake, skip, model_version="latest")

    assert result.model_version == second_version != first_version
    gaps = len(range(0, N_TRACKS, 17))
    assert (result.scored, result.missing_feature) == (N_TRACKS - 1 - gaps, gaps)
    table = lake.read("gold.scored")
    assert content_hash(table.where(F.col("model_version") == first_version)) == old
    expected = _expected(lake, second_model, second_version)
    kept = {k: v for k, v in expected.items() if int(k.rsplit("-", 1)[1]) % 17}
    _assert_scores(table.where(F.col("model_version") == second_version), kept)
    assert files_by_partition(lake.path("gold.scored"))[first_version] == first_files

    fresh = Lake(lake.spark, str(tmp_path / "fresh"), lake.engine.name)
    for name in ("silver.tracks", "gold.normalizer"):
        fresh.write(lake.read(name), name)
    score.run(fresh, settings, model_version=first_version)
    score.run(fresh, skip, model_version=second_version)
    assert fresh.content_hash("gold.scored") == lake.content_hash("gold.scored")


def test_a_version_is_scored_with_the_normalizer_it_was_trained_with(env: tuple) -> None:
    """gold.normalizer re-fitted after training (a later prepare) does not change the scores."""
    settings, lake, _, _, _ = env
    silver = lake.read("silver.tracks").where("track_id is not null")
    trained_with = normalizer_parameters(
        fit_normalizer(silver.where("track_id < 't1-0060'"), FEATURES), FEATURES
    )
    current = normalizer_parameters(lake.read("gold.normalizer"), FEATURES)
    assert trained_with["tempo"] != current["tempo"]
    version, model = _register(lake, settings, seed=5, normalizer=trained_with)
    assert load_model(settings, version).normalizer == trained_with

    score.run(lake, settings, model_version=version)

    scored = lake.read("gold.scored").where(F.col("model_version") == version)
    _assert_scores(scored, _expected(lake, model, version, trained_with))


def test_repeated_track_ids_fail_before_writing(env: tuple) -> None:
    settings, lake, version, _, _ = env
    before = lake.version("silver.tracks")
    silver = lake.read("silver.tracks")
    lake.write(silver.unionByName(silver.where("track_id is not null").limit(2)), "silver.tracks")
    scored_version = lake.version("gold.scored")
    try:
        with pytest.raises(score.ScoreInputError, match="2 repeated track_id"):
            score.run(lake, settings, model_version=version)
        assert lake.version("gold.scored") == scored_version
    finally:
        lake.write(lake.read("silver.tracks", version=before), "silver.tracks")
