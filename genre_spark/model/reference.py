"""Reference models beside the CNN: logistic regression, random forest (Spark MLlib) and XGBoost.

What a Spark user would pick to classify these tracks, trained on the same
split, features and outlier rule as the CNN, inside the same cluster:
MLlib's multinomial logistic regression and random forest, and XGBoost
through its Spark estimator (``xgboost.spark.SparkXGBClassifier``: the
boosting runs on ``xgb_num_workers`` Spark tasks, each on its share of the
rows, so the driver never loads the catalogue). XGBoost watches the
validation split's log-loss and stops after ``xgb_early_stopping`` rounds
without improvement (validation chooses, as it does for the CNN; the test
split is never read). The capacities in ``train.references`` were chosen on
validation macro-F1 (BENCHMARKS.md, section 1).

Class weights (``class_weights``): each training row weighs
``total / (n_genres * count of its genre)``, the CNN's inverse-frequency rule,
so all models aim at the same balanced target that macro-F1 measures.

Labels use the CNN's rule (index = position in the sorted training genres),
outliers are left out of training when ``train.exclude_outliers`` is set, and
predictions are made for every row of every split: gold.reference_predictions
(track_id, model, split, genre, predicted) lets evaluate and report put the
references beside the CNN on the same rows. Each model's validation accuracy
and macro-F1 (from confusion counts, ``genre_spark.metrics`` as for the CNN) are logged as an
MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.ml import Estimator, Transformer
from pyspark.ml.classification import LogisticRegression, RandomForestClassifier
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import ReferenceSettings, Settings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_FEATURES, GOLD_REFERENCE_PREDICTIONS
from genre_spark.metrics import matrix_from_counts, scores
from genre_spark.model.data import balanced_weights

WEIGHT = "weight"
IS_VALIDATION = "is_validation"


@dataclass(frozen=True)
class ReferenceOutcome:
    """Validation scores per reference model, and the MLflow run of each."""

    metrics: dict[str, dict[str, float]]
    run_ids: dict[str, str]


def estimators(cfg: ReferenceSettings) -> dict[str, Estimator[Any]]:
    """The configured reference estimators, reading ``vector``, ``label`` (and ``weight``)."""
    from xgboost.spark import SparkXGBClassifier

    weight = {"weightCol": WEIGHT} if cfg.class_weights else {}
    common: dict[str, Any] = {"featuresCol": "vector", "labelCol": "label", **weight}
    every: dict[str, Estimator[Any]] = {
        "logistic_regression": LogisticRegression(
            family="multinomial", maxIter=cfg.lr_max_iter, regParam=cfg.lr_reg_param, **common
        ),
        "random_forest": RandomForestClassifier(
            numTrees=cfg.rf_trees,
            maxDepth=cfg.rf_max_depth,
            minInstancesPerNode=cfg.rf_min_instances,
            seed=cfg.seed,
            **common,
        ),
        "xgboost": SparkXGBClassifier(
            features_col="vector",
            label_col="label",
            weight_col=WEIGHT if cfg.class_weights else None,
            validation_indicator_col=IS_VALIDATION,
            num_workers=cfg.xgb_num_workers,
            n_estimators=cfg.xgb_rounds,
            early_stopping_rounds=cfg.xgb_early_stopping,
            eval_metric="mlogloss",
            max_depth=cfg.xgb_max_depth,
            learning_rate=cfg.xgb_learning_rate,
            subsample=cfg.xgb_subsample,
            colsample_bytree=cfg.xgb_colsample,
            random_state=cfg.seed,
        ),
    }
    return {name: every[name] for name in cfg.models}


def training_genres(features: DataFrame) -> list[str]:
    """Sorted distinct genres of the training split (a small aggregate)."""
    rows = features.where(F.col("split") == "train").select("genre").distinct().collect()
    return sorted(r["genre"] for r in rows)


def with_label(features: DataFrame, genres: list[str], weights: list[float]) -> DataFrame:
    """Add ``vector`` (ML vector of the inputs), ``label`` (index in ``genres``, -1 if unseen),
    ``weight`` (the label's class weight, 0 if unseen) and ``is_validation``."""
    names = F.array(*[F.lit(g) for g in genres])
    label = F.array_position(names, F.col("genre")) - 1
    weight = F.array(*[F.lit(float(w)) for w in weights])
    return features.select(
        "*",
        array_to_vector(F.col("features")).alias("vector"),
        label.cast("double").alias("label"),
        F.when(label >= 0, F.get(weight, label.cast("int"))).otherwise(0.0).alias(WEIGHT),
        (F.col("split") == "validation").alias(IS_VALIDATION),
    )


def predictions(
    model_name: str, fitted: Transformer, labelled: DataFrame, genres: list[str]
) -> DataFrame:
    """One model's predictions in gold.reference_predictions' shape."""
    names = F.array(*[F.lit(g) for g in genres])
    scored = fitted.transform(labelled)
    return scored.select(
        "track_id",
        F.lit(model_name).alias("model"),
        "split",
        "genre",
        F.element_at(names, F.col("prediction").cast("int") + 1).alias("predicted"),
    )


def validation_scores(predicted: DataFrame, genres: list[str]) -> dict[str, dict[str, float]]:
    """Per model: validation accuracy and macro-F1 from confusion counts (only counts reach the driver)."""
    counts = (
        predicted.where((F.col("split") == "validation") & F.col("genre").isin(genres))
        .groupBy("model", "genre", "predicted")
        .count()
        .collect()
    )
    found = {}
    for name in sorted({r["model"] for r in counts}):
        rows = [(r["genre"], r["predicted"], r["count"]) for r in counts if r["model"] == name]
        got = scores(matrix_from_counts(rows, genres))
        found[name] = {"val_accuracy": got["accuracy"], "val_macro_f1": got["macro_f1"]}
    return found


def class_counts(features: DataFrame, genres: list[str], exclude_outliers: bool) -> np.ndarray:
    """Training rows per genre (a small aggregate): what the class weights come from."""
    train = features.where(F.col("split") == "train")
    if exclude_outliers:
        train = train.where(~F.coalesce(F.col("is_outlier"), F.lit(False)))
    found = {r["genre"]: r["count"] for r in train.groupBy("genre").count().collect()}
    return np.array([found.get(g, 0) for g in genres], dtype=np.float64)


def fit_references(
    labelled: DataFrame, genres: list[str], settings: Settings
) -> tuple[DataFrame, dict[str, dict[str, object]]]:
    """Fit every reference on the training split; returns all their predictions (unioned) and params.

    XGBoost also gets the validation rows, flagged by ``is_validation``, for
    its early stopping; it does not learn from them.
    """
    known = labelled.where(F.col("label") >= 0)
    train = known.where(F.col("split") == "train")
    if settings.train.exclude_outliers:
        train = train.where(~F.coalesce(F.col("is_outlier"), F.lit(False)))
    watched = train.unionByName(known.where(F.col("split") == "validation"))
    parts = []
    params = {}
    for name, estimator in estimators(settings.train.references).items():
        fitted = estimator.fit(watched if name == "xgboost" else train)
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

    with stages.run(lake, stages.REFERENCES) as io:
        features = io.read(GOLD_FEATURES)
        genres = training_genres(features)
        counts = class_counts(features, genres, settings.train.exclude_outliers)
        labelled = with_label(features, genres, list(balanced_weights(counts))).persist()
        try:
            union, params = fit_references(labelled, genres, settings)
            io.write(union, GOLD_REFERENCE_PREDICTIONS)
        finally:
            labelled.unpersist()
        metrics = validation_scores(io.read(GOLD_REFERENCE_PREDICTIONS), genres)
    use_tracking(settings)
    run_ids: dict[str, str] = {}
    for name in settings.train.references.models:
        with mlflow.start_run(
            run_name=f"reference-{name}", nested=mlflow.active_run() is not None
        ) as r:
            mlflow.set_tags({"stage": "reference", "model": name})
            mlflow.log_params({k: str(v) for k, v in params[name].items()})
            mlflow.log_param("genres", ",".join(genres))
            mlflow.log_metrics(metrics[name])
            run_ids[name] = r.info.run_id
    return ReferenceOutcome(metrics=metrics, run_ids=run_ids)
