"""A write job for the crash tests, run as its own process so a test can SIGKILL it.

``python tests/crash_writer.py LAKE MODE`` starts its own small local Spark
session and overwrites silver.tracks in LAKE through ``Lake.write`` with
``job_frame``'s rows. MODE:

- ``slow``: rows trickle into the writers one small batch at a time; the
  test kills the process group while part files are half-written.
- ``before_commit``: the write runs normally, but the commit step (which
  Spark runs in a Python worker of its own) has ``deltars_log.commit_files``
  wrapped to record the files it was given and then SIGKILL its whole process
  group (this driver, the JVM and every worker) instead of committing.

The fault injection lives here, not in production code: ``before_commit``
registers a subclass of the lake's data source whose writer wraps
``commit_files`` in the commit worker; classes defined in ``__main__`` travel
to that worker by value. Tests import ``job_frame`` to compute the
reference content in-process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from genre_spark.lake.catalog import SILVER_TRACKS

ROWS = 2000
PARTITIONS = 4
#: Rows per Arrow batch in the subprocess: small, so a stalled partition has
#: already handed its first batch to the writer.
BATCH = 50
#: Written by the commit wrapper just before it kills: the files it was given.
MARKER = "crash_marker.json"
#: Seconds between batches in ``slow`` mode: a partition of 500 rows takes 20 s,
#: far longer than the test needs to see its first part file and kill.
TRICKLE_S = 2.0


def job_frame(spark: SparkSession, rows: int = ROWS, tag: str = "v1") -> DataFrame:
    """The job's output: deterministic rows in PARTITIONS partitions."""
    return spark.range(rows, numPartitions=PARTITIONS).select(
        F.col("id").cast("string").alias("track_id"),
        (F.col("id") % 7).cast("string").alias("genre"),
        (F.col("id") / 3.0).alias("energy"),
        F.lit(tag).alias("note"),
    )


def _trickle(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Pass BATCH-row batches through every TRICKLE_S seconds: part files grow slowly."""
    for pdf in batches:
        for start in range(0, len(pdf), BATCH):
            yield pdf.iloc[start : start + BATCH]
            time.sleep(TRICKLE_S)


def _slow(df: DataFrame) -> DataFrame:
    return df.mapInPandas(_trickle, df.schema)


def _kill_own_group_instead_of_committing(lake_root: str) -> None:
    """Replace the lake source's writer so that its commit kills the process group."""
    from genre_spark.lake import deltars, deltars_log

    class KillingWriter(deltars._DeltaRsWriter):
        def commit(self, messages: list[Any]) -> None:
            def killer(path: str, schema: Any, files: list[dict[str, Any]], *a: Any) -> None:
                with open(os.path.join(lake_root, MARKER), "w") as fh:
                    json.dump({"table": path, "files": [f["path"] for f in files]}, fh)
                # The driver leads the session (the test starts it so) and its
                # group holds the JVM; this worker's daemon has a group of its own.
                os.killpg(os.getsid(0), signal.SIGKILL)
                os.killpg(os.getpgrp(), signal.SIGKILL)

            deltars_log.commit_files = killer
            super().commit(messages)

    class KillingSource(deltars.DeltaRsSource):
        def writer(self, schema: Any, overwrite: bool) -> KillingWriter:
            killing = KillingWriter.__new__(KillingWriter)  # the real writer's state
            killing.__dict__.update(vars(super().writer(schema, overwrite)))
            return killing

    SparkSession.getActiveSession().dataSource.register(KillingSource)  # type: ignore[union-attr]


def main(lake_root: str, mode: str) -> None:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.master("local[2]")
        .appName(f"crash-writer-{mode}")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    from genre_spark.lake import Lake

    lake = Lake(spark, lake_root, "delta-rs")
    df = job_frame(spark)
    if mode == "slow":
        df = _slow(df)
    elif mode == "before_commit":
        _kill_own_group_instead_of_committing(lake_root)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("writing", flush=True)
    lake.write(df, SILVER_TRACKS)
    print("committed", flush=True)  # never reached: the test fails if it is


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
