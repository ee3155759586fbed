"""Evaluation: confusion counts computed by Spark, metrics derived from the counts.

The predictions (one row per track and model) grow with the catalogue; the
confusion counts (models x splits x genres²) do not. So executors count
``(model, split, genre, predicted)`` once, and every metric is an arithmetic
expression over those counts. The formulas are scikit-learn's:
``accuracy_score`` and ``precision_recall_fscore_support(average=None |
"macro" | "weighted", zero_division=0)`` over the union of true and predicted
labels, so a genre that is never predicted has precision 0 and a genre that is
predicted but never true has recall 0 and support 0.

Tables written (both overwritten as a whole, so a re-run gives the same rows):

* ``gold.confusion``: model, split, genre (true), predicted, count.
* ``gold.evaluation``: model, split, genre (a genre, ``macro avg``,
  ``weighted avg`` or ``accuracy``), precision, recall, f1, support, accuracy.
  Average rows carry the total support; the ``accuracy`` row has null
  precision/recall/f1 and every row repeats the (model, split) accuracy.

The CNN is named ``cnn:<model_version>``; reference models keep their names
from ``gold.reference_predictions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_CONFUSION,
    GOLD_EVALUATION,
    GOLD_FEATURES,
    GOLD_REFERENCE_PREDICTIONS,
    GOLD_SCORED,
)

log = logging.getLogger(__name__)

CNN_PREFIX = "cnn:"
MACRO = "macro avg"
WEIGHTED = "weighted avg"
ACCURACY = "accuracy"
AVERAGE_ROWS = (MACRO, WEIGHTED, ACCURACY)

GROUP = ("model", "split")
PREDICTION_COLUMNS = ("model", "split", "track_id", "genre", "predicted")
CONFUSION_COLUMNS = ("model", "split", "genre", "predicted", "count")
EVALUATION_COLUMNS = (
    "model",
    "split",
    "genre",
    "precision",
    "recall",
    "f1",
    "support",
    "accuracy",
)


class NothingToEvaluateError(RuntimeError):
    """No scored track has a known genre and split: nothing to compare predictions with."""


def cnn_model_name(version: str) -> str:
    """The CNN's model name in gold.confusion / gold.evaluation."""
    return f"{CNN_PREFIX}{version}"


def cnn_predictions(scored: DataFrame, features: DataFrame) -> DataFrame:
    """gold.scored joined with gold.features for truth and split, one row per (model, track).

    Scored tracks outside gold.features (another catalogue) have no truth and
    are not evaluated.
    """
    truth = features.select("track_id", "genre", "split")
    return scored.join(truth, on="track_id", how="inner").select(
        F.concat(F.lit(CNN_PREFIX), F.col("model_version")).alias("model"),
        "split",
        "track_id",
        "genre",
        F.col("predicted_genre").alias("predicted"),
    )


def reference_predictions(references: DataFrame) -> DataFrame:
    """gold.reference_predictions in the shared prediction shape."""
    return references.select(*PREDICTION_COLUMNS)


def confusion(predictions: DataFrame) -> DataFrame:
    """Count predictions per (model, split, true genre, predicted genre): the one pass over the data."""
    return predictions.groupBy("model", "split", "genre", "predicted").agg(
        F.count(F.lit(1)).cast("long").alias("count")
    )


def _ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator, and 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return F.when(denominator > 0, numerator.cast("double") / denominator).otherwise(F.lit(0.0))


def _label_counts(confusion_df: DataFrame) -> DataFrame:
    """Per (model, split, label): true positives, support and times predicted.

    Labels are the union of true and predicted genres, as scikit-learn's
    ``unique_labels(y_true, y_pred)``.
    """
    keys = [*GROUP, "genre"]
    support = confusion_df.groupBy(*keys).agg(F.sum("count").alias("support"))
    predicted = confusion_df.groupBy(*GROUP, F.col("predicted").alias("genre")).agg(
        F.sum("count").alias("predicted_count")
    )
    hits = confusion_df.where(F.col("genre") == F.col("predicted")).select(
        *keys, F.col("count").alias("tp")
    )
    return (
        support.join(predicted, on=keys, how="full_outer")
        .join(hits, on=keys, how="left")
        .select(
            *keys,
            *[
                F.coalesce(F.col(c), F.lit(0)).cast("long").alias(c)
                for c in ("tp", "support", "predicted_count")
            ],
        )
    )


def per_genre_metrics(confusion_df: DataFrame) -> DataFrame:
    """Precision, recall and F1 per label, with the label's counts kept for the averages."""
    counts = _label_counts(confusion_df)
    tp, support, predicted = F.col("tp"), F.col("support"), F.col("predicted_count")
    return counts.select(
        *GROUP,
        "genre",
        _ratio(tp, predicted).alias("precision"),
        _ratio(tp, support).alias("recall"),
        _ratio(2 * tp, support + predicted).alias("f1"),
        "support",
        "tp",
    )


def metrics(confusion_df: DataFrame) -> DataFrame:
    """gold.evaluation rows from confusion counts: per genre, macro, weighted and accuracy."""
    per_genre = per_genre_metrics(confusion_df)
    total = F.sum("support")
    totals = per_genre.groupBy(*GROUP).agg(
        F.avg("precision").alias("macro_precision"),
        F.avg("recall").alias("macro_recall"),
        F.avg("f1").alias("macro_f1"),
        *[
            _ratio(F.sum(F.col(m) * F.col("support")), total).alias(f"weighted_{m}")
            for m in ("precision", "recall", "f1")
        ],
        total.cast("long").alias("total"),
        _ratio(F.sum("tp"), total).alias("accuracy"),
    )
    null = F.lit(None).cast("double")
    averages = totals.select(
        *GROUP,
        F.explode(
            F.array(
                _average_row(MACRO, "macro"),
                _average_row(WEIGHTED, "weighted"),
                F.struct(
                    F.lit(ACCURACY).alias("genre"),
                    null.alias("precision"),
                    null.alias("recall"),
                    null.alias("f1"),
                ),
            )
        ).alias("row"),
        F.col("total").alias("support"),
        "accuracy",
    ).select(*GROUP, "row.*", "support", "accuracy")
    genres = per_genre.join(totals.select(*GROUP, "accuracy"), on=list(GROUP)).select(
        *EVALUATION_COLUMNS
    )
    return genres.unionByName(averages.select(*EVALUATION_COLUMNS))


def _average_row(name: str, prefix: str) -> Column:
    return F.struct(
        F.lit(name).alias("genre"),
        *[F.col(f"{prefix}_{m}").alias(m) for m in ("precision", "recall", "f1")],
    )


@dataclass(frozen=True)
class EvaluationResult:
    """What ``run`` wrote: the models evaluated and what was missing."""

    models: list[str]
    confusion_version: int
    evaluation_version: int
    notes: list[str] = field(default_factory=list)


def run(lake: Lake) -> EvaluationResult:
    """Evaluate every scored CNN version and every reference model on every split.

    gold.scored and gold.features are required; gold.reference_predictions is
    optional (a note says it was missing). Both outputs are overwritten, so a
    re-run with the same inputs writes the same rows.
    """
    notes: list[str] = []
    with stages.run(lake, stages.EVALUATE) as io:
        predictions = cnn_predictions(io.read(GOLD_SCORED), io.read(GOLD_FEATURES))
        if io.exists(GOLD_REFERENCE_PREDICTIONS):
            predictions = predictions.unionByName(
                reference_predictions(io.read(GOLD_REFERENCE_PREDICTIONS))
            )
        else:
            notes.append("gold.reference_predictions not found: only the CNN was evaluated")
        # Small (models x genres x genres rows) and read three times: persisted, and
        # checked before anything is written, so an empty input leaves both tables as they were.
        counts = confusion(predictions).persist()
        try:
            models = sorted(r["model"] for r in counts.select("model").distinct().collect())
            if not models:
                raise NothingToEvaluateError(
                    "no scored track is in gold.features (no truth to compare with): "
                    "run `genre score` on silver.tracks after `genre prepare`"
                )
            confusion_version = io.write(counts, GOLD_CONFUSION)
            evaluation_version = io.write(metrics(io.read(GOLD_CONFUSION)), GOLD_EVALUATION)
        finally:
            counts.unpersist()
    for note in notes:
        log.warning(note)
    return EvaluationResult(models, confusion_version, evaluation_version, notes)
