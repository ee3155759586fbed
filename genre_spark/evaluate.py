"""Evaluation: confusion counts computed by Spark, metrics derived from the counts.

The predictions (one row per track and model) grow with the catalogue; the
confusion counts (models x splits x genres²) do not. So executors count
``(model, split, genre, predicted)`` once, and every metric is an arithmetic
expression over those counts (``genre_spark.metrics``' Spark form, the same
formulas as training's numpy form: scikit-learn's, over the union of true and
predicted labels).

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

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.errors import GenreError
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_CONFUSION,
    GOLD_EVALUATION,
    GOLD_FEATURES,
    GOLD_REFERENCE_PREDICTIONS,
    GOLD_SCORED,
)
from genre_spark.metrics import confusion, metrics

log = logging.getLogger(__name__)

CNN_PREFIX = "cnn:"
PREDICTION_COLUMNS = ("model", "split", "track_id", "genre", "predicted")


class NothingToEvaluateError(GenreError):
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
