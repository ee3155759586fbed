"""Confusion-based classification metrics, in one numpy form and one Spark form.

Every metric the project reports is arithmetic over confusion counts
``[true, predicted]``: training all-reduces a small numpy matrix across
ranks, the references collect per-(genre, predicted) counts to the driver,
and evaluation keeps the counts in Spark because they are grouped by model
and split. The two forms here compute the same numbers with scikit-learn's
definitions (``accuracy_score`` and ``precision_recall_fscore_support`` with
``zero_division=0``) over the union of true and predicted labels: a label
that is never predicted has precision 0, one that is predicted but never true
has recall 0 and support 0, and a label that is neither is left out of the
averages (what ``average="macro"`` does without an explicit ``labels``).

Spark form tables:

* confusion: ``*group, genre (true), predicted, count``;
* evaluation rows: ``*group, genre (a genre, macro avg, weighted avg or
  accuracy), precision, recall, f1, support, accuracy``. Average rows carry the
  total support; the ``accuracy`` row has null precision/recall/f1 and every row
  repeats the group's accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

MACRO = "macro avg"
WEIGHTED = "weighted avg"
ACCURACY = "accuracy"
AVERAGE_ROWS = (MACRO, WEIGHTED, ACCURACY)
#: Per-label metric names, in evaluation-row order.
MEASURES = ("precision", "recall", "f1")

GROUP = ("model", "split")
CONFUSION_COLUMNS = ("model", "split", "genre", "predicted", "count")
EVALUATION_COLUMNS = ("model", "split", "genre", *MEASURES, "support", "accuracy")


# --- numpy form: one confusion matrix ------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts of integer labels in ``range(n_classes)``."""
    flat = np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def matrix_from_counts(counts: Iterable[tuple[str, str, int]], labels: Sequence[str]) -> np.ndarray:
    """The confusion matrix of ``(true, predicted, count)`` triples, rows and columns in ``labels`` order.

    What a grouped count collected to the driver becomes, without expanding
    the counts back into one entry per prediction.
    """
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true, guess, count in counts:
        matrix[index[true], index[guess]] += count
    return matrix


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, and 0 where the denominator is 0 (``zero_division=0``)."""
    quotient: np.ndarray = np.divide(
        numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0
    )
    return quotient


def per_label(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1, support and ``seen`` (true or predicted at least once) per label."""
    matrix = matrix.astype(np.float64)
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    return {
        "precision": _divide(tp, predicted),
        "recall": _divide(tp, support),
        "f1": _divide(2 * tp, support + predicted),
        "support": support,
        "seen": (support + predicted) > 0,
    }


def scores(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy, and macro and weighted precision/recall/F1 of a confusion matrix."""
    labels = per_label(matrix)
    seen, support = labels["seen"], labels["support"]
    total = float(support.sum())
    found = {"accuracy": float(np.trace(matrix) / total) if total else 0.0}
    for measure in MEASURES:
        values = labels[measure]
        found[f"macro_{measure}"] = float(values[seen].mean()) if seen.any() else 0.0
        found[f"weighted_{measure}"] = float(values @ support / total) if total else 0.0
    return found


# --- Spark form: confusion counts grouped by model and split -------------------------------


def confusion(predictions: DataFrame) -> DataFrame:
    """Count predictions per (model, split, true genre, predicted genre): the one pass over the data."""
    return predictions.groupBy(*GROUP, "genre", "predicted").agg(
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
    """Evaluation rows from confusion counts: per genre, macro, weighted and accuracy."""
    per_genre = per_genre_metrics(confusion_df)
    total = F.sum("support")
    totals = per_genre.groupBy(*GROUP).agg(
        *[F.avg(m).alias(f"macro_{m}") for m in MEASURES],
        *[
            _ratio(F.sum(F.col(m) * F.col("support")), total).alias(f"weighted_{m}")
            for m in MEASURES
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
                F.struct(F.lit(ACCURACY).alias("genre"), *[null.alias(m) for m in MEASURES]),
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
        F.lit(name).alias("genre"), *[F.col(f"{prefix}_{m}").alias(m) for m in MEASURES]
    )
