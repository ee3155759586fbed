"""Accuracy on real data: the CNN chosen on validation beside every reference, same split, test set.

    python benchmarks/accuracy.py                        # both data sets, the recorded settings
    python benchmarks/accuracy.py --dataset tidytuesday --trials 8 --tune-epochs 12

For each data set, in a fresh lake and through the ``genre`` CLI (what a user
runs), one subprocess per command:

1. ``genre pipeline --csv FILE``: ingest (silver is one row per track_id;
   a track_id seen under two genres is quarantined as conflicting, so the
   split cannot leak a track into both train and test), prepare (split, the
   feature transform with ``features: auto``, DBSCAN), train the default CNN,
   fit the references (logistic regression and random forest in MLlib,
   XGBoost through ``xgboost.spark``) on the same gold.features split, score,
   evaluate, report;
2. ``genre tune``: Optuna on validation macro-F1 only; the best configuration
   is retrained and registered as ``@challenger`` (the pipeline's version is
   ``@champion``); ``genre score --model-version @challenger`` and
   ``genre evaluate`` then give the test metrics of both CNN versions.

Then, in this process, the single-machine yardstick a data scientist would
try: scikit-learn's ``HistGradientBoostingClassifier`` (defaults, and with
``class_weight="balanced"``) fitted on the exact gold.features train rows and
input vectors the pipeline's models saw (outliers left out, as
``train.exclude_outliers`` does), predicting the validation and test rows.

Printed as Markdown for the test split: validation macro-F1, test accuracy,
test macro-F1 and per-genre F1 of every model, the quarantine reasons and
the chosen features. The CNN is picked by its validation macro-F1 (never by
the test column); it is compared on the test tracks with every reference by
a paired bootstrap (the same resampled tracks for both models): the gap in
macro-F1 and its 95 % interval, which says whether a difference is larger
than the test set's noise. ``--tables-only`` re-prints all of this from the
lakes a previous run left in ``--workdir``.

Top 2000 has no instrumentalness, key or mode: ``features: auto`` leaves them
out by itself; genres are coarsened with the default genre map and only the
6 largest coarse genres are kept.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable
from measure import header, measured  # benchmarks/ is on sys.path when run as a script
from sklearn.ensemble import HistGradientBoostingClassifier

from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    GOLD_FEATURES,
    GOLD_MODELS,
    GOLD_NORMALIZER,
    GOLD_REFERENCE_PREDICTIONS,
    GOLD_SCORED,
    SILVER_TRACKS,
)

DATA = Path("/work/shared/data")
GENRE = str(Path(sys.executable).with_name("genre"))
YARDSTICKS = {"hist_gbdt": {}, "hist_gbdt_balanced": {"class_weight": "balanced"}}
RESAMPLES = 2000


@dataclass(frozen=True)
class Dataset:
    name: str
    csv: Path
    overrides: tuple[str, ...]


DATASETS = {
    "tidytuesday": Dataset("tidytuesday", DATA / "tidytuesday_spotify_songs.csv.gz", ()),
    "top2000": Dataset(
        "top2000",
        DATA / "spotify_top2000.csv",
        ("validation.top_genres=6", "validation.min_per_genre=0"),
    ),
}


def genre(*args: str, log: Path) -> float:
    """Run one ``genre`` command, its output appended to ``log``; returns wall seconds."""
    with measured() as m, log.open("a") as out:
        out.write(f"\n$ genre {' '.join(args)}\n")
        out.flush()
        subprocess.run([GENRE, *args], check=True, stdout=out, stderr=subprocess.STDOUT)
    return m.seconds


def table(lake: Path, name: str) -> pd.DataFrame:
    layer, table_name = name.split(".")
    return DeltaTable(str(lake / layer / table_name)).to_pandas()


def run_dataset(data: Dataset, workdir: Path, trials: int, tune_epochs: int) -> dict[str, float]:
    """Every ``genre`` command of one data set; returns wall seconds per command."""
    lake = workdir / data.name / "lake"
    log = workdir / f"{data.name}.log"
    common = ["--lake", str(lake), "--set", f"reports={workdir / data.name / 'reports'}"]
    for o in data.overrides:
        common += ["--set", o]
    tune_sets = ["--set", f"tune.trials={trials}", "--set", f"tune.epochs={tune_epochs}"]
    return {
        "pipeline": genre("pipeline", "--csv", str(data.csv), *common, log=log),
        "tune": genre("tune", *common, *tune_sets, log=log),
        "score tuned": genre("score", "--model-version", "@challenger", *common, log=log),
        "evaluate": genre("evaluate", *common, log=log),
    }


def _vectors(frame: pd.DataFrame) -> np.ndarray:
    return np.vstack(frame["features"].to_numpy()).astype(np.float64)


def yardstick_predictions(lake: Path) -> pd.DataFrame:
    """HistGBDT on gold.features' train rows and vectors: validation and test predictions.

    The rows the pipeline's models trained on (train split, outliers left out)
    and the very input vectors, so the comparison is on the same matrix.
    """
    features = table(lake, GOLD_FEATURES)
    train = features[(features["split"] == "train") & ~features["is_outlier"].fillna(False)]
    held = features[features["split"].isin(["validation", "test"])]
    parts = []
    for name, options in YARDSTICKS.items():
        model = HistGradientBoostingClassifier(random_state=0, **options)
        model.fit(_vectors(train), train["genre"])
        parts.append(
            held[["track_id", "split", "genre"]].assign(
                model=name, predicted=model.predict(_vectors(held))
            )
        )
    return pd.concat(parts, ignore_index=True)


def predictions(lake: Path) -> pd.DataFrame:
    """Validation and test predictions of every model: model, split, track_id, genre, predicted."""
    features = table(lake, GOLD_FEATURES)
    truth = features.loc[
        features["split"].isin(["validation", "test"]), ["track_id", "split", "genre"]
    ]
    scored = table(lake, GOLD_SCORED)
    cnn = scored.merge(truth, on="track_id").rename(columns={"predicted_genre": "predicted"})
    cnn["model"] = "cnn:" + cnn["model_version"]
    references = table(lake, GOLD_REFERENCE_PREDICTIONS)
    references = references[references["split"].isin(["validation", "test"])]
    columns = ["model", "split", "track_id", "genre", "predicted"]
    yardsticks = yardstick_predictions(lake)
    return pd.concat([cnn[columns], references[columns], yardsticks[columns]], ignore_index=True)


def _codes(truth: pd.Series, *predicted: pd.Series) -> tuple[np.ndarray, ...]:
    labels = sorted(set(truth) | {g for p in predicted for g in p})
    index = {g: i for i, g in enumerate(labels)}
    return tuple(np.array([index[g] for g in s], dtype=np.int64) for s in (truth, *predicted))


def macro_f1(y: np.ndarray, p: np.ndarray, n: int) -> float:
    """scikit-learn's ``f1_score(average="macro")`` over the labels seen as truth or prediction."""
    matrix = np.bincount(y * n + p, minlength=n * n).reshape(n, n).astype(np.float64)
    tp, support, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    seen = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(n), where=seen)
    return float(f1[seen].mean())


def paired_bootstrap(
    test: pd.DataFrame, a: str, b: str, seed: int = 0
) -> tuple[float, float, float]:
    """Test macro-F1 of ``a`` minus ``b``, and the 2.5 / 97.5 % points over resampled tracks."""
    wide = test.pivot(index="track_id", columns="model", values="predicted")
    truth = test.drop_duplicates("track_id").set_index("track_id")["genre"].loc[wide.index]
    y, pa, pb = _codes(truth, wide[a], wide[b])
    n = int(max(y.max(), pa.max(), pb.max())) + 1

    def gap(rows: np.ndarray) -> float:
        return macro_f1(y[rows], pa[rows], n) - macro_f1(y[rows], pb[rows], n)

    rng = np.random.default_rng(seed)
    draws = [gap(rng.integers(0, len(y), len(y))) for _ in range(RESAMPLES)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return gap(np.arange(len(y))), float(low), float(high)


def scores(predicted: pd.DataFrame) -> pd.DataFrame:
    """Per (model, split): accuracy, macro-F1 and per-genre F1 (scikit-learn's formulas)."""
    from sklearn.metrics import accuracy_score, f1_score

    rows = []
    for (model, split), part in predicted.groupby(["model", "split"]):
        genres = sorted(set(part["genre"]))
        per_genre = f1_score(part["genre"], part["predicted"], labels=genres, average=None)
        rows.append(
            {
                "model": model,
                "split": split,
                "accuracy": accuracy_score(part["genre"], part["predicted"]),
                "macro_f1": f1_score(part["genre"], part["predicted"], average="macro"),
                **{f"F1 {g}": v for g, v in zip(genres, per_genre, strict=True)},
            }
        )
    return pd.DataFrame(rows)


def _label(model: str, versions: dict[str, str]) -> str:
    return versions.get(model, model)


def results_markdown(
    data: Dataset, lake: Path, seconds: dict[str, float], trials: int, tune_epochs: int
) -> str:
    predicted = predictions(lake)
    found = scores(predicted)
    validation = found[found["split"] == "validation"].set_index("model")["macro_f1"]
    test = found[found["split"] == "test"].set_index("model")
    models = table(lake, GOLD_MODELS).sort_values("created_at")
    labels = ["defaults", f"tuned: {trials} trials x {tune_epochs} epochs, retrained"]
    versions = {
        f"cnn:{v}": f"CNN v{v} ({label})"
        for v, label in zip(models["version"], labels, strict=False)
    }
    genres = [c for c in test.columns if c.startswith("F1 ")]
    order = test.sort_values("macro_f1", ascending=False).index
    rows = [
        f"| {_label(m, versions)} | {validation.get(m, float('nan')):.4f} "
        f"| {test.loc[m, 'accuracy']:.4f} | {test.loc[m, 'macro_f1']:.4f} | "
        + " | ".join(f"{test.loc[m, g]:.3f}" for g in genres)
        + " |"
        for m in order
    ]
    cnns = validation[validation.index.str.startswith("cnn:")]
    chosen = cnns.idxmax()
    test_rows = predicted[predicted["split"] == "test"]
    comparisons = []
    for reference in [m for m in order if not m.startswith("cnn:")]:
        difference, low, high = paired_bootstrap(test_rows, chosen, reference)
        comparisons.append(f"| {reference} | {difference:+.4f} | [{low:+.4f}, {high:+.4f}] |")
    silver = len(table(lake, SILVER_TRACKS))
    quarantine = table(lake, BRONZE_QUARANTINE)["reason"].value_counts()
    normalizer = table(lake, GOLD_NORMALIZER).sort_values("position")
    with_gaps = normalizer.loc[normalizer["indicator"], "feature"].tolist()
    n_test = test_rows["track_id"].nunique()
    lines = [
        f"**{data.name}** (`{data.csv.name}`; overrides: {', '.join(data.overrides) or 'none'}): "
        f"silver {silver:,} tracks, test split {n_test:,} tracks; quarantined: "
        + (", ".join(f"{r} {n:,}" for r, n in quarantine.items()) or "none"),
        "",
        f"Features (auto): {', '.join(normalizer['feature'])}; scaling "
        f"{', '.join(sorted(set(normalizer['method'])))}; missing indicators: "
        f"{', '.join(with_gaps) or 'none'}.",
        "",
        "| model | val macro-F1 | test accuracy | test macro-F1 | " + " | ".join(genres) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(genres),
        *rows,
        "",
        f"CNN chosen on validation: {_label(chosen, versions)}. Test macro-F1 of it minus each "
        f"reference, 95 % paired-bootstrap interval ({RESAMPLES:,} resamples of the "
        f"{n_test:,} test tracks):",
        "",
        "| reference | CNN - reference | 95 % interval |",
        "|---|---:|---|",
        *comparisons,
        "",
        ("wall s: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())) if seconds else "",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=[*DATASETS, "all"], default="all")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--tune-epochs", type=int, default=12)
    parser.add_argument("--workdir", default=None, help="keep lakes and logs here (default: temp)")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="run nothing: re-print the tables from the lakes a run left in --workdir",
    )
    args = parser.parse_args()
    if args.tables_only and not args.workdir:
        parser.error("--tables-only needs the --workdir of a previous run")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genre-accuracy-"))
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = list(DATASETS) if args.dataset == "all" else [args.dataset]
    try:
        print(header("python benchmarks/accuracy.py " + " ".join(sys.argv[1:])))
        for name in chosen:
            data = DATASETS[name]
            seconds = (
                {}
                if args.tables_only
                else run_dataset(data, workdir, args.trials, args.tune_epochs)
            )
            lake = workdir / name / "lake"
            print(results_markdown(data, lake, seconds, args.trials, args.tune_epochs), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
