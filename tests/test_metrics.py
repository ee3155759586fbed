"""Both forms of genre_spark.metrics equal scikit-learn's on the same predictions.

The predictions are skewed on purpose: 'pop' is predicted but never true
(support 0, recall 0) and 'metal' is true but never predicted (precision 0),
the two cases where a hand-written formula most easily differs from
scikit-learn's ``zero_division=0`` and its union of labels.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from genre_spark import metrics

GENRES = ["blues", "folk", "jazz", "metal", "pop"]
SPLITS = ["train", "validation", "test"]
Prediction = tuple[str, str, str, str, str]


def _skewed(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Skewed truth where 'pop' is never true, and predictions that never say 'metal'
    but sometimes say 'pop'."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(GENRES[:4], size=n, p=[0.55, 0.25, 0.12, 0.08])
    noise = rng.choice(["blues", "folk", "jazz", "pop"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    keep = rng.random(n) < 0.6
    predicted = np.where(keep & (truth != "metal"), truth, noise)
    return [str(g) for g in truth], [str(g) for g in predicted]


def skewed_predictions() -> list[Prediction]:
    """(model, split, track_id, genre, predicted) for a CNN version and a reference model."""
    rows = []
    truth, cnn = _skewed(600, seed=1)
    _, reference = _skewed(600, seed=2)
    for i in range(600):
        split = SPLITS[i % 3] if i % 7 else "test"
        rows.append(("cnn:v1", split, f"t{i:04d}", truth[i], cnn[i]))
        rows.append(("logistic_regression", split, f"t{i:04d}", truth[i], reference[i]))
    return rows


def _groups(rows: list[Prediction]) -> dict[tuple[str, str], tuple[list[str], list[str]]]:
    """(model, split) -> (truth, predicted)."""
    found: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for model, split, _, genre, predicted in rows:
        truth, guess = found.setdefault((model, split), ([], []))
        truth.append(genre)
        guess.append(predicted)
    return found


def sklearn_rows(rows: list[Prediction]) -> dict[tuple[str, str, str], tuple]:
    """scikit-learn's numbers for every (model, split, genre or average)."""
    expected: dict[tuple[str, str, str], tuple] = {}
    for (model, split), (y_true, y_pred) in sorted(_groups(rows).items()):
        labels = sorted(set(y_true) | set(y_pred))
        accuracy = accuracy_score(y_true, y_pred)
        p, r, f, s = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0
        )
        for i, label in enumerate(labels):
            expected[(model, split, label)] = (p[i], r[i], f[i], int(s[i]), accuracy)
        for name, average in ((metrics.MACRO, "macro"), (metrics.WEIGHTED, "weighted")):
            p_avg, r_avg, f_avg, _ = precision_recall_fscore_support(
                y_true, y_pred, average=average, zero_division=0
            )
            expected[(model, split, name)] = (p_avg, r_avg, f_avg, len(y_true), accuracy)
        expected[(model, split, metrics.ACCURACY)] = (None, None, None, len(y_true), accuracy)
    return expected


def assert_matches_sklearn(evaluation_rows: list, rows: list[Prediction]) -> None:
    """Evaluation rows (the Spark form's output) equal scikit-learn's numbers, key for key."""
    expected = sklearn_rows(rows)
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


def test_spark_form_equals_sklearn_on_skewed_labels(spark: SparkSession) -> None:
    predictions = skewed_predictions()
    df = spark.createDataFrame(predictions, ["model", "split", "track_id", "genre", "predicted"])
    counts = metrics.confusion(df)
    expected_counts = Counter((m, s, g, p) for m, s, _, g, p in predictions)
    assertDataFrameEqual(
        counts,
        spark.createDataFrame(
            [(*k, v) for k, v in expected_counts.items()], list(metrics.CONFUSION_COLUMNS)
        ),
    )
    rows = metrics.metrics(counts).collect()
    assert_matches_sklearn(rows, predictions)
    by_key = {(r["model"], r["split"], r["genre"]): r for r in rows}
    # The edge cases the skew was built for: never predicted, never true.
    assert by_key[("cnn:v1", "test", "metal")]["precision"] == 0.0
    assert by_key[("cnn:v1", "test", "metal")]["support"] > 0
    assert by_key[("cnn:v1", "test", "pop")]["support"] == 0
    assert by_key[("cnn:v1", "test", "pop")]["recall"] == 0.0


@pytest.mark.parametrize("via_counts", [False, True], ids=["labels", "counts"])
def test_numpy_form_equals_sklearn_on_the_same_predictions(via_counts: bool) -> None:
    """The matrix from integer labels or from collected counts gives scikit-learn's numbers.

    The label set has one more genre ('soul') than ever occurs, as training's
    fixed genre list can: scikit-learn leaves it out of the averages, so must we.
    """
    labels = [*GENRES, "soul"]
    index = {g: i for i, g in enumerate(labels)}
    for (model, split), (y_true, y_pred) in _groups(skewed_predictions()).items():
        if via_counts:
            counts = Counter(zip(y_true, y_pred, strict=True))
            matrix = metrics.matrix_from_counts([(*k, v) for k, v in counts.items()], labels)
        else:
            truth = np.array([index[g] for g in y_true])
            guess = np.array([index[g] for g in y_pred])
            matrix = metrics.confusion_matrix(truth, guess, len(labels))
        got = metrics.scores(matrix)
        assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
        for average in ("macro", "weighted"):
            want = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
            for measure, value in zip(metrics.MEASURES, want[:3], strict=True):
                assert got[f"{average}_{measure}"] == pytest.approx(value, abs=1e-12), (
                    model,
                    split,
                    average,
                    measure,
                )
        per = metrics.per_label(matrix)
        p, r, f, s = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0
        )
        np.testing.assert_allclose(
            [per["precision"], per["recall"], per["f1"], per["support"]], [p, r, f, s], atol=1e-12
        )
        assert per["seen"].tolist() == [True] * len(GENRES) + [False]
