"""``genre evaluate`` writes scikit-learn's metrics of the scored CNN and the references.

The metric formulas themselves are checked in test_metrics.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import SparkSession
from test_metrics import assert_matches_sklearn, skewed_predictions
from typer.testing import CliRunner

from genre_spark import evaluate
from genre_spark.cli import app
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_CONFUSION,
    GOLD_EVALUATION,
    GOLD_FEATURES,
    GOLD_REFERENCE_PREDICTIONS,
    GOLD_SCORED,
)

NOW = dt.datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def predictions() -> list[tuple[str, str, str, str, str]]:
    """(model, split, track_id, genre, predicted) for a CNN version and a reference model."""
    return skewed_predictions()


def test_run_evaluates_scored_cnn_and_references_from_the_lake(
    spark: SparkSession, lake: Lake, predictions: list
) -> None:
    cnn = [r for r in predictions if r[0] == "cnn:v1"]
    features = spark.createDataFrame(
        [(tid, genre, split, [0.0], False, True) for _, split, tid, genre, _ in cnn],
        "track_id string, genre string, split string, features array<double>, "
        "is_outlier boolean, is_core boolean",
    )
    scored_rows = [(tid, "v1", pred, {pred: 1.0}, [pred], NOW) for _, _, tid, _, pred in cnn]
    # A track from another catalogue: scored, but without truth it is not evaluated.
    scored_rows.append(("elsewhere", "v1", "jazz", {"jazz": 1.0}, ["jazz"], NOW))
    scored = spark.createDataFrame(
        scored_rows,
        "track_id string, model_version string, predicted_genre string, "
        "probabilities map<string,double>, top3 array<string>, scored_at timestamp",
    )
    references = spark.createDataFrame(
        [r for r in predictions if r[0] != "cnn:v1"],
        "model string, split string, track_id string, genre string, predicted string",
    ).select("track_id", "model", "split", "genre", "predicted")
    lake.write(features, GOLD_FEATURES)
    lake.write(scored, GOLD_SCORED)
    lake.write(references, GOLD_REFERENCE_PREDICTIONS)

    result = evaluate.run(lake)

    assert result.models == ["cnn:v1", "logistic_regression"]
    assert result.notes == []
    assert_matches_sklearn(lake.read(GOLD_EVALUATION).collect(), predictions)
    assert lake.read(GOLD_CONFUSION).agg({"count": "sum"}).first()[0] == len(predictions)
    before = lake.content_hash(GOLD_EVALUATION)
    evaluate.run(lake)
    assert lake.content_hash(GOLD_EVALUATION) == before


def test_run_without_references_notes_it(spark: SparkSession, lake: Lake) -> None:
    features = spark.createDataFrame(
        [("a", "jazz", "test", [0.0], False, True), ("b", "folk", "test", [0.0], False, True)],
        "track_id string, genre string, split string, features array<double>, "
        "is_outlier boolean, is_core boolean",
    )
    scored = spark.createDataFrame(
        [
            ("a", "v2", "jazz", {"jazz": 1.0}, ["jazz"], NOW),
            ("b", "v2", "jazz", {"jazz": 1.0}, ["jazz"], NOW),
        ],
        "track_id string, model_version string, predicted_genre string, "
        "probabilities map<string,double>, top3 array<string>, scored_at timestamp",
    )
    lake.write(features, GOLD_FEATURES)
    lake.write(scored, GOLD_SCORED)
    result = CliRunner().invoke(app, ["evaluate", "--lake", lake.root])
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "evaluated cnn:v2" in printed
    assert "gold.reference_predictions not found" in printed
    accuracy = lake.read(GOLD_EVALUATION).where("genre = 'accuracy'").first()
    assert (accuracy["accuracy"], accuracy["support"]) == (0.5, 2)


def test_nothing_to_evaluate_writes_nothing(spark: SparkSession, lake: Lake) -> None:
    """Scored tracks without truth: a clear error, and neither output table is touched."""
    features = spark.createDataFrame(
        [("a", "jazz", "test", [0.0], False, True)],
        "track_id string, genre string, split string, features array<double>, "
        "is_outlier boolean, is_core boolean",
    )
    scored = spark.createDataFrame(
        [("elsewhere", "v1", "jazz", {"jazz": 1.0}, ["jazz"], NOW)],
        "track_id string, model_version string, predicted_genre string, "
        "probabilities map<string,double>, top3 array<string>, scored_at timestamp",
    )
    lake.write(features, GOLD_FEATURES)
    lake.write(scored, GOLD_SCORED)
    with pytest.raises(evaluate.NothingToEvaluateError, match="no scored track"):
        evaluate.run(lake)
    assert not lake.exists(GOLD_CONFUSION)
    assert not lake.exists(GOLD_EVALUATION)
