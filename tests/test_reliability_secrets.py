"""Secrets never leave the environment: not into MLflow, reports, tables, output or errors.

``test_ingest_spotify.py`` already proves it for ingest (logs, CLI output,
every lake table, every file, a refused run's error). This extends it to the
stages after ingest, which also run with SPOTIPY_* in their environment: on a
copy of the shared pipeline lake, ``genre train``, ``genre report`` and a
failing ``genre score`` run verbose with a known fake secret set; then the
MLflow store (SQLite bytes, every artifact file), the reports folder, every
table's string columns and all output are searched for the secret and its
base64 (HTTP Basic) form.
"""

from __future__ import annotations

import base64
import functools
import operator
import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from test_ingest_spotify import SECRET
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.pipeline import PipelineResult

CLIENT_ID = "fake-client-id"
NEEDLES = (SECRET, base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode())


def table_hits(lake: Lake, name: str) -> int:
    """Rows of a table whose string columns contain a needle: a filter on executors."""
    df = lake.read(name)
    strings = [f.name for f in df.schema.fields if f.dataType.typeName() == "string"]
    found = [F.coalesce(F.col(c).contains(n), F.lit(False)) for c in strings for n in NEEDLES]
    return df.where(functools.reduce(operator.or_, found, F.lit(False))).count()


@pytest.mark.slow
def test_secret_in_env_reaches_no_mlflow_store_report_table_or_error(
    spark: SparkSession,
    pipeline_run: tuple[Settings, Lake, PipelineResult],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings, _, _ = pipeline_run
    root = tmp_path / "lake"
    shutil.copytree(settings.lake, root)
    reports = tmp_path / "reports"
    env = {"SPOTIPY_CLIENT_ID": CLIENT_ID, "SPOTIPY_CLIENT_SECRET": SECRET}
    common = ["--lake", str(root), "-v", "--set", "mlflow.experiment=secrets"]
    runner = CliRunner()
    trained = runner.invoke(
        app,
        ["train", *common, "--set", "train.epochs=1", "--set", "train.min_epoch_steps=1"],
        env=env,
    )
    assert trained.exit_code == 0, trained.output
    reported = runner.invoke(
        app,
        ["report", *common, "--set", f"reports={reports}", "--set", "report.sample_size=200"],
        env=env,
    )
    assert reported.exit_code == 0, reported.output
    failed = runner.invoke(app, ["score", *common, "--model-version", "99"], env=env)
    assert failed.exit_code != 0 and "99" in failed.output

    captured = capfd.readouterr()
    for text in (trained.output, reported.output, failed.output, captured.out, captured.err):
        assert not any(n in text for n in NEEDLES)
    store = [root / "mlflow.db", *(root / "mlartifacts").rglob("*"), *reports.rglob("*")]
    files = [p for p in store if p.is_file()]
    assert any(p.suffix == ".html" for p in files)  # the report was there to search
    assert any(p.name == "MLmodel" for p in files)  # and the logged model's artifacts
    for path in files:
        data = path.read_bytes()
        assert not any(n.encode() in data for n in NEEDLES), path
    lake = Lake(spark, str(root))
    for info in lake.tables():
        assert table_hits(lake, info.name) == 0, info.name
