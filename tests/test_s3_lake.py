"""The pipeline with its lake on s3a:// (a local S3 server) on the delta-spark engine equals the
local run.

On demand: ``make test-s3`` fetches the S3A jars (``jvm/s3/pom.xml``, 13 MB),
installs moto and sets ``TEST_S3_LAKE=1``; ``make test`` skips this test. moto's
S3 server runs on 127.0.0.1; the pipeline runs in a child
process through ``genre pipeline`` (local Spark, Delta's and S3A's jars,
``engine: delta-spark``), so it starts its session as a user's command would.
Training ranks read gold.features' files from S3 through pyarrow.

Delta on S3 here uses the connector's default log store for s3a
(``S3SingleDriverLogStore``): safe while one Spark application writes a
table, which is what a pipeline run is. Writers in several applications at
once need Delta's DynamoDB log store (``io.delta:delta-storage-s3-dynamodb``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DELTA_JARS, DELTA_TEST_CONF, SMALL_PIPELINE
from pyspark.testing import assertDataFrameEqual
from standalone import free_port
from test_cluster import DATA_TABLES, RUN_COLUMNS

from genre_spark.config import Settings
from genre_spark.lake import Lake, table_path
from genre_spark.lake.catalog import TIME_COLUMNS
from genre_spark.pipeline import PipelineResult

ROOT = Path(__file__).resolve().parent.parent
S3_JARS = sorted(str(p) for p in (ROOT / "jvm" / "s3" / "jars").glob("*.jar"))
BUCKET = "genre-lake"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with one empty bucket; stopped after the test.

    A process of its own: delta-rs, reading the lake back in this process,
    holds the GIL while it waits for S3, so an in-process server would stall.
    """
    if os.environ.get("TEST_S3_LAKE") != "1":
        pytest.skip("on demand: make test-s3 (S3A jars, moto, and a pipeline run on s3a://)")
    if not (S3_JARS and DELTA_JARS):
        pytest.fail("make test-s3 fetches the S3A jars into jvm/s3/jars and Delta's into jvm/delta")
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(tmp_path / "moto.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_REGION"],
    }


def _config(endpoint: str, tmp_path: Path) -> Path:
    """What a user's --config for an S3 lake holds: the lake URI, the engine, S3A settings."""
    s3a = {
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": CREDENTIALS["AWS_REGION"],
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
    }
    config = {
        "lake": f"s3a://{BUCKET}/lake",
        "engine": "delta-spark",
        "reports": str(tmp_path / "reports"),
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "spark": {
            "master": "local[2]",
            "driver_memory": "2g",
            "shuffle_partitions": 4,
            "conf": {"spark.jars": ",".join(S3_JARS), **s3a, **DELTA_TEST_CONF},
        },
    }
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _s3_table(endpoint: str, table: str) -> Any:
    """A table of the S3 lake opened by delta-rs (the test session has no S3A jars)."""
    from deltalake import DeltaTable

    options = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    return DeltaTable(table_path(f"s3a://{BUCKET}/lake", table), storage_options=options)


def test_pipeline_on_an_s3a_lake_equals_the_local_run(
    pipeline_run: tuple[Settings, Lake, PipelineResult], s3_endpoint: str, tmp_path: Path
) -> None:
    _, local_lake, _ = pipeline_run
    command = [sys.executable, "-m", "genre_spark.cli", "pipeline"]
    command += ["--config", str(_config(s3_endpoint, tmp_path))]
    for key, value in SMALL_PIPELINE.items():
        command += ["--set", f"{key}={value}"]
    env = {
        **os.environ,
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": s3_endpoint,  # pyarrow (training ranks) and boto3 (MLflow)
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2400
    )
    (tmp_path / "pipeline.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "pipeline finished" in result.stdout
    assert re.search(rf"tables:\s+s3a://{BUCKET}/lake", result.stdout), result.stdout[-2000:]

    spark = local_lake.spark
    for table in DATA_TABLES:
        local = local_lake.read(table)
        columns = [c for c in local.columns if c not in TIME_COLUMNS | RUN_COLUMNS]
        on_s3 = _s3_table(s3_endpoint, table)
        assert on_s3.history(1)[0]["engineInfo"].startswith("Apache-Spark/"), table
        assertDataFrameEqual(
            spark.createDataFrame(on_s3.to_pyarrow_table(columns=columns)), local.select(*columns)
        )
    assert list((tmp_path / "reports").glob("*/index.html"))
