"""Registry: MLflow Model Registry versions, gold.models mirror, loading by version or 'latest'."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pyspark.sql import SparkSession

from genre_spark.config import Settings, load_settings
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_MODELS
from genre_spark.model.cnn import GenreCNN
from genre_spark.model.registry import (
    ModelNotFoundError,
    Registration,
    list_versions,
    load_model,
    register_model,
)

GENRES = ["jazz", "pop", "rock"]
TRANSFORM = FeatureTransform.standard({f"f{i}": (float(i), 1.0 + i) for i in range(10)})


def _model(seed: int) -> GenreCNN:
    torch.manual_seed(seed)
    return GenreCNN(
        n_features=10, n_genres=3, channels=4, depth=1, kernel_size=3, dropout=0.0
    ).eval()


@pytest.fixture(scope="module")
def registered(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An empty registry's error, then two versions registered in order."""
    settings = load_settings(
        overrides={"lake": str(tmp_path_factory.mktemp("registry") / "lake")}, environ={}
    )
    lake = Lake(spark, settings.lake)
    with pytest.raises(ModelNotFoundError) as empty:
        load_model(settings)
    models = {"1": _model(1), "2": _model(2)}
    versions = [
        register_model(
            lake,
            settings,
            model,
            params={"channels": 4, "note": "test"},
            metrics={"val_accuracy": f1 + 0.05, "val_macro_f1": f1},
            genres=GENRES,
            transform=TRANSFORM,
            history=[{"epoch": 1, "loss": 1.2}, {"epoch": 2, "loss": 0.9}],
        ).version
        for model, f1 in ((models["1"], 0.7), (models["2"], 0.8))
    ]
    return {
        "settings": settings,
        "lake": lake,
        "models": models,
        "versions": versions,
        "empty": empty,
    }


def test_an_empty_registry_says_what_to_run(registered: dict[str, Any]) -> None:
    assert "run `genre train` first" in str(registered["empty"].value)


@pytest.mark.parametrize(
    ("asked", "expected"), [("1", "1"), ("2", "2"), ("latest", "2"), (None, "2")]
)
def test_load_by_version_or_latest(
    registered: dict[str, Any], asked: str | None, expected: str
) -> None:
    assert registered["versions"] == ["1", "2"]
    settings: Settings = registered["settings"]
    loaded = load_model(settings, asked)
    assert loaded.version == expected
    assert loaded.genres == GENRES and loaded.features == TRANSFORM.names
    assert loaded.transform == TRANSFORM
    assert loaded.params == {"channels": 4, "note": "test"}
    assert isinstance(loaded.model, GenreCNN) and not loaded.model.training
    x = torch.randn(7, 10)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model(x), registered["models"][expected](x), atol=1e-6, rtol=0
        )


def test_unknown_version_is_a_clear_error(registered: dict[str, Any]) -> None:
    with pytest.raises(ModelNotFoundError, match="no version '9'"):
        load_model(registered["settings"], "9")


def test_gold_models_mirrors_every_version(registered: dict[str, Any]) -> None:
    rows = {r["version"]: r for r in list_versions(registered["lake"]).collect()}
    assert sorted(rows) == ["1", "2"]
    assert rows["2"]["val_macro_f1"] == 0.8 and rows["1"]["val_accuracy"] == pytest.approx(0.75)
    assert json.loads(rows["1"]["params"]) == {"channels": 4, "note": "test"}
    assert rows["2"]["mlflow_run_id"] == load_model(registered["settings"], "2").run_id
    assert rows["1"]["genres"] == GENRES and rows["1"]["kind"] == "cnn"
    assert rows["1"]["features"] == TRANSFORM.names
    assert rows["1"]["created_at"] <= rows["2"]["created_at"]


def test_an_identical_model_reuses_its_version_and_says_so(
    spark: SparkSession, tmp_path: Path
) -> None:
    import mlflow

    settings = load_settings(overrides={"lake": str(tmp_path / "lake")}, environ={})
    lake = Lake(spark, settings.lake)

    def register(params: dict[str, Any]) -> Registration:
        return register_model(
            lake,
            settings,
            _model(1),
            params=params,
            metrics={"val_accuracy": 0.75, "val_macro_f1": 0.7},
            genres=GENRES,
            transform=TRANSFORM,
        )

    assert register({"note": "first"}) == Registration("1", reused=False)
    models_version = lake.version(GOLD_MODELS)
    assert register({"note": "first"}) == Registration("1", reused=True)  # same weights, params
    assert lake.version(GOLD_MODELS) == models_version  # nothing mirrored again
    assert register({"note": "other"}) == Registration("2", reused=False)
    name = settings.mlflow.model_name
    versions = mlflow.MlflowClient(settings.tracking_uri).search_model_versions(f"name='{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]


def test_runs_and_artifacts_live_under_the_lake(registered: dict[str, Any]) -> None:
    import mlflow

    settings: Settings = registered["settings"]
    root = Path(settings.lake).resolve()
    assert settings.tracking_uri == f"sqlite:///{root / 'mlflow.db'}"
    run = mlflow.MlflowClient(settings.tracking_uri).get_run(load_model(settings).run_id)
    assert run.info.artifact_uri.startswith((root / "mlartifacts").as_uri())
    history = mlflow.MlflowClient(settings.tracking_uri).get_metric_history(
        run.info.run_id, "epoch_loss"
    )
    assert [(m.step, m.value) for m in history] == [(1, 1.2), (2, 0.9)]


def test_a_version_registered_as_mlflow_pytorch_is_a_clear_error(tmp_path: Path) -> None:
    """Versions from before versions were pyfuncs: a bare network, its transform in metadata."""
    import mlflow

    from genre_spark.model.registry import LegacyModelError, use_tracking

    settings = load_settings(overrides={"lake": str(tmp_path / "lake")}, environ={})
    use_tracking(settings)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            _model(1),
            name="model",
            metadata={"genres": GENRES, "transform": TRANSFORM.to_dict()},
            serialization_format="pickle",
        )
    mlflow.register_model(info.model_uri, settings.mlflow.model_name)
    with pytest.raises(LegacyModelError, match="version 1 is an MLflow 'pytorch' model registered"):
        load_model(settings, "1")
