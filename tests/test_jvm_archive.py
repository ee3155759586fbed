"""The suite's class archive (tests/jvm_archive.py) is one that Spark's own JVMs really map.

A JVM that cannot use an archive starts without it and says nothing (the
options silence CDS's messages), so a broken dump would only make the suite
slower. Here ``-Xshare:on`` turns "cannot map it" into a failed start.
"""

from __future__ import annotations

import subprocess

import jvm_archive
import pytest
from pyspark.sql import SparkSession
from standalone import SPARK_HOME, spark_env


@pytest.mark.slow
def test_spark_submit_starts_on_the_suites_class_archive(spark: SparkSession) -> None:
    options = jvm_archive.wait(timeout_s=600)
    assert options, "the class archive's dump failed: see jvm-archive*/dump.log under pytest's temp"
    env = {**spark_env(), jvm_archive.DRIVER_OPTS: f"{options} -Xshare:on"}
    started = subprocess.run(
        [str(SPARK_HOME / "bin" / "spark-submit"), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert "version" in started.stdout + started.stderr
