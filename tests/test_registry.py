"""Registry: MLflow Model Registry versions, gold.models mirror, loading by version or 'latest'."""

from __future__ import annotations

import json

import pytest
import torch

from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.model.cnn import GenreCNN
from genre_spark.model.registry import ModelNotFoundError, list_versions, load_model, register_model

GENRES = ["jazz", "pop", "rock"]


def _model(seed: int) -> GenreCNN:
    torch.manual_seed(seed)
    return GenreCNN(
        n_features=10, n_genres=3, channels=4, depth=1, kernel_size=3, dropout=0.0
    ).eval()


def _register(lake: Lake, settings: Settings, model: GenreCNN, f1: float) -> str:
    return register_model(
        lake,
        settings,
        model,
        params={"channels": 4, "note": "test"},
        metrics={"val_accuracy": f1 + 0.05, "val_macro_f1": f1},
        genres=GENRES,
        features=list(settings.features),
        history=[{"epoch": 1, "loss": 1.2}, {"epoch": 2, "loss": 0.9}],
    )


def test_versions_load_by_name_and_latest(lake: Lake, settings: Settings) -> None:
    with pytest.raises(ModelNotFoundError, match="run `genre train` first"):
        load_model(settings)
    first, second = _model(1), _model(2)
    assert _register(lake, settings, first, 0.7) == "1"
    assert _register(lake, settings, second, 0.8) == "2"

    x = torch.randn(7, 10)
    with torch.no_grad():
        for version, model in (("1", first), ("2", second), ("latest", second), (None, second)):
            loaded = load_model(settings, version)
            assert loaded.version == ("2" if version in ("latest", None) else version)
            assert loaded.genres == GENRES and loaded.features == list(settings.features)
            assert loaded.params == {"channels": 4, "note": "test"}
            assert isinstance(loaded.model, GenreCNN) and not loaded.model.training
            torch.testing.assert_close(loaded.model(x), model(x), atol=1e-6, rtol=0)

    with pytest.raises(ModelNotFoundError, match="no version '9'"):
        load_model(settings, "9")

    rows = {r["version"]: r for r in list_versions(lake).collect()}
    assert sorted(rows) == ["1", "2"]
    assert rows["2"]["val_macro_f1"] == 0.8 and rows["1"]["val_accuracy"] == pytest.approx(0.75)
    assert json.loads(rows["1"]["params"]) == {"channels": 4, "note": "test"}
    assert rows["2"]["mlflow_run_id"] == load_model(settings, "2").run_id
    assert rows["1"]["genres"] == GENRES and rows["1"]["kind"] == "cnn"


def test_artifacts_live_under_the_lake(lake: Lake, settings: Settings) -> None:
    from pathlib import Path

    import mlflow

    _register(lake, settings, _model(3), 0.5)
    root = Path(settings.lake).resolve()
    assert settings.tracking_uri == f"sqlite:///{root / 'mlflow.db'}"
    run = mlflow.get_run(load_model(settings).run_id)
    assert run.info.artifact_uri.startswith((root / "mlartifacts").as_uri())
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "epoch_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.2), (2, 0.9)]
