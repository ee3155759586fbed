"""Metrics from Spark confusion counts equal scikit-learn's on the same predictions."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
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

GENRES = ["blues", "folk", "jazz", "metal", "pop"]
SPLITS = ["train", "validation", "test"]
NOW = dt.datetime(2026, 1, 1)


def _skewed(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Skewed truth where 'pop' is never true, and predictions that never say 'metal'
    but sometimes say 'pop'."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(GENRES[:4], size=n, p=[0.55, 0.25, 0.12, 0.08])
    noise = rng.choice(["blues", "folk", "jazz", "pop"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    keep = rng.random(n) < 0.6
    predicted = np.where(keep & (truth != "metal"), truth, noise)
    return [str(g) for g in truth], [str(g) for g in predicted]


@pytest.fixture(scope="module")
def predictions() -> list[tuple[str, str, str, str, str]]:
    """(model, split, track_id, genre, predicted) for a CNN version and a reference model."""
    rows = []
    truth, cnn = _skewed(600, seed=1)
    _, reference = _skewed(600, seed=2)
    for i in range(600):
        split = SPLITS[i % 3] if i % 7 else "test"
        rows.append(("cnn:v1", split, f"t{i:04d}", truth[i], cnn[i]))
        rows.append(("logistic_regression", split, f"t{i:04d}", truth[i], reference[i]))
    return rows


def _sklearn_rows(rows: list[tuple[str, str, str, str, str]]) -> dict[tuple[str, str, str], tuple]:
    """scikit-learn's numbers for every (model, split, genre or average)."""
    expected: dict[tuple[str, str, str], tuple] = {}
    groups = sorted({(r[0], r[1]) for r in rows})
    for model, split in groups:
        y_true = [r[3] for r in rows if (r[0], r[1]) == (model, split)]
        y_pred = [r[4] for r in rows if (r[0], r[1]) == (model, split)]
        labels = sorted(set(y_true) | set(y_pred))
        accuracy = accuracy_score(y_true, y_pred)
        p, r, f, s = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0
        )
        for i, label in enumerate(labels):
            expected[(model, split, label)] = (p[i], r[i], f[i], int(s[i]), accuracy)
        for name, average in ((evaluate.MACRO, "macro"), (evaluate.WEIGHTED, "weighted")):
            p_avg, r_avg, f_avg, _ = precision_recall_fscore_support(
                y_true, y_pred, average=average, zero_division=0
            )
            expected[(model, split, name)] = (p_avg, r_avg, f_avg, len(y_true), accuracy)
        expected[(model, split, evaluate.ACCURACY)] = (None, None, None, len(y_true), accuracy)
    return expected


def _assert_matches_sklearn(evaluation_rows: list, rows: list) -> None:
    expected = _sklearn_rows(rows)
    got = {(r["model"], r["split"], r["genre"]): r for r in evaluation_rows}
    assert set(got) == set(expected)
    for key, (p, r, f, s, acc) in expected.items():
        row = got[key]
        for name, want in (("precision", p), ("recall", r), ("f1", f), ("accuracy", acc)):
            if want is None:
                assert row[name] is None, (key, name)
            else:
                # Equal up to float summation order in the averages.
                assert row[name] == pytest.approx(want, abs=1e-12), (key, name)
        assert row["support"] == s, key


def test_metrics_equal_sklearn_on_skewed_labels(spark: SparkSession, predictions: list) -> None:
    df = spark.createDataFrame(predictions, list(evaluate.PREDICTION_COLUMNS))
    counts = evaluate.confusion(df)
    expected_counts = Counter((m, s, g, p) for m, s, _, g, p in predictions)
    assertDataFrameEqual(
        counts,
        spark.createDataFrame(
            [(*k, v) for k, v in expected_counts.items()], list(evaluate.CONFUSION_COLUMNS)
        ),
    )
    rows = evaluate.metrics(counts).collect()
    _assert_matches_sklearn(rows, predictions)
    by_key = {(r["model"], r["split"], r["genre"]): r for r in rows}
    # The edge cases the skew was built for: never predicted, never true.
    assert by_key[("cnn:v1", "test", "metal")]["precision"] == 0.0
    assert by_key[("cnn:v1", "test", "metal")]["support"] > 0
    assert by_key[("cnn:v1", "test", "pop")]["support"] == 0
    assert by_key[("cnn:v1", "test", "pop")]["recall"] == 0.0


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
    _assert_matches_sklearn(lake.read(GOLD_EVALUATION).collect(), predictions)
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
