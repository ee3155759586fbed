"""The report's inputs: small, bounded extracts of lake tables and MLflow, as pandas.

Everything here is an aggregate already (evaluation rows, confusion counts,
per-genre baselines, per-year trends, per-epoch metrics) or a bounded sample
(the 2-D projection), so collecting it to the driver does not grow with the
catalogue. A missing optional input raises :class:`MissingInputError` with a
sentence the page shows instead of the plot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.errors import GenreError
from genre_spark.evaluate import CNN_PREFIX, cnn_model_name, cnn_predictions
from genre_spark.lake.catalog import (
    GOLD_CONFUSION,
    GOLD_DRIFT,
    GOLD_EVALUATION,
    GOLD_FEATURES,
    GOLD_GENRE_BASELINES,
    GOLD_MODELS,
    GOLD_SCORED,
    GOLD_TRENDS_BY_YEAR,
)
from genre_spark.metrics import MACRO, confusion, metrics

#: Outliers are rare; at most this share of the projection's points is spent on them.
OUTLIER_SHARE = 0.2


class MissingInputError(GenreError):
    """An input the report would show is not there; the page says so instead."""


class ModelNotRegisteredError(GenreError):
    """gold.models has no such version (or no version at all)."""


@dataclass(frozen=True)
class ModelInfo:
    """One gold.models row: what the report's header says about the model."""

    version: str
    created_at: Any
    params: dict[str, Any]
    val_accuracy: float | None
    val_macro_f1: float | None
    run_id: str
    genres: list[str]
    features: list[str]
    #: Registry aliases (``champion``, ``challenger``) as gold.models mirrors them.
    aliases: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return cnn_model_name(self.version)


@dataclass(frozen=True)
class Projection:
    """A bounded sample of gold.features projected on its first two principal axes."""

    points: np.ndarray  # [n, 2]
    is_outlier: np.ndarray  # bool [n]
    genres: np.ndarray  # str [n]
    explained: tuple[float, float]
    total: int
    outliers: int


def _require(io: stages.StageRun, table: str, stage: str) -> None:
    if not io.exists(table):
        raise MissingInputError(f"{table} not found: run `genre {stage}` to add this section.")


def model_info(io: stages.StageRun, version: str) -> ModelInfo:
    """The gold.models row of ``version`` (resolve a reference first: ``registry.resolve_model``)."""
    if not io.exists(GOLD_MODELS):
        raise ModelNotRegisteredError("gold.models not found: run `genre train` first")
    models = io.read(GOLD_MODELS)
    rows = models.where(F.col("version") == version).limit(1).collect()
    if not rows:
        raise ModelNotRegisteredError(f"gold.models has no version {version!r}")
    row = rows[0]
    return ModelInfo(
        version=row["version"],
        created_at=row["created_at"],
        params=json.loads(row["params"] or "{}"),
        val_accuracy=row["val_accuracy"],
        val_macro_f1=row["val_macro_f1"],
        run_id=row["mlflow_run_id"] or "",
        genres=list(row["genres"] or []),
        features=list(row["features"] or []),
        aliases=list(row["aliases"] or []) if "aliases" in models.columns else [],
    )


def model_features(settings: Settings, model: ModelInfo) -> pd.DataFrame:
    """The registered model's feature transform, one row per feature (from its MLflow metadata).

    What the model reads and how: kind, scaling, the train fill value for a
    missing value, whether it has a missing indicator input, and the share of
    train tracks that had a value.
    """
    from genre_spark.model.registry import ModelNotFoundError, load_model

    try:
        transform = load_model(settings, model.version).transform
    except ModelNotFoundError as exc:
        raise MissingInputError(f"the model's feature transform is unavailable: {exc}") from None
    return pd.DataFrame(
        [
            {
                "feature": f.name,
                "kind": f.kind,
                "scaling": f.method,
                "fill (missing)": f.fill,
                "missing indicator": "yes" if f.indicator else "no",
                "present in train": f"{f.present:.1%}",
                "inputs": ", ".join(f.outputs),
            }
            for f in transform.features
        ]
    )


def evaluation(io: stages.StageRun, model: ModelInfo) -> pd.DataFrame:
    """gold.evaluation rows of this CNN version and of every reference model (a few hundred rows)."""
    _require(io, GOLD_EVALUATION, "evaluate")
    model_col = F.col("model")
    rows = io.read(GOLD_EVALUATION).where(
        (model_col == model.name) | ~model_col.startswith(CNN_PREFIX)
    )
    frame = rows.toPandas()
    if not (frame["model"] == model.name).any():
        raise MissingInputError(
            f"gold.evaluation has no rows for {model.name}: run `genre score --model-version "
            f"{model.version}` and `genre evaluate`."
        )
    return frame


def confusion_matrix(io: stages.StageRun, model: ModelInfo, split: str) -> pd.DataFrame:
    """Counts of (true genre, predicted genre) for one model and split, as a square table."""
    _require(io, GOLD_CONFUSION, "evaluate")
    counts = (
        io.read(GOLD_CONFUSION)
        .where((F.col("model") == model.name) & (F.col("split") == split))
        .select("genre", "predicted", "count")
        .toPandas()
    )
    if counts.empty:
        raise MissingInputError(f"gold.confusion has no {split}-split rows for {model.name}.")
    labels = sorted(set(counts["genre"]) | set(counts["predicted"]))
    matrix = counts.pivot_table(
        index="genre", columns="predicted", values="count", aggfunc="sum", fill_value=0
    )
    return matrix.reindex(index=labels, columns=labels, fill_value=0).astype(int)


def baselines(io: stages.StageRun, features: Sequence[str]) -> pd.DataFrame:
    """gold.genre_baselines (one row per genre and feature), features in the model's order."""
    _require(io, GOLD_GENRE_BASELINES, "prepare")
    frame = io.read(GOLD_GENRE_BASELINES).toPandas()
    position = {f: i for i, f in enumerate(features)}
    order = frame["feature"].map(position).fillna(len(position))
    return (
        frame.assign(_order=order)
        .sort_values(["_order", "feature", "genre"])
        .drop(columns="_order")
    )


def trends(io: stages.StageRun) -> pd.DataFrame:
    """gold.trends_by_year: one row per (year, genre)."""
    _require(io, GOLD_TRENDS_BY_YEAR, "prepare")
    frame = io.read(GOLD_TRENDS_BY_YEAR).select("year", "genre", "tracks", "share").toPandas()
    if frame.empty:
        raise MissingInputError("gold.trends_by_year is empty: no track has a release year.")
    return frame


def projection(io: stages.StageRun, sample_size: int, seed: int = 7) -> Projection:
    """PCA of a bounded sample of gold.features (outliers sampled apart so they show).

    Spark counts inliers and outliers, samples each to its budget and limits
    it; only those at most ``sample_size`` rows reach the driver, where the
    principal axes of the sample are computed.
    """
    _require(io, GOLD_FEATURES, "prepare")
    features = io.read(GOLD_FEATURES).select("features", "is_outlier", "genre")
    counts = {r["is_outlier"]: r["count"] for r in features.groupBy("is_outlier").count().collect()}
    n_out, n_in = counts.get(True, 0), counts.get(False, 0)
    out_budget = min(n_out, int(sample_size * OUTLIER_SHARE))
    budgets = {True: out_budget, False: sample_size - out_budget}
    parts = []
    for flag, available in ((True, n_out), (False, n_in)):
        if available == 0 or budgets[flag] == 0:
            continue
        fraction = min(1.0, 1.2 * budgets[flag] / available)
        subset = features.where(F.col("is_outlier") == flag)
        parts.append(subset.sample(fraction=fraction, seed=seed).limit(budgets[flag]))
    if not parts:
        raise MissingInputError("gold.features is empty: nothing to project.")
    frame = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    sample = frame.toPandas()
    x = np.vstack(sample["features"].tolist()).astype(float)
    centered = x - x.mean(axis=0)
    _, singular, axes = np.linalg.svd(centered, full_matrices=False)
    variance = singular**2
    explained = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    points = centered @ axes[:2].T
    if points.shape[1] < 2:
        points = np.column_stack([points, np.zeros(len(points))])
    return Projection(
        points=points,
        is_outlier=sample["is_outlier"].fillna(False).to_numpy(bool),
        genres=sample["genre"].astype(str).to_numpy(),
        explained=(float(explained[0]), float(explained[1]) if len(explained) > 1 else 0.0),
        total=n_in + n_out,
        outliers=n_out,
    )


def training_history(settings: Settings, run_id: str) -> pd.DataFrame:
    """Per-epoch metrics of the model's MLflow run: columns epoch, metric, value.

    Epochs are steps >= 1; the run's final summary metrics (logged at step 0)
    are left out. A ``epoch_`` prefix is dropped from metric names.
    """
    from mlflow.exceptions import MlflowException

    from genre_spark.model.registry import client as registry_client

    if not run_id:
        raise MissingInputError("the model has no MLflow run id: no training curves.")
    client = registry_client(settings)
    try:
        keys = list(client.get_run(run_id).data.metrics)
    except MlflowException as exc:
        raise MissingInputError(
            f"MLflow run {run_id} not found at {settings.tracking_uri}: {exc.message}"
        ) from None
    rows = [
        (m.step, key.removeprefix("epoch_"), m.value)
        for key in keys
        for m in client.get_metric_history(run_id, key)
        if m.step >= 1
    ]
    if not rows:
        raise MissingInputError(f"MLflow run {run_id} has no per-epoch metrics.")
    frame = pd.DataFrame(rows, columns=["epoch", "metric", "value"])
    return frame.sort_values(["metric", "epoch"]).reset_index(drop=True)


def head_to_head(io: stages.StageRun, versions: Sequence[str], split: str) -> pd.DataFrame:
    """Accuracy and macro-F1 of CNN versions on the ``split`` tracks that every one of them scored.

    Same tracks, same truth, the evaluation's own metric functions: one row
    per version (``model``, ``tracks``, ``accuracy``, ``macro F1``) plus
    ``agreement``, the share of those tracks given the same genre by all.
    """
    _require(io, GOLD_SCORED, "score")
    _require(io, GOLD_FEATURES, "prepare")
    scored = io.read(GOLD_SCORED).where(F.col("model_version").isin(list(versions)))
    common = (
        scored.groupBy("track_id")
        .agg(
            F.count_distinct("model_version").alias("n"),
            F.count_distinct("predicted_genre").alias("labels"),
        )
        .where(F.col("n") == len(versions))
    )
    truth = io.read(GOLD_FEATURES).where(F.col("split") == split)
    predictions = cnn_predictions(scored.join(common.select("track_id"), "track_id"), truth)
    frame = metrics(confusion(predictions)).where(F.col("genre") == MACRO).toPandas()
    if frame.empty:
        raise MissingInputError(
            f"no {split}-split track of gold.features is scored by every one of versions "
            f"{', '.join(versions)}: score the same catalog with each "
            "(`genre score --model-version V`) to compare them"
        )
    row = (
        common.join(truth.select("track_id"), "track_id")
        .agg(F.avg((F.col("labels") == 1).cast("double")).alias("a"))
        .first()
    )
    assert row is not None  # a global aggregate has exactly one row
    agreement = row["a"]
    return frame.assign(agreement=agreement).rename(
        columns={"support": "tracks", "f1": "macro F1"}
    )[["model", "tracks", "accuracy", "macro F1", "agreement"]]


def drift(io: stages.StageRun, version: str) -> pd.DataFrame:
    """gold.drift rows of ``version``'s newest feature comparison and newest prediction comparison.

    At most one row per feature and per genre: a small table.
    """
    _require(io, GOLD_DRIFT, "drift")
    rows = io.read(GOLD_DRIFT).where(F.col("model_version") == version)
    newest = rows.groupBy("kind").agg(F.max("computed_at").alias("computed_at"))
    frame = rows.join(newest, ["kind", "computed_at"]).toPandas()
    if frame.empty:
        raise MissingInputError(
            f"gold.drift has no comparison against version {version}: run "
            f"`genre drift --against {version}` to add this section."
        )
    return frame
