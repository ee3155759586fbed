"""Crash safety: a write job SIGKILLed mid-write or just before its commit loses nothing.

Each test runs ``tests/crash_writer.py`` as its own process session (Python
driver, its JVM, and PySpark's worker daemon, which moves into a process
group of its own) and kills all of it with SIGKILL at one point. Afterwards
the table must still be at its previous version with the same content; a
re-run must give exactly the content of an uninterrupted run; the killed
run's files stay on disk but are never read, and ``genre vacuum`` removes
them. Two subprocesses (two JVM starts) in all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from crash_writer import MARKER, ROWS, TABLE, job_frame
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual
from subprocesses import START_TIMEOUT_S, kill_session, start
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.lake import Lake, content_hash

SCRIPT = Path(__file__).with_name("crash_writer.py")


def start_writer(root: Path, mode: str, log: Path) -> subprocess.Popen[bytes]:
    return start([sys.executable, str(SCRIPT), str(root), mode], log)


def parquet_files(folder: str) -> set[str]:
    return {n for n in os.listdir(folder) if n.endswith(".parquet")}


@pytest.fixture
def before(spark: SparkSession, tmp_path: Path) -> tuple[Lake, str, set[str]]:
    """Version 0 of the table (1,000 rows tagged v0): what a crash must leave untouched."""
    lake = Lake(spark, str(tmp_path / "lake"), "delta-rs")
    assert lake.write(job_frame(spark, 1000, "v0"), TABLE) == 0
    return lake, lake.content_hash(TABLE), parquet_files(lake.path(TABLE))


def assert_untouched_then_rerun_and_vacuum(
    spark: SparkSession, lake: Lake, h0: str, files0: set[str], orphans: set[str]
) -> None:
    """Previous version intact; re-run = uninterrupted content; orphans unread, then vacuumed."""
    path = lake.path(TABLE)
    assert orphans and not orphans & files0
    assert lake.version(TABLE) == 0
    assert lake.content_hash(TABLE) == h0
    assertDataFrameEqual(lake.read(TABLE), job_frame(spark, 1000, "v0"))

    assert lake.write(job_frame(spark), TABLE) == 1  # the re-run
    assert orphans <= parquet_files(path)  # still on disk ...
    assert not orphans & {os.path.basename(f) for f in lake.files(TABLE)}  # ... never read
    assertDataFrameEqual(lake.read(TABLE), job_frame(spark))
    rerun = lake.content_hash(TABLE)
    assert rerun == content_hash(job_frame(spark))

    result = CliRunner().invoke(app, ["vacuum", TABLE, "--lake", lake.root])
    assert result.exit_code == 0, result.output
    live = {os.path.basename(f) for f in lake.files(TABLE)}
    assert parquet_files(path) == live  # orphans and version 0's files are gone
    assert lake.content_hash(TABLE) == rerun


@pytest.mark.slow
def test_killed_while_part_files_are_being_written(
    spark: SparkSession, before: tuple[Lake, str, set[str]], tmp_path: Path
) -> None:
    lake, h0, files0 = before
    proc = start_writer(Path(lake.root), "slow", tmp_path / "writer.log")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not parquet_files(lake.path(TABLE)) - files0:
            assert proc.poll() is None, (tmp_path / "writer.log").read_text()
            assert time.monotonic() < deadline, "no part file appeared"
            time.sleep(0.1)
    finally:
        kill_session(proc.pid)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "committed" not in (tmp_path / "writer.log").read_text()
    orphans = parquet_files(lake.path(TABLE)) - files0
    assert_untouched_then_rerun_and_vacuum(spark, lake, h0, files0, orphans)


@pytest.mark.slow
def test_killed_just_before_the_commit(
    spark: SparkSession, before: tuple[Lake, str, set[str]], tmp_path: Path
) -> None:
    lake, h0, files0 = before
    proc = start_writer(Path(lake.root), "before_commit", tmp_path / "writer.log")
    try:
        proc.wait(timeout=START_TIMEOUT_S)
    finally:
        kill_session(proc.pid)  # whatever the commit worker's kill did not reach
    log = (tmp_path / "writer.log").read_text()
    assert proc.returncode == -signal.SIGKILL, log
    assert "committed" not in log
    marker = json.loads((Path(lake.root) / MARKER).read_text())
    written = set(marker["files"])
    path = lake.path(TABLE)
    # Every part file was complete: the kill came after the writes, before the log entry.
    assert sum(pq.ParquetFile(os.path.join(path, f)).metadata.num_rows for f in written) == ROWS
    assert parquet_files(path) - files0 == written
    assert_untouched_then_rerun_and_vacuum(spark, lake, h0, files0, written)
