"""Crash safety: SIGKILL at every kind of write loses nothing and mixes nothing.

Every test runs a real job as its own process session (Python driver, its
JVM, and PySpark's worker daemon, which moves into a process group of its
own) and kills all of it with SIGKILL at one point, reached through a marker
file, never a guessed sleep. Afterwards the previous version of every table
must still be readable with the same content, and a re-run must give exactly
the tables of an uninterrupted run. The kinds of write:

- a plain overwrite (``tests/crash_writer.py``): killed while part files are
  written, and after they are complete just before the commit; the killed
  run's files stay on disk but are never read, and ``genre vacuum`` removes them;
- a merge (``genre score`` into gold.scored, copy-on-write): killed in its
  commit step, its whole new copy of the table written;
- a multi-table stage (``genre prepare``): killed between its second and third
  table; train, references, tune, evaluate and report then refuse the mixed set;
- a Spotify checkpoint: ``tests/test_reliability_crash_spotify.py``.

- a partition replace (``genre ingest csv`` landing a second source in
  bronze.tracks_raw): killed inside its commit step on delta-rs, and while its
  files are written on delta-spark; the first source's rows and files stay,
  and a re-run gives the tables of a from-scratch ingest of both files.

The stage jobs run the real CLI in ``tests/cli_harness.py``. Six subprocesses
(six JVM starts) in this file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import require_delta_spark
from crash_writer import MARKER, ROWS, job_frame
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from subprocesses import START_TIMEOUT_S, kill_at, kill_session, start, start_harness
from test_reliability_concurrency import tidy_csv
from typer.testing import CliRunner

from genre_spark import stages
from genre_spark.cli import app
from genre_spark.config import Settings, load_settings
from genre_spark.ingest.csv import run_csv
from genre_spark.lake import Lake, content_hash
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_TRACKS_RAW,
    GOLD_FEATURES,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_SCORED,
    SILVER_TRACKS,
)
from genre_spark.pipeline import PipelineResult
from genre_spark.prepare.manifest import IncompletePrepareError, require_complete
from genre_spark.prepare.run import run as prepare_run
from genre_spark.score import run as score_run

SCRIPT = Path(__file__).with_name("crash_writer.py")


def start_writer(root: Path, mode: str, log: Path) -> subprocess.Popen[bytes]:
    return start([sys.executable, str(SCRIPT), str(root), mode], log)


def parquet_files(folder: str) -> set[str]:
    """Every Parquet file under a table folder (partition folders too), relative to it."""
    return {
        os.path.relpath(os.path.join(d, n), folder)
        for d, _, names in os.walk(folder)
        for n in names
        if n.endswith(".parquet") and "_delta_log" not in d
    }


def snapshot_files(lake: Lake, name: str) -> set[str]:
    """The current snapshot's data files, relative to the table folder."""
    return {os.path.relpath(f, lake.path(name)) for f in lake.files(name)}


@pytest.fixture
def before(spark: SparkSession, tmp_path: Path) -> tuple[Lake, str, set[str]]:
    """Version 0 of the table (1,000 rows tagged v0): what a crash must leave untouched."""
    lake = Lake(spark, str(tmp_path / "lake"), "delta-rs")
    assert lake.write(job_frame(spark, 1000, "v0"), SILVER_TRACKS) == 0
    return lake, lake.content_hash(SILVER_TRACKS), parquet_files(lake.path(SILVER_TRACKS))


def assert_untouched_then_rerun_and_vacuum(
    spark: SparkSession, lake: Lake, h0: str, files0: set[str], orphans: set[str]
) -> None:
    """Previous version intact; re-run = uninterrupted content; orphans unread, then vacuumed."""
    path = lake.path(SILVER_TRACKS)
    assert orphans and not orphans & files0
    assert lake.version(SILVER_TRACKS) == 0
    assert lake.content_hash(SILVER_TRACKS) == h0
    assertDataFrameEqual(lake.read(SILVER_TRACKS), job_frame(spark, 1000, "v0"))

    assert lake.write(job_frame(spark), SILVER_TRACKS) == 1  # the re-run
    assert orphans <= parquet_files(path)  # still on disk ...
    assert not orphans & {os.path.basename(f) for f in lake.files(SILVER_TRACKS)}  # ... never read
    assertDataFrameEqual(lake.read(SILVER_TRACKS), job_frame(spark))
    rerun = lake.content_hash(SILVER_TRACKS)
    assert rerun == content_hash(job_frame(spark))

    result = CliRunner().invoke(app, ["vacuum", SILVER_TRACKS, "--lake", lake.root])
    assert result.exit_code == 0, result.output
    live = {os.path.basename(f) for f in lake.files(SILVER_TRACKS)}
    assert parquet_files(path) == live  # orphans and version 0's files are gone
    assert lake.content_hash(SILVER_TRACKS) == rerun


@pytest.mark.slow
def test_killed_while_part_files_are_being_written(
    spark: SparkSession, before: tuple[Lake, str, set[str]], tmp_path: Path
) -> None:
    lake, h0, files0 = before
    proc = start_writer(Path(lake.root), "slow", tmp_path / "writer.log")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not parquet_files(lake.path(SILVER_TRACKS)) - files0:
            assert proc.poll() is None, (tmp_path / "writer.log").read_text()
            assert time.monotonic() < deadline, "no part file appeared"
            time.sleep(0.1)
    finally:
        kill_session(proc.pid)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "committed" not in (tmp_path / "writer.log").read_text()
    orphans = parquet_files(lake.path(SILVER_TRACKS)) - files0
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
    path = lake.path(SILVER_TRACKS)
    # Every part file was complete: the kill came after the writes, before the log entry.
    assert sum(pq.ParquetFile(os.path.join(path, f)).metadata.num_rows for f in written) == ROWS
    assert parquet_files(path) - files0 == written
    assert_untouched_then_rerun_and_vacuum(spark, lake, h0, files0, written)


# --- stages: a merge, and prepare part-way ----------------------------------------------


def copy_lake(spark: SparkSession, settings: Settings, to: Path) -> tuple[Lake, Settings]:
    """A copy of ``settings``' lake (tables, MLflow registry) at ``to``, and settings for it."""
    shutil.copytree(settings.lake, to)
    copied = settings.model_copy(update={"lake": str(to)})
    return Lake(spark, str(to), copied.engine), copied


@dataclass(frozen=True)
class Lakes:
    """A finished lake whose silver changed since (what the killed jobs start from), and what
    an uninterrupted prepare and score over it wrote in a copy."""

    start: Settings
    prepared: dict[str, str]
    scored: str


def changed_silver(silver: DataFrame) -> DataFrame:
    """A tenth of the tracks gone, a seventh with half their energy: every prepare table changes."""
    bucket = F.abs(F.xxhash64("track_id"))
    halved = F.when(bucket % 7 == 0, F.col("energy") * 0.5).otherwise(F.col("energy"))
    return silver.where(bucket % 10 != 0).withColumn("energy", halved)


@pytest.fixture(scope="module")
def lakes(
    spark: SparkSession,
    pipeline_run: tuple[Settings, Lake, PipelineResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> Lakes:
    settings = pipeline_run[0]
    root = tmp_path_factory.mktemp("crash-stages")
    lake, start = copy_lake(spark, settings, root / "start")
    lake.write(changed_silver(lake.read(SILVER_TRACKS)), SILVER_TRACKS)
    reference, uninterrupted = copy_lake(spark, start, root / "uninterrupted")
    prepare_run(reference, uninterrupted)
    score_run(reference, uninterrupted, model_version="1")
    prepared = {name: reference.content_hash(name) for name in stages.PREPARE.outputs}
    return Lakes(start, prepared, reference.content_hash(GOLD_SCORED))


def harness_job(folder: Path, args: list[str], hook: dict[str, Any]) -> subprocess.Popen[bytes]:
    spec = {"markers": str(folder / "markers"), "commands": [{"args": args, "hooks": [hook]}]}
    return start_harness(spec, folder)


@pytest.mark.slow
def test_score_killed_inside_its_merge_commit_leaves_gold_scored_as_it_was(
    spark: SparkSession, lakes: Lakes, tmp_path: Path
) -> None:
    lake, settings = copy_lake(spark, lakes.start, tmp_path / "lake")
    version, before = lake.version(GOLD_SCORED), lake.content_hash(GOLD_SCORED)
    assert before != lakes.scored  # the merge would change the table
    hook = {"kind": "pause_at_commit", "table": GOLD_SCORED}
    job = harness_job(
        tmp_path / "job", ["score", "--model-version", "1", "--lake", lake.root], hook
    )
    paused = kill_at(
        tmp_path / "job" / "markers" / "paused.json", job, tmp_path / "job" / "job.log"
    )

    written = set(paused["files"])  # the merge's new files (its partition), never committed
    assert written and written <= parquet_files(lake.path(GOLD_SCORED))
    assert not written & snapshot_files(lake, GOLD_SCORED)
    assert lake.version(GOLD_SCORED) == version
    assert lake.content_hash(GOLD_SCORED) == before

    score_run(lake, settings, model_version="1")  # the re-run
    assert lake.content_hash(GOLD_SCORED) == lakes.scored


@pytest.mark.slow
def test_prepare_killed_between_two_tables_is_refused_downstream_until_rerun(
    spark: SparkSession, lakes: Lakes, tmp_path: Path
) -> None:
    lake, settings = copy_lake(spark, lakes.start, tmp_path / "lake")
    before = {
        name: (lake.version(name), lake.content_hash(name)) for name in stages.PREPARE.outputs
    }
    hook = {"kind": "pause_before_write", "table": GOLD_OUTLIER_PARAMS}
    job = harness_job(tmp_path / "job", ["prepare", "--lake", lake.root], hook)
    kill_at(tmp_path / "job" / "markers" / "paused.json", job, tmp_path / "job" / "job.log")

    # Killed after gold.normalizer and gold.features, before gold.outlier_params: a real mix.
    moved = {name for name in stages.PREPARE.outputs if lake.version(name) != before[name][0]}
    assert moved == {GOLD_NORMALIZER, GOLD_FEATURES}
    assert lake.content_hash(GOLD_FEATURES) != before[GOLD_FEATURES][1]
    for name, (version, content) in before.items():  # every previous version still reads whole
        assert content_hash(lake.read(name, version)) == content
    with pytest.raises(IncompletePrepareError, match="did not finish"):
        require_complete(lake)
    for stage in ("train", "references", "tune", "evaluate", "report"):
        refused = CliRunner().invoke(app, [stage, "--lake", lake.root])
        said = " ".join(refused.output.split())
        assert refused.exit_code == 1, (stage, refused.output)
        assert "IncompletePrepareError" in said and "did not finish" in said, (stage, said)

    prepare_run(lake, settings)  # the re-run
    assert {name: lake.content_hash(name) for name in stages.PREPARE.outputs} == lakes.prepared
    require_complete(lake)


INGESTED = (BRONZE_TRACKS_RAW, SILVER_TRACKS, BRONZE_QUARANTINE)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "hook"), [("delta-rs", "pause_at_commit"), ("delta-spark", "pause_in_replace")]
)
def test_landing_a_source_killed_inside_its_partition_replace_leaves_bronze_as_it_was(
    spark: SparkSession, tmp_path: Path, engine: str, hook: str
) -> None:
    if engine == "delta-spark":
        require_delta_spark(spark)
    first, second = (
        tidy_csv(tmp_path / "first.csv", "f", 6),
        tidy_csv(tmp_path / "second.csv", "s", 5),
    )
    with second.open("a") as fh:  # a malformed row: bronze.quarantine is not empty after it
        fh.write("s-broken,too few fields\n")
    settings = load_settings(
        overrides={"lake": str(tmp_path / "lake"), "engine": engine}, environ={}
    )
    lake = Lake(spark, settings.lake, engine)  # type: ignore[arg-type]
    run_csv(lake, settings, first)
    version, before, files = (
        lake.version(BRONZE_TRACKS_RAW),
        lake.content_hash(BRONZE_TRACKS_RAW),
        snapshot_files(lake, BRONZE_TRACKS_RAW),
    )

    args = ["ingest", "csv", str(second), "--lake", lake.root, "--set", f"engine={engine}"]
    job = harness_job(tmp_path / "job", args, {"kind": hook, "table": BRONZE_TRACKS_RAW})
    kill_at(tmp_path / "job" / "markers" / "paused.json", job, tmp_path / "job" / "job.log")

    assert lake.version(BRONZE_TRACKS_RAW) == version
    assert lake.content_hash(BRONZE_TRACKS_RAW) == before
    assert snapshot_files(lake, BRONZE_TRACKS_RAW) == files

    run_csv(lake, settings, second)  # the re-run
    assert files <= snapshot_files(lake, BRONZE_TRACKS_RAW)  # the first source's files, untouched
    scratch = Lake(spark, str(tmp_path / "scratch"), engine)  # type: ignore[arg-type]
    for path in (second, first):
        run_csv(scratch, settings.model_copy(update={"lake": scratch.root}), path)
    assert {t: lake.content_hash(t) for t in INGESTED} == {
        t: scratch.content_hash(t) for t in INGESTED
    }
