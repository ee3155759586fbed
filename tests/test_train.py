"""Distributed training: one real TorchDistributor run (2 processes) shared by the assertions below."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from blobs import blob_features
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from sklearn.metrics import accuracy_score, f1_score

from genre_spark.config import Settings, load_settings
from genre_spark.features.spark import transform_table
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_FEATURES, GOLD_MODELS, GOLD_NORMALIZER, spec
from genre_spark.model import train
from genre_spark.model.data import (
    FeatureShapeError,
    NotEnoughFilesError,
    balanced_weights,
    read_shard,
    shard_files,
)
from genre_spark.model.registry import list_versions, load_model
from genre_spark.schema import FEATURES

GENRES = ["blues", "folk", "metal"]
FILES = 6


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("train")
    return load_settings(
        overrides={
            "lake": str(root / "lake"),
            "train.epochs": 3,
            "train.batch_size": 32,
            "train.channels": 8,
            "train.depth": 1,
            "train.members": 2,
            "train.patience": 10,
            "train.num_processes": 2,
            "train.local_mode": True,
        },
        environ={},
    )


def _features_with_poisoned_test_split(spark: SparkSession, settings: Settings) -> DataFrame:
    """Blobs whose test rows carry 3-value vectors: training fails loudly if it ever reads them."""
    blobs = blob_features(spark, 900, GENRES, list(FEATURES), files=FILES)
    poisoned = F.when(F.col("split") == "test", F.slice("features", 1, 3)).otherwise(
        F.col("features")
    )
    return blobs.withColumn("features", poisoned)


def _write_normalizer(lake: Lake) -> FeatureTransform:
    """A gold.normalizer for the blob features (already scaled), with distinct numbers to trace."""
    transform = FeatureTransform.standard(
        {f: (float(i), 1.0 + i / 10) for i, f in enumerate(FEATURES)}
    )
    lake.write(transform_table(lake.spark, transform, version=0), GOLD_NORMALIZER)
    return transform


@pytest.fixture(scope="module")
def trained(spark: SparkSession, module_settings: Settings) -> dict[str, Any]:
    lake = Lake(spark, module_settings.lake)
    lake.write(_features_with_poisoned_test_split(spark, module_settings), GOLD_FEATURES)
    transform = _write_normalizer(lake)
    epochs: list[dict[str, Any]] = []
    outcome = train.run(lake, module_settings, on_epoch=epochs.append)
    return {
        "lake": lake,
        "outcome": outcome,
        "epochs": epochs,
        "files": lake.files(GOLD_FEATURES),
        "transform": transform,
    }


def _validation(files: list[str], n_features: int) -> tuple[torch.Tensor, np.ndarray]:
    shard = read_shard(files, "validation", n_features)
    return torch.as_tensor(shard.x), shard.genres


def test_test_split_is_never_read(trained: dict[str, Any], module_settings: Settings) -> None:
    """The test rows' vectors are malformed, yet training ran: it never loaded them."""
    with pytest.raises(FeatureShapeError, match="found lengths \\[3\\]"):
        read_shard(trained["files"], "test", len(FEATURES))
    rows = trained["outcome"].result.rows
    assert sum(r["train"] + r["validation"] for r in rows.values()) < 900


def test_a_small_training_set_gets_its_epochs_scaled_to_enough_steps(
    trained: dict[str, Any], module_settings: Settings
) -> None:
    """3 epochs at batch 32 of ~300 rows a rank are ~10 steps each: scaled to >= 32 steps."""
    result = trained["outcome"].result
    steps = max(
        math.ceil(r["train"] / module_settings.train.batch_size) for r in result.rows.values()
    )
    scale = math.ceil(module_settings.train.min_epoch_steps / steps)
    assert scale > 1 and result.metrics["epoch_scale"] == scale
    assert len(result.history) == 3 * scale  # patience 10 scales too: no early stop
    assert {row["epochs"] for row in result.history} == {3 * scale}


@pytest.mark.parametrize(
    ("steps", "min_steps", "scale"),
    [(73, 32, 1), (32, 32, 1), (31, 32, 2), (6, 32, 6), (3, 32, 11), (1, 1, 1), (0, 32, 32)],
)
def test_epoch_scale_gives_at_least_min_steps_per_epoch(
    steps: int, min_steps: int, scale: int
) -> None:
    assert train.epoch_scale(steps, min_steps) == scale
    assert steps * scale >= min_steps or steps == 0


def test_loss_falls_and_progress_is_reported(trained: dict[str, Any]) -> None:
    history = trained["outcome"].result.history
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    assert history[-1]["loss"] < history[0]["loss"]
    assert trained["epochs"] == history


def test_each_rank_reads_its_own_files(trained: dict[str, Any]) -> None:
    shards = trained["outcome"].result.shards
    assert sorted(shards) == [0, 1]
    first, second = set(shards[0]), set(shards[1])
    assert first and second and not first & second
    assert first | second == set(trained["files"])
    assert len(trained["files"]) == FILES


def test_registered_model_predicts_like_the_trained_weights(
    trained: dict[str, Any], module_settings: Settings
) -> None:
    result = trained["outcome"].result
    x, _ = _validation(trained["files"], len(FEATURES))
    with torch.no_grad():
        expected = result.model()(x)
        for version in ("latest", trained["outcome"].version):
            loaded = load_model(module_settings, version)
            assert loaded.version == trained["outcome"].version
            assert loaded.genres == GENRES
            assert loaded.features == list(FEATURES) == trained["outcome"].features
            assert loaded.transform == trained["transform"]
            assert not loaded.model.training
            torch.testing.assert_close(loaded.model(x), expected, atol=1e-6, rtol=0)


def test_registered_metrics_equal_scikit_learn_on_validation(
    trained: dict[str, Any], module_settings: Settings
) -> None:
    """The all-reduced confusion counts give the metrics of the returned model on all validation rows."""
    loaded = load_model(module_settings)
    x, truth = _validation(trained["files"], len(FEATURES))
    with torch.no_grad():
        predicted = np.array(GENRES)[loaded.model(x).argmax(1).numpy()]
    metrics = trained["outcome"].result.metrics
    assert metrics["val_accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)
    assert metrics["val_macro_f1"] == pytest.approx(
        f1_score(truth, predicted, average="macro"), abs=1e-12
    )
    assert metrics["val_macro_f1"] > 0.8


def test_gold_models_row(trained: dict[str, Any], spark: SparkSession) -> None:
    outcome = trained["outcome"]
    params = json.loads(list_versions(trained["lake"]).first()["params"])
    assert (
        params["epochs"] == 3 and params["num_processes"] == 2 and params["feature_files"] == FILES
    )
    expected = spark.createDataFrame(
        [
            (
                outcome.version,
                None,
                json.dumps(params, sort_keys=True),
                outcome.result.metrics["val_accuracy"],
                outcome.result.metrics["val_macro_f1"],
                outcome.run_id,
                GENRES,
                list(FEATURES),
                "cnn",
                ["challenger"],  # a new version is the challenger until `genre promote`
            )
        ],
        spec(GOLD_MODELS).schema,
    ).drop("created_at")
    assertDataFrameEqual(list_versions(trained["lake"]).drop("created_at"), expected)


def test_mlflow_run_has_params_curves_and_artifacts(
    trained: dict[str, Any], module_settings: Settings
) -> None:
    from mlflow import MlflowClient

    run_id = trained["outcome"].run_id
    client = MlflowClient(module_settings.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.params["learning_rate"] == str(module_settings.train.learning_rate)
    assert run.data.params["features"] == ",".join(FEATURES)
    assert run.data.tags["registered_version"] == trained["outcome"].version
    assert run.data.tags["normalizer_table_version"] == str(
        trained["lake"].version(GOLD_NORMALIZER)
    )
    curve = client.get_metric_history(run_id, "epoch_val_macro_f1")
    assert [m.step for m in curve] == [row["epoch"] for row in trained["outcome"].result.history]
    assert client.get_metric_history(run_id, "epoch_epochs") == []  # the planned total: no curve
    assert [m.value for m in curve] == [
        row["val_macro_f1"] for row in trained["outcome"].result.history
    ]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "shards.json" in artifacts


def test_too_many_processes_fail_before_start(spark: SparkSession, settings: Settings) -> None:
    slots = train.task_slots(spark)
    assert slots == 2  # the test session runs local[2]
    barrier = settings.train.model_copy(update={"num_processes": slots + 1, "local_mode": False})
    with pytest.raises(train.NotEnoughSlotsError, match="num_processes=3 but Spark can run only 2"):
        train.fit(spark, ["unused.parquet"] * 4, barrier, list(FEATURES))
    train.check_slots(spark, barrier.model_copy(update={"num_processes": slots}))


def test_fewer_files_than_ranks_is_a_clear_error() -> None:
    assert shard_files(["e", "a", "c", "b", "d"], 1, 2) == ["b", "d"]
    with pytest.raises(NotEnoughFilesError, match="1 data file"):
        shard_files(["a"], 0, 2)


def test_read_shard_filters_split_and_outliers(tmp_path: Path) -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "track_id": ["a", "b", "c", "d"],
            "genre": ["x", "y", "x", "y"],
            "split": ["train", "train", "validation", "train"],
            "features": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]],
            "is_outlier": [False, True, False, False],
        }
    )
    path = str(tmp_path / "part.parquet")
    pq.write_table(table, path)
    shard = read_shard([path], "train", 2, exclude_outliers=True)
    assert shard.x.tolist() == [[1.0, 2.0], [7.0, 8.0]]
    assert shard.genres.tolist() == ["x", "y"]
    assert len(read_shard([path], "train", 2)) == 3


def test_class_weights_are_inverse_frequency() -> None:
    np.testing.assert_allclose(balanced_weights(np.array([10, 30, 0])), [2.0, 2.0 / 3.0, 0.0])
    np.testing.assert_allclose(balanced_weights(np.array([5, 5])), [1.0, 1.0])


def test_learning_rate_is_pytorchs_one_cycle_step_for_step() -> None:
    for total in (7, 40, 333):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=total)
        rates = []
        for _ in range(total):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        ours = [train.learning_rate("onecycle", 3e-3, step, total) for step in range(total)]
        np.testing.assert_allclose(ours, rates, rtol=1e-12, atol=0)
    cosine = [train.learning_rate("cosine", 1.0, step, 5) for step in range(5)]
    np.testing.assert_allclose(cosine, [1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0])


def test_tune_searches_on_validation_then_registers_the_best(
    spark: SparkSession, tmp_path: Path, trained: dict[str, Any], module_settings: Settings
) -> None:
    """Two seeded trials (nested MLflow runs with models), then the best is retrained and registered.

    Its own lake, experiment and model name, in the training test's MLflow
    store (creating a store costs seconds).
    """
    import mlflow
    import optuna
    from mlflow import MlflowClient

    from genre_spark.model import tune

    settings = load_settings(
        overrides={
            "lake": str(tmp_path / "lake"),
            "train": {"epochs": 1, "num_processes": 1, "depth": 1},
            "tune": {"trials": 2, "epochs": 1, "seed": 3},
            "mlflow": {
                "tracking_uri": module_settings.tracking_uri,
                "experiment": "tune-test",
                "model_name": "genre-cnn-tuned",
            },
        },
        environ={},
    )
    lake = Lake(spark, settings.lake)
    lake.write(_features_with_poisoned_test_split(spark, settings), GOLD_FEATURES)
    _write_normalizer(lake)
    seen: list[tuple[int, dict[str, Any], float]] = []
    outcome = tune.run(lake, settings, on_trial=lambda n, p, v: seen.append((n, p, v)))

    replay = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=2))
    expected = [tune.suggest(replay.ask()) for _ in range(2)]
    assert [params for _, params, _ in seen] == expected
    assert outcome.best_trial_value == max(v for _, _, v in seen)
    assert outcome.best_params == max(seen, key=lambda t: t[2])[1]

    client = MlflowClient(settings.tracking_uri)
    children = client.search_runs(
        [client.get_experiment_by_name(settings.mlflow.experiment).experiment_id],
        f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'",
    )
    assert sorted(r.info.run_name for r in children) == ["best", "trial-0", "trial-1"]
    for child in children:
        assert client.get_metric_history(child.info.run_id, "epoch_val_macro_f1")
        models = mlflow.search_logged_models(
            filter_string=f"source_run_id = '{child.info.run_id}'", output_format="list"
        )
        assert len(models) == 1, child.info.run_name
    assert outcome.version == "1"
    registered = json.loads(list_versions(lake).first()["params"])
    assert {k: registered[k] for k in outcome.best_params} == outcome.best_params
