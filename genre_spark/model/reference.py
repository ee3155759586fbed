"""Reference models beside the CNN: logistic regression, random forest, gradient-boosted trees.

Why Spark MLlib and not scikit-learn. The references must train on the same
split and scaled vectors as the CNN without the driver loading the catalogue;
MLlib's estimators train on executors from the DataFrame itself, so they scale
with the cluster and the whole stage stays inside Spark (scikit-learn would
need the training rows collected into one process). Multiclass boosted trees:
MLlib's ``GBTClassifier`` is binary only, so it runs one-vs-rest
(``OneVsRest(GBTClassifier)``, one binary model per genre, ``parallelism`` of
them fitted at once); the genre whose model gives the highest margin wins.
Logistic regression is multinomial (softmax), random forests are natively
multiclass.

Labels use the CNN's rule (index = position in the sorted training genres),
outliers are left out of training when ``train.exclude_outliers`` is set, and
predictions are made for every row of every split: gold.reference_predictions
(track_id, model, split, genre, predicted) lets evaluate and report put the
references beside the CNN on the same rows. Each model's validation accuracy
and macro-F1 (from confusion counts, the CNN's formula) are logged as an
MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.ml import Estimator
from pyspark.ml.classification import (
    GBTClassifier,
    LogisticRegression,
    OneVsRest,
    RandomForestClassifier,
)
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from genre_spark.config import ReferenceSettings, Settings
from genre_spark.lake import Lake
from genre_spark.model.train import FEATURES_TABLE, confusion, scores
from genre_spark.prepare.manifest import require_complete

PREDICTIONS_TABLE = "gold.reference_predictions"
MODELS = ("logistic_regression", "random_forest", "gradient_boosted_trees")


@dataclass(frozen=True)
class ReferenceOutcome:
    """Validation scores per reference model, and the MLflow run of each."""

    metrics: dict[str, dict[str, float]]
    run_ids: dict[str, str]


def estimators(cfg: ReferenceSettings) -> dict[str, Estimator]:
    """The three reference estimators, reading ``vector`` and ``label``."""
    common = {"featuresCol": "vector", "labelCol": "label"}
    return {
        "logistic_regression": LogisticRegression(
            family="multinomial", maxIter=cfg.lr_max_iter, regParam=cfg.lr_reg_param, **common
        ),
        "random_forest": RandomForestClassifier(
            numTrees=cfg.rf_trees, maxDepth=cfg.rf_max_depth, seed=cfg.seed, **common
        ),
        "gradient_boosted_trees": OneVsRest(
            classifier=GBTClassifier(
                maxIter=cfg.gbt_max_iter, maxDepth=cfg.gbt_max_depth, seed=cfg.seed
            ),
            parallelism=cfg.parallelism,
            **common,
        ),
    }


def training_genres(features: DataFrame) -> list[str]:
    """Sorted distinct genres of the training split (a small aggregate)."""
    rows = features.where(F.col("split") == "train").select("genre").distinct().collect()
    return sorted(r["genre"] for r in rows)


def with_label(features: DataFrame, genres: list[str]) -> DataFrame:
    """Add ``vector`` (ML vector of the scaled features) and ``label`` (index in ``genres``, -1 if unseen)."""
    names = F.array(*[F.lit(g) for g in genres])
    return features.withColumn("vector", array_to_vector("features")).withColumn(
        "label", (F.array_position(names, F.col("genre")) - 1).cast("double")
    )


def predictions(
    model_name: str, fitted: object, labelled: DataFrame, genres: list[str]
) -> DataFrame:
    """One model's predictions in gold.reference_predictions' shape."""
    names = F.array(*[F.lit(g) for g in genres])
    scored = fitted.transform(labelled)  # type: ignore[attr-defined]
    return scored.select(
        "track_id",
        F.lit(model_name).alias("model"),
        "split",
        "genre",
        F.element_at(names, F.col("prediction").cast("int") + 1).alias("predicted"),
    )


def validation_scores(predicted: DataFrame, genres: list[str]) -> dict[str, dict[str, float]]:
    """Per model: validation accuracy and macro-F1 from confusion counts (only counts reach the driver)."""
    index = {g: i for i, g in enumerate(genres)}
    counts = (
        predicted.where((F.col("split") == "validation") & F.col("genre").isin(genres))
        .groupBy("model", "genre", "predicted")
        .count()
        .collect()
    )
    found = {}
    for name in sorted({r["model"] for r in counts}):
        rows = [r for r in counts if r["model"] == name]
        repeat = [r["count"] for r in rows]
        truth = np.repeat([index[r["genre"]] for r in rows], repeat)
        guess = np.repeat([index[r["predicted"]] for r in rows], repeat)
        got = scores(confusion(truth, guess, len(genres)))
        found[name] = {"val_accuracy": got["accuracy"], "val_macro_f1": got["macro_f1"]}
    return found


def fit_references(
    labelled: DataFrame, genres: list[str], settings: Settings
) -> tuple[DataFrame, dict[str, dict[str, object]]]:
    """Fit every reference on the training split; returns all their predictions (unioned) and params."""
    train = labelled.where((F.col("split") == "train") & (F.col("label") >= 0))
    if settings.train.exclude_outliers:
        train = train.where(~F.coalesce(F.col("is_outlier"), F.lit(False)))
    parts = []
    params = {}
    for name, estimator in estimators(settings.train.references).items():
        fitted = estimator.fit(train)
        parts.append(predictions(name, fitted, labelled, genres))
        params[name] = {p.name: v for p, v in estimator.extractParamMap().items() if _loggable(v)}
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union, params


def _loggable(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def run(lake: Lake, settings: Settings) -> ReferenceOutcome:
    """``genre references``: fit, write gold.reference_predictions (one commit), log to MLflow."""
    import mlflow

    from genre_spark.model.registry import use_tracking

    require_complete(lake)
    features = lake.read(FEATURES_TABLE)
    genres = training_genres(features)
    labelled = with_label(features, genres).persist()
    try:
        union, params = fit_references(labelled, genres, settings)
        lake.write(union, PREDICTIONS_TABLE)
    finally:
        labelled.unpersist()
    metrics = validation_scores(lake.read(PREDICTIONS_TABLE), genres)
    use_tracking(settings)
    run_ids = {}
    for name in MODELS:
        with mlflow.start_run(
            run_name=f"reference-{name}", nested=mlflow.active_run() is not None
        ) as r:
            mlflow.set_tags({"stage": "reference", "model": name})
            mlflow.log_params({k: str(v) for k, v in params[name].items()})
            mlflow.log_param("genres", ",".join(genres))
            mlflow.log_metrics(metrics[name])
            run_ids[name] = r.info.run_id
    return ReferenceOutcome(metrics=metrics, run_ids=run_ids)
