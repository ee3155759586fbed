"""The HTML report: every section from real lake tables and MLflow, images load in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from machine import lacking
from mlflow import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from genre_spark import evaluate, report, stages
from genre_spark.cli import app
from genre_spark.config import Settings, load_settings
from genre_spark.drift import run as drift
from genre_spark.drift.bins import profile
from genre_spark.drift.reference import ARTIFACT, Reference
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_CONFUSION,
    GOLD_DRIFT,
    GOLD_EVALUATION,
    GOLD_FEATURES,
    GOLD_GENRE_BASELINES,
    GOLD_MODELS,
    GOLD_REFERENCE_PREDICTIONS,
    GOLD_SCORED,
    GOLD_TRENDS_BY_YEAR,
    SILVER_TRACKS,
)
from genre_spark.model.cnn import GenreCNN
from genre_spark.model.promote import promote
from genre_spark.model.registry import mark_challenger, register_model
from genre_spark.prepare.baselines import genre_baselines
from genre_spark.prepare.trends import trends_by_year
from genre_spark.report import data
from genre_spark.schema import FEATURES

GENRES = ["folk", "jazz", "metal", "pop"]
SPLITS = ["train", "validation", "test"]
FIGURES = [
    "confusion.png",
    "f1_by_genre.png",
    "training.png",
    "baselines.png",
    "trends.png",
    "outliers.png",
    "drift.png",
    "drift_distributions.png",
    "genre_shares.png",
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
MARK_IMAGES = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute(
    "data-loaded", images.filter((i) => i.complete && i.naturalWidth > 0).length);
});
</script>"""


def _tracks(spark: SparkSession, n: int) -> DataFrame:
    """Silver-like tracks: genre-dependent raw features, a year and a popularity."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(n):
        genre = GENRES[i % len(GENRES)]
        shift = GENRES.index(genre) / len(GENRES)
        values = [float(np.clip(rng.normal(0.3 + shift * 0.5, 0.1), 0, 1)) for _ in FEATURES]
        rows.append((f"t{i:04d}", genre, 1990 + i % 30, int(rng.integers(0, 100)), *values))
    ddl = "track_id string, genre string, year int, popularity int, " + ", ".join(
        f"{f} double" for f in FEATURES
    )
    return spark.createDataFrame(rows, ddl)


def _register(lake: Lake, settings: Settings, seed: int, f1: float) -> str:
    torch.manual_seed(seed)
    model = GenreCNN(len(FEATURES), len(GENRES), channels=4, depth=1, kernel_size=3, dropout=0.0)
    history = [
        {
            "epoch": e,
            "loss": 1.4 / e,
            "val_loss": 1.5 / e,
            "val_accuracy": 0.4 + e / 20,
            "val_macro_f1": 0.35 + e / 20,
        }
        for e in range(1, 6)
    ]
    return register_model(
        lake,
        settings,
        model,
        params={"epochs": 5, "seed": seed},
        metrics={"val_accuracy": f1 + 0.05, "val_macro_f1": f1},
        genres=GENRES,
        transform=FeatureTransform.standard({f: (0.5, 0.25) for f in FEATURES}),
        history=history,
    ).version


def _log_reference(settings: Settings, version: str, tracks: DataFrame) -> None:
    """The training snapshot training would have stored in the version's run."""
    import mlflow

    run_id = MlflowClient().get_model_version(settings.mlflow.model_name, version).run_id
    bins = profile(tracks, FEATURES, settings.drift.psi_bins, settings.drift.ks_grid)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict(Reference(bins, {"rows": tracks.count()}).to_json(), ARTIFACT)


def _scored(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(
        rows,
        "track_id string, model_version string, predicted_genre string, "
        "probabilities map<string,double>, top3 array<string>",
    ).selectExpr("*", "current_timestamp() as scored_at")


def _fill_lake(spark: SparkSession, lake: Lake, settings: Settings) -> tuple[str, str]:
    """Every table the report reads, from small synthetic data: a champion and a challenger."""
    version = _register(lake, settings, 0, 0.6)
    promote(lake, settings, version)
    challenger = _register(lake, settings, 1, 0.55)
    mark_challenger(lake, settings, challenger)
    tracks = _tracks(spark, 400)
    lake.write(tracks, SILVER_TRACKS)
    _log_reference(settings, version, tracks)
    rng = np.random.default_rng(9)
    feature_rows, scored_rows, rescored_rows, reference_rows = [], [], [], []
    for i, row in enumerate(tracks.collect()):
        split = SPLITS[i % 3]
        vector = [float(row[f]) * 2 - 1 for f in FEATURES]
        feature_rows.append(
            (row["track_id"], row["genre"], split, vector, i % 40 == 0, i % 40 != 0)
        )
        cnn = row["genre"] if rng.random() < 0.7 else GENRES[int(rng.integers(0, 3))]
        other = row["genre"] if rng.random() < 0.6 else GENRES[int(rng.integers(0, 4))]
        again = cnn if rng.random() < 0.95 else GENRES[int(rng.integers(0, 4))]
        scored_rows.append((row["track_id"], version, cnn, {cnn: 1.0}, [cnn]))
        scored_rows.append((row["track_id"], challenger, other, {other: 1.0}, [other]))
        rescored_rows.append((row["track_id"], version, again, {again: 1.0}, [again]))
        for model_name, right in (("logistic_regression", 0.5), ("xgboost", 0.6)):
            reference = row["genre"] if rng.random() < right else "jazz"
            reference_rows.append((row["track_id"], model_name, split, row["genre"], reference))
    lake.write(
        spark.createDataFrame(
            feature_rows,
            "track_id string, genre string, split string, features array<double>, "
            "is_outlier boolean, is_core boolean",
        ),
        GOLD_FEATURES,
    )
    lake.write(_scored(spark, scored_rows), GOLD_SCORED)
    lake.merge(_scored(spark, rescored_rows), GOLD_SCORED, keys=["track_id", "model_version"])
    lake.write(
        spark.createDataFrame(
            reference_rows,
            "track_id string, model string, split string, genre string, predicted string",
        ),
        GOLD_REFERENCE_PREDICTIONS,
    )
    lake.write(genre_baselines(tracks, FEATURES), GOLD_GENRE_BASELINES)
    lake.write(trends_by_year(tracks, FEATURES), GOLD_TRENDS_BY_YEAR)
    evaluate.run(lake)
    drift.run(lake, settings)
    return version, challenger


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    lacking("chromium", "apt-get install chromium; .ci/run installs it")


def _browser(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


@pytest.fixture(scope="module")
def full(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Lake, str]:
    root = tmp_path_factory.mktemp("report")
    settings = load_settings(
        overrides={"lake": str(root / "lake"), "reports": str(root / "reports")}, environ={}
    )
    lake = Lake(spark, settings.lake, settings.engine)
    return settings, lake, _fill_lake(spark, lake, settings)[0]


def test_report_has_every_section_and_its_numbers(full: tuple[Settings, Lake, str]) -> None:
    settings, lake, version = full

    index = report.run(lake, settings)

    assert index == Path(settings.reports) / version / "index.html"
    assert sorted(p.name for p in index.parent.glob("*.png")) == sorted(FIGURES)
    html = index.read_text()
    assert f"model cnn:{version}" in html
    assert html.count("<img ") == len(FIGURES)
    assert 'class="note"' not in html
    test_rows = lake.read(GOLD_EVALUATION).where("split = 'test'").collect()
    for row in test_rows:
        if row["genre"] == "macro avg":
            # The page's metrics table shows gold.evaluation's numbers.
            assert f"<td>{row['f1']:.3f}</td>" in html
            assert f"<td>{row['accuracy']:.3f}</td>" in html
    assert "logistic_regression" in html and "xgboost" in html
    features = html[html.index("<h2>Features</h2>") :].split("</section>")[0]
    assert features.count("</tr>") == 1 + len(FEATURES)  # header + one row per feature
    assert "<td>instrumentalness</td>" in features and "<td>0.500</td>" in features
    # Champion against challenger on the same test tracks: scikit-learn's numbers on gold.scored.
    assert "<dd>1 / 2</dd>" in html
    scored = lake.read(GOLD_SCORED).join(lake.read(GOLD_FEATURES), "track_id")
    frame = scored.where("split = 'test'").select("model_version", "genre", "predicted_genre")
    with stages.run(lake, stages.REPORT) as io:
        compared = data.head_to_head(io, ["1", "2"], "test").set_index("model")
    for model, rows in frame.toPandas().groupby("model_version"):
        truth, predicted = rows["genre"], rows["predicted_genre"]
        f1 = f1_score(truth, predicted, average="macro", zero_division=0)
        accuracy = accuracy_score(truth, predicted)
        found = compared.loc[f"cnn:{model}"]
        assert (found["tracks"], found["macro F1"]) == (len(rows), pytest.approx(f1, abs=1e-12))
        assert found["accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert f"<td>{f1:.3f}</td>" in html and f"<td>{accuracy:.3f}</td>" in html


def test_report_images_load_in_headless_chromium(
    full: tuple[Settings, Lake, str], tmp_path: Path
) -> None:
    settings, _, version = full
    cli = CliRunner().invoke(
        app,
        [
            "report",
            "--model-version",
            version,
            "--lake",
            settings.lake,
            "--set",
            f"reports={settings.reports}",
        ],
    )
    assert cli.exit_code == 0, cli.output
    index = Path(settings.reports) / version / "index.html"
    probe = index.parent / "_probe.html"
    probe.write_text(index.read_text().replace("</body>", MARK_IMAGES + "</body>"))
    try:
        dom = _browser(
            "--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp_path / "p1"
        ).stdout
    finally:
        probe.unlink()
    marks = re.search(r'data-images="(\d+)" data-loaded="(\d+)"', dom)
    assert marks is not None, dom[:500]
    assert (int(marks[1]), int(marks[2])) == (len(FIGURES), len(FIGURES))

    shot = tmp_path / "report.png"
    _browser(
        f"--screenshot={shot}", "--window-size=1280,5000", index.as_uri(), profile=tmp_path / "p2"
    )
    assert shot.stat().st_size > 10_000
    kept = Path(settings.reports) / f"screenshot-{version}.png"
    shutil.copy(shot, kept)
    print(f"report screenshot: {shot} (copy: {kept})")


def test_report_with_only_a_model_says_what_is_missing(
    spark: SparkSession, full: tuple[Settings, Lake, str], tmp_path: Path
) -> None:
    settings, lake, version = full
    bare_settings = load_settings(
        overrides={
            "lake": str(tmp_path / "lake"),
            "reports": str(tmp_path / "reports"),
            "mlflow.tracking_uri": settings.tracking_uri,
        },
        environ={},
    )
    bare = Lake(spark, bare_settings.lake, bare_settings.engine)
    bare.write(lake.read(GOLD_MODELS), GOLD_MODELS)

    index = report.run(bare, bare_settings, model_version=version)

    html = index.read_text()
    for table in (
        GOLD_EVALUATION,
        GOLD_CONFUSION,
        GOLD_GENRE_BASELINES,
        GOLD_TRENDS_BY_YEAR,
        GOLD_FEATURES,
        GOLD_SCORED,
        GOLD_DRIFT,
    ):
        assert f"{table} not found" in html
    assert [p.name for p in index.parent.glob("*.png")] == ["training.png"]
