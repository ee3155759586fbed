"""Accuracy on real data: the tuned CNN beside three MLlib references, same split, test set.

    python benchmarks/accuracy.py                        # both data sets, the recorded settings
    python benchmarks/accuracy.py --dataset tidytuesday --trials 20 --tune-epochs 12

For each data set, in a fresh lake and through the ``genre`` CLI (what a user
runs), one subprocess per command:

1. ``genre pipeline --csv FILE``: ingest (silver is one row per track_id;
   a track_id seen under two genres is quarantined as conflicting, so the
   split cannot leak a track into both train and test), prepare (split,
   normalizer, DBSCAN), train the default CNN, fit logistic regression, random
   forest and gradient-boosted trees on the same gold.features split, score,
   evaluate, report;
2. ``genre tune``: Optuna on validation macro-F1 only; the best configuration
   is retrained and registered;
3. ``genre train`` with WIDER (64 channels x depth 3, dropout 0.1), a third
   candidate; each new version is scored with ``genre score`` (the newest
   version) and ``genre evaluate`` gives the test metrics of all of them. Pick a CNN by its
   validation macro-F1 (MLflow / gold.models), never by the test column.

Then gold.evaluation (test split) is read with delta-rs and printed as
Markdown: accuracy, macro-F1 and per-genre F1 of every model, plus the
quarantine reasons (how many rows the dedup removed). Last, the CNN and the
reference that are best on *validation* are compared on the test tracks with
a paired bootstrap (the same resampled tracks for both models): the gap in
macro-F1 and its 95 % interval, which says whether a difference is larger
than the test set's noise. ``--tables-only`` re-prints all of this from the
lakes a previous run left in ``--workdir``.

Top 2000 has no instrumentalness, key or mode: ``features`` is set to the nine
features it has (no imputed column), genres are coarsened with the default
genre map and only the 6 largest coarse genres are kept.
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
from sklearn.metrics import f1_score

DATA = Path("/work/shared/data")
GENRE = str(Path(sys.executable).with_name("genre"))
#: A third CNN candidate beside the defaults and the tuned one: wider and deeper.
WIDER = "channels=64, depth=3, dropout=0.1"
NINE = "[tempo,energy,danceability,loudness,liveness,valence,duration_ms,acousticness,speechiness]"


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
        (f"features={NINE}", "validation.top_genres=6", "validation.min_per_genre=0"),
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


def run_dataset(data: Dataset, workdir: Path, trials: int, tune_epochs: int) -> str:
    lake = workdir / data.name / "lake"
    log = workdir / f"{data.name}.log"
    common = ["--lake", str(lake), "--set", f"reports={workdir / data.name / 'reports'}"]
    for o in data.overrides:
        common += ["--set", o]
    tune_sets = ["--set", f"tune.trials={trials}", "--set", f"tune.epochs={tune_epochs}"]
    wider = [x for setting in WIDER.split(", ") for x in ("--set", f"train.{setting}")]
    seconds = {
        "pipeline": genre("pipeline", "--csv", str(data.csv), *common, log=log),
        "tune": genre("tune", *common, *tune_sets, log=log),
        "score tuned": genre("score", *common, log=log),
        "train wider": genre("train", *common, *wider, log=log),
        "score wider": genre("score", *common, log=log),
        "evaluate": genre("evaluate", *common, log=log),
    }
    return results_markdown(data, lake, seconds, trials, tune_epochs)


def test_predictions(lake: Path) -> pd.DataFrame:
    """Test-split predictions of every model: model, track_id, genre (truth), predicted."""
    features = table(lake, "gold.features")
    truth = features.loc[features["split"] == "test", ["track_id", "genre"]]
    scored = table(lake, "gold.scored")
    cnn = scored.merge(truth, on="track_id").rename(columns={"predicted_genre": "predicted"})
    cnn["model"] = "cnn:" + cnn["model_version"]
    references = table(lake, "gold.reference_predictions")
    references = references[references["split"] == "test"]
    columns = ["model", "track_id", "genre", "predicted"]
    return pd.concat([cnn[columns], references[columns]], ignore_index=True)


def paired_bootstrap(
    predictions: pd.DataFrame, a: str, b: str, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Test macro-F1 of ``a`` minus ``b``, and the 2.5 / 97.5 % points over resampled tracks."""
    wide = predictions.pivot(index="track_id", columns="model", values="predicted")
    truth = predictions.drop_duplicates("track_id").set_index("track_id")["genre"]
    y, pa, pb = truth.loc[wide.index].to_numpy(), wide[a].to_numpy(), wide[b].to_numpy()
    labels = np.unique(y)

    def gap(rows: np.ndarray) -> float:
        return f1_score(y[rows], pa[rows], labels=labels, average="macro") - f1_score(
            y[rows], pb[rows], labels=labels, average="macro"
        )

    rng = np.random.default_rng(seed)
    draws = [gap(rng.integers(0, len(y), len(y))) for _ in range(resamples)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return gap(np.arange(len(y))), float(low), float(high)


def comparison_line(lake: Path, val_f1: pd.Series, names: dict[str, str]) -> str:
    """The best-on-validation CNN against the best-on-validation reference, on test tracks."""
    cnns = val_f1[val_f1.index.str.startswith("cnn:")]
    references = val_f1[~val_f1.index.str.startswith("cnn:")]
    if cnns.empty or references.empty:
        return ""
    cnn, reference = cnns.idxmax(), references.idxmax()
    predictions = test_predictions(lake)
    difference, low, high = paired_bootstrap(predictions, cnn, reference)
    n = predictions["track_id"].nunique()
    return (
        f"Best on validation: {names.get(cnn, cnn)} vs {reference}. Test macro-F1 difference "
        f"(CNN - reference): {difference:+.4f}, 95 % paired-bootstrap interval "
        f"[{low:+.4f}, {high:+.4f}] (2,000 resamples of the {n:,} test tracks)."
    )


def results_markdown(
    data: Dataset, lake: Path, seconds: dict[str, float], trials: int, tune_epochs: int
) -> str:
    evaluation = table(lake, "gold.evaluation")
    test = evaluation[evaluation["split"] == "test"]
    macro = evaluation[evaluation["genre"] == "macro avg"]
    val_f1 = macro[macro["split"] == "validation"].set_index("model")["f1"]
    models = table(lake, "gold.models").sort_values("created_at")
    labels = ["defaults", f"tuned: {trials} trials x {tune_epochs} epochs", f"wider: {WIDER}"]
    names = {
        f"cnn:{v}": f"CNN v{v} ({label})"
        for v, label in zip(models["version"], labels, strict=False)
    }
    genres = sorted(
        set(test["genre"]) - {"macro avg", "weighted avg", "accuracy"},
    )
    rows = []
    for model, part in test.groupby("model"):
        by = part.set_index("genre")
        rows.append(
            (
                by.loc["macro avg", "f1"],
                f"| {names.get(model, model)} | {val_f1.get(model, float('nan')):.4f} "
                f"| {by.loc['macro avg', 'accuracy']:.4f} "
                f"| {by.loc['macro avg', 'f1']:.4f} | "
                + " | ".join(f"{by.loc[g, 'f1']:.3f}" for g in genres)
                + " |",
            )
        )
    support = test[test["genre"] == "macro avg"]["support"].iloc[0]
    silver = len(table(lake, "silver.tracks"))
    quarantine = table(lake, "bronze.quarantine")["reason"].value_counts()
    lines = [
        f"**{data.name}** (`{data.csv.name}`; overrides: {', '.join(data.overrides) or 'none'}): "
        f"silver {silver:,} tracks, test split {support:,} tracks; quarantined: "
        + (", ".join(f"{r} {n:,}" for r, n in quarantine.items()) or "none"),
        "",
        "| model | val macro-F1 | test accuracy | test macro-F1 | "
        + " | ".join(f"F1 {g}" for g in genres)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(genres),
        *[row for _, row in sorted(rows, reverse=True)],
        "",
        comparison_line(lake, val_f1, names),
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
    parser.add_argument("--trials", type=int, default=20)
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
            if args.tables_only:
                data = DATASETS[name]
                lake = workdir / name / "lake"
                print(results_markdown(data, lake, {}, args.trials, args.tune_epochs), flush=True)
            else:
                print(
                    run_dataset(DATASETS[name], workdir, args.trials, args.tune_epochs), flush=True
                )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
