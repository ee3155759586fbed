"""The pipeline under spark-submit on a real standalone cluster equals a local run.

A master and two one-core workers start on 127.0.0.1 from the installed
pyspark; `spark-submit --master spark://... jobs/pipeline.py` runs every stage
(TorchDistributor in barrier mode, `train.local_mode=false`) on the same small
catalog as the shared local run, and each table is compared with the local one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMALL_PIPELINE
from pyspark.sql import DataFrame
from pyspark.testing import assertDataFrameEqual
from standalone import completed_applications, spark_submit, standalone_cluster

from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.pipeline import PipelineResult
from genre_spark.schema import TIME_COLUMNS

ROOT = Path(__file__).resolve().parent.parent

#: Tables whose content is a function of the input and the settings alone.
DATA_TABLES = (
    "bronze.tracks_raw",
    "bronze.quarantine",
    "silver.tracks",
    "gold.features",
    "gold.normalizer",
    "gold.outlier_params",
    "gold.genre_baselines",
    "gold.genre_matches",
    "gold.genre_playlists",
    "gold.trends_by_year",
)
#: Columns that name a run rather than describe the data.
RUN_COLUMNS = frozenset({"mlflow_run_id"})


def _comparable(lake: Lake, table: str) -> DataFrame:
    df = lake.read(table)
    return df.select(*[c for c in df.columns if c not in TIME_COLUMNS | RUN_COLUMNS])


@pytest.mark.slow
def test_pipeline_on_standalone_cluster_equals_local_run(
    pipeline_run: tuple[Settings, Lake, PipelineResult], tmp_path: Path
) -> None:
    _, local_lake, _ = pipeline_run
    cluster_lake_path = tmp_path / "lake"
    overrides = {
        **SMALL_PIPELINE,
        "reports": str(tmp_path / "reports"),
        "train.local_mode": "false",
    }
    args = ["--lake", str(cluster_lake_path)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]

    with standalone_cluster(tmp_path, workers=2, cores=1, memory="2g") as cluster:
        result = spark_submit(cluster, ROOT / "jobs" / "pipeline.py", args, cwd=tmp_path)
        finished_apps = completed_applications(cluster)
    (tmp_path / "spark-submit.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "pipeline finished" in result.stdout
    assert len(finished_apps) == 1, "the job did not run on the standalone master"

    cluster_lake = Lake(local_lake.spark, str(cluster_lake_path))
    assert {t.name for t in cluster_lake.tables()} == {t.name for t in local_lake.tables()}
    for table in DATA_TABLES:
        assertDataFrameEqual(_comparable(cluster_lake, table), _comparable(local_lake, table))
    assert list((tmp_path / "reports").glob("*/index.html"))
