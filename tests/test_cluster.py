"""The pipeline under spark-submit on a real standalone cluster, with Delta's connector, equals a
local run.

A master and two one-core workers start on 127.0.0.1 from the installed
pyspark; `spark-submit --jars <Delta's jars> ... jobs/pipeline.py` runs every
stage on the delta-spark engine (TorchDistributor in barrier mode,
`train.local_mode=false`) on the same small catalog as the shared local run
(delta-rs), and each table is compared with the local one. `genre tables` and
`genre sql` then read the cluster's lake. Without the jars (no `make setup`)
the cluster runs on delta-rs and says so; under CI=true that fails.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import pytest
from conftest import DELTA_JARS, DELTA_TEST_CONF, SMALL_PIPELINE, require_delta_spark
from pyspark.sql import DataFrame
from pyspark.testing import assertDataFrameEqual
from standalone import Cluster, completed_applications, delta_submit_args, spark_submit
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_TRACKS_RAW,
    GOLD_FEATURES,
    GOLD_GENRE_BASELINES,
    GOLD_GENRE_MATCHES,
    GOLD_GENRE_PLAYLISTS,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_SCORED,
    GOLD_TRENDS_BY_YEAR,
    SILVER_TRACKS,
    TIME_COLUMNS,
)
from genre_spark.pipeline import PipelineResult

ROOT = Path(__file__).resolve().parent.parent

#: Tables whose content is a function of the input and the settings alone.
DATA_TABLES = (
    BRONZE_TRACKS_RAW,
    BRONZE_QUARANTINE,
    SILVER_TRACKS,
    GOLD_FEATURES,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_GENRE_BASELINES,
    GOLD_GENRE_MATCHES,
    GOLD_GENRE_PLAYLISTS,
    GOLD_TRENDS_BY_YEAR,
)
#: Columns that name a run rather than describe the data.
RUN_COLUMNS = frozenset({"mlflow_run_id"})


def _comparable(lake: Lake, table: str) -> DataFrame:
    df = lake.read(table)
    return df.select(*[c for c in df.columns if c not in TIME_COLUMNS | RUN_COLUMNS])


def _cluster_engine() -> str:
    if DELTA_JARS:
        return "delta-spark"
    if os.environ.get("CI") == "true":
        pytest.fail(
            "Delta's connector jars are missing (make setup): CI runs the cluster on delta-spark"
        )
    warnings.warn(
        "no Delta connector jars (make setup): the cluster test runs on delta-rs", stacklevel=2
    )
    return "delta-rs"


def _submit_args(engine: str) -> list[str]:
    if engine != "delta-spark":
        return []
    conf = [f"{key}={value}" for key, value in DELTA_TEST_CONF.items()]
    return [*delta_submit_args(DELTA_JARS), *[a for c in conf for a in ("--conf", c)]]


def _engine_info(lake: Lake, table: str) -> str:
    """The engineInfo of the commit that made a table's current version."""
    log = Path(lake.path(table)) / "_delta_log" / f"{lake.version(table):020d}.json"
    actions = [json.loads(line) for line in log.read_text().splitlines() if line]
    return next(a["commitInfo"]["engineInfo"] for a in actions if "commitInfo" in a)


@pytest.mark.slow
def test_pipeline_on_standalone_cluster_equals_local_run(
    pipeline_run: tuple[Settings, Lake, PipelineResult], cluster: Cluster, tmp_path: Path
) -> None:
    _, local_lake, _ = pipeline_run
    engine = _cluster_engine()
    cluster_lake_path = tmp_path / "lake"
    overrides = {
        **SMALL_PIPELINE,
        "reports": str(tmp_path / "reports"),
        "train.local_mode": "false",
    }
    args = ["--lake", str(cluster_lake_path)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]

    before = completed_applications(cluster)
    result = spark_submit(
        cluster,
        ROOT / "jobs" / "pipeline.py",
        args,
        cwd=tmp_path,
        submit_args=_submit_args(engine),
    )
    finished = len(completed_applications(cluster)) - len(before)
    (tmp_path / "spark-submit.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "pipeline finished" in result.stdout
    assert finished == 1, "the job did not run on the standalone master"

    if engine == "delta-spark":
        require_delta_spark(local_lake.spark)
    cluster_lake = Lake(local_lake.spark, str(cluster_lake_path), engine)  # type: ignore[arg-type]
    assert {t.name for t in cluster_lake.tables()} == {t.name for t in local_lake.tables()}
    for table in DATA_TABLES:
        assertDataFrameEqual(_comparable(cluster_lake, table), _comparable(local_lake, table))
    assert list((tmp_path / "reports").glob("*/index.html"))
    if engine == "delta-spark":
        for table in (SILVER_TRACKS, GOLD_FEATURES, GOLD_SCORED):
            assert re.fullmatch(
                r"Apache-Spark/\S+ Delta-Lake/\S+", _engine_info(cluster_lake, table)
            )
        _the_cli_reads_the_lake(cluster_lake, local_lake)


def _the_cli_reads_the_lake(lake: Lake, reference: Lake) -> None:
    """`genre tables` and `genre sql` on the cluster's delta-spark lake, against the local run."""
    runner = CliRunner()
    where = ["--lake", lake.root, "--set", "engine=delta-spark"]
    listed = runner.invoke(app, ["tables", *where], env={"COLUMNS": "300"})
    assert listed.exit_code == 0, listed.output
    for info in lake.tables():
        assert re.search(
            rf"{re.escape(info.name)}\s*│\s*{info.version}\s*│\s*{info.rows}\s", listed.stdout
        )
    query = "SELECT genre, count(*) AS n FROM silver.tracks GROUP BY genre ORDER BY genre"
    answered = runner.invoke(app, ["sql", query, "--format", "csv", *where])
    assert answered.exit_code == 0, answered.output
    expected = reference.read(SILVER_TRACKS).groupBy("genre").count().orderBy("genre").collect()
    assert answered.stdout.splitlines() == [
        "genre,n",
        *[f"{r['genre']},{r['count']}" for r in expected],
    ]
