"""Acceptance: `genre drift` on a catalogue shifted on purpose (another seed, tempo + 20 BPM)
flags tempo and no untouched feature; the predicted genre shares of the champion's two scoring
runs are compared; gold.drift and the report show it."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F
from typer.testing import CliRunner

from genre_spark import report
from genre_spark.cli import app
from genre_spark.config import Settings
from genre_spark.drift.run import ALL_GENRES
from genre_spark.ingest import synthetic
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_DRIFT, GOLD_MODELS, GOLD_SCORED, SILVER_TRACKS

runner = CliRunner()
TEMPO_SHIFT = 20.0


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    options = ["--lake", settings.lake, "--set", f"mlflow.experiment={settings.mlflow.experiment}"]
    result = runner.invoke(app, [*args, *options, "--set", f"reports={settings.reports}"])
    return result.exit_code, result.output


def _shares(lake: Lake, version: int) -> dict[str, float]:
    """Predicted genre shares of version 1's newest run in gold.scored at ``version``."""
    scored = lake.read(GOLD_SCORED, version).where(F.col("model_version") == "1")
    newest = scored.agg(F.max("scored_at").alias("scored_at"))
    counts = scored.join(newest, "scored_at").groupBy("predicted_genre").count()
    rows = {r["predicted_genre"]: r["count"] for r in counts.collect()}
    return {g: n / sum(rows.values()) for g, n in rows.items()}


@pytest.mark.slow
def test_drift_flags_the_shifted_tempo_only(pipeline_copy: tuple[Settings, Lake]) -> None:
    settings, lake = pipeline_copy
    code, output = _cli(settings, "drift")
    assert code == 0 and "no drift above the thresholds" in output, output  # its own catalogue

    other = settings.model_copy(deep=True)
    other.ingest.synthetic.seed = settings.ingest.synthetic.seed + 1000
    synthetic.run(lake, other)
    shifted = lake.read(SILVER_TRACKS).withColumn("tempo", F.col("tempo") + TEMPO_SHIFT)
    lake.write(shifted, SILVER_TRACKS)
    before = lake.version(GOLD_SCORED)
    code, output = _cli(settings, "score")
    assert code == 0, output

    code, output = _cli(settings, "drift", "--fail-on-drift")
    assert code == 1 and "drift: tempo" in output, output

    newest = lake.read(GOLD_DRIFT).agg(F.max("computed_at")).first()[0]
    rows = lake.read(GOLD_DRIFT).where(F.col("computed_at") == newest).collect()
    features = {r["name"]: r for r in rows if r["kind"] == "feature"}
    trained_on = lake.read(GOLD_MODELS).where(F.col("version") == "1").first()["features"]
    assert set(features) == set(trained_on)  # the raw features the champion reads
    assert {n for n, r in features.items() if r["drifted"]} == {"tempo"}
    assert features["tempo"]["ks"] > settings.drift.ks_threshold
    assert features["tempo"]["psi"] > settings.drift.psi_threshold
    assert all(
        r["current"] == f"silver.tracks v{lake.version('silver.tracks')}"
        for r in rows
        if r["kind"] == "feature"
    )

    genres = {r["name"]: r for r in rows if r["kind"] == "prediction"}
    overall = genres.pop(ALL_GENRES)
    assert f"gold.scored v{before}" in overall["baseline"]
    assert f"gold.scored v{lake.version('gold.scored')}" in overall["current"]
    baseline, current = _shares(lake, before), _shares(lake, lake.version(GOLD_SCORED))
    assert set(genres) == set(baseline) | set(current)
    for genre, row in genres.items():
        assert row["baseline_share"] == pytest.approx(baseline.get(genre, 0.0), abs=1e-12)
        assert row["current_share"] == pytest.approx(current.get(genre, 0.0), abs=1e-12)
    b = np.maximum([baseline.get(g, 0.0) for g in sorted(genres)], settings.drift.psi_floor)
    c = np.maximum([current.get(g, 0.0) for g in sorted(genres)], settings.drift.psi_floor)
    assert overall["psi"] == pytest.approx(float(np.sum((c - b) * np.log(c / b))), abs=1e-12)

    page = report.run(lake, settings).read_text()
    assert "Drift flagged: tempo." in page
    for image in ("drift.png", "drift_distributions.png", "genre_shares.png"):
        assert f'src="{image}"' in page
