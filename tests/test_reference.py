"""Reference models (Spark MLlib): predictions for every row of every split, scores equal scikit-learn's."""

from __future__ import annotations

from typing import Any

import pytest
from blobs import blob_features
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from sklearn.metrics import accuracy_score, f1_score

from genre_spark.config import REFERENCE_MODELS, Settings, load_settings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_EVALUATION, GOLD_FEATURES, GOLD_REFERENCE_PREDICTIONS
from genre_spark.model import reference
from genre_spark.model.data import balanced_weights
from genre_spark.schema import FEATURES

GENRES = ["ambient", "funk", "punk"]


@pytest.fixture(scope="module")
def fitted(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = load_settings(
        overrides={
            "lake": str(tmp_path_factory.mktemp("reference") / "lake"),
            "train.references": {
                "lr_max_iter": 10,
                "rf_trees": 5,
                "rf_max_depth": 4,
                "xgb_rounds": 20,
                "xgb_max_depth": 3,
            },
        },
        environ={},
    )
    lake = Lake(spark, settings.lake)
    lake.write(
        blob_features(spark, 450, GENRES, list(FEATURES), spread=0.4, files=2), GOLD_FEATURES
    )
    outcome = reference.run(lake, settings)
    return {"lake": lake, "settings": settings, "outcome": outcome}


def test_every_model_predicts_every_row_of_every_split(fitted: dict[str, Any]) -> None:
    lake: Lake = fitted["lake"]
    features = lake.read(GOLD_FEATURES).select("track_id", "split", "genre")
    predicted = lake.read(GOLD_REFERENCE_PREDICTIONS)
    assert sorted(predicted.columns) == ["genre", "model", "predicted", "split", "track_id"]
    for name in REFERENCE_MODELS:
        rows = predicted.where(F.col("model") == name)
        assertDataFrameEqual(rows.select("track_id", "split", "genre"), features)
        assert rows.where(~F.col("predicted").isin(GENRES)).count() == 0
    assert {r["split"] for r in predicted.select("split").distinct().collect()} == {
        "train",
        "validation",
        "test",
    }


def test_scores_are_high_on_blobs_and_equal_scikit_learn(fitted: dict[str, Any]) -> None:
    predicted = (
        fitted["lake"].read(GOLD_REFERENCE_PREDICTIONS).where(F.col("split") == "validation")
    )
    metrics = fitted["outcome"].metrics
    assert sorted(metrics) == sorted(REFERENCE_MODELS)
    for name in REFERENCE_MODELS:
        rows = predicted.where(F.col("model") == name).select("genre", "predicted").collect()
        truth, guess = [r["genre"] for r in rows], [r["predicted"] for r in rows]
        assert metrics[name]["val_accuracy"] == pytest.approx(
            accuracy_score(truth, guess), abs=1e-12
        )
        assert metrics[name]["val_macro_f1"] == pytest.approx(
            f1_score(truth, guess, average="macro"), abs=1e-12
        )
        assert metrics[name]["val_accuracy"] > 0.9, name


def test_each_model_is_an_mlflow_run(fitted: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    settings: Settings = fitted["settings"]
    client = MlflowClient(settings.tracking_uri)
    for name, run_id in fitted["outcome"].run_ids.items():
        run = client.get_run(run_id)
        assert run.data.tags["model"] == name and run.data.tags["stage"] == "reference"
        assert run.data.metrics["val_macro_f1"] == fitted["outcome"].metrics[name]["val_macro_f1"]
        assert run.data.params["genres"] == ",".join(GENRES)
    params = client.get_run(fitted["outcome"].run_ids["random_forest"]).data.params
    assert params["numTrees"] == "5"


def test_rows_carry_their_genres_class_weight(spark: SparkSession) -> None:
    features = spark.createDataFrame(
        [("a", "x", "train"), ("b", "x", "train"), ("c", "y", "train"), ("d", "z", "test")],
        "track_id string, genre string, split string",
    ).withColumn("features", F.array(F.lit(1.0)))
    counts = reference.class_counts(
        features.withColumn("is_outlier", F.lit(False)), ["x", "y"], True
    )
    assert counts.tolist() == [2.0, 1.0]
    weights = list(balanced_weights(counts))
    rows = {r["track_id"]: r for r in reference.with_label(features, ["x", "y"], weights).collect()}
    assert [rows[t]["weight"] for t in "abcd"] == [0.75, 0.75, 1.5, 0.0]
    assert [rows[t]["label"] for t in "abcd"] == [0.0, 0.0, 1.0, -1.0]


def test_xgboost_on_the_synthetic_catalog_beats_the_majority_class_and_scores_like_sklearn(
    pipeline_run: tuple,
) -> None:
    """The small pipeline's XGBoost (on Spark executors): real predictions, metrics as scikit-learn's."""
    _, lake, _ = pipeline_run
    predicted = lake.read(GOLD_REFERENCE_PREDICTIONS).where(F.col("model") == "xgboost")
    evaluation = lake.read(GOLD_EVALUATION).where(
        (F.col("model") == "xgboost") & (F.col("genre") == "macro avg")
    )
    for split in ("validation", "test"):
        rows = predicted.where(F.col("split") == split).select("genre", "predicted").toPandas()
        majority = rows["genre"].value_counts().iloc[0] / len(rows)
        accuracy = accuracy_score(rows["genre"], rows["predicted"])
        assert accuracy > majority + 0.2, (split, accuracy, majority)
        row = evaluation.where(F.col("split") == split).first()
        assert row["accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert row["f1"] == pytest.approx(
            f1_score(rows["genre"], rows["predicted"], average="macro"), abs=1e-12
        )
