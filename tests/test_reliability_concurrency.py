"""Concurrent writers to one table: both commit in order, or one gets ConcurrentWriteError; nothing lost.

Three levels. Whole ``Lake.write`` calls from two threads sharing the Spark
session (what two jobs on one driver do). A forced race at the commit
itself: both writers load the same snapshot, wait for each other, then
commit — the case a scheduler cannot be relied on to produce, created here by
holding delta-rs' commit call at a barrier (test code only). A silver
refresh held between its read of bronze and its silver write while another
refresh runs, on threads (the interleaving the processes below reach only by
chance). And two
``genre ingest csv`` *processes*, each with its own JVM, into one lake, their
commits held (``tests/cli_harness.py``) until both have built their write and
then released one after the other.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from subprocesses import finish, start_harness
from test_ingest_csv import TIDY_HEADER, TIDY_ROWS
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import Settings
from genre_spark.ingest.csv import run_csv
from genre_spark.lake import ConcurrentWriteError, Lake, deltars, deltars_log
from genre_spark.lake.catalog import BRONZE_QUARANTINE, BRONZE_TRACKS_RAW, SILVER_TRACKS
from genre_spark.lake.deltars_log import Commit


def frame(spark: SparkSession, start: int, rows: int, tag: str) -> DataFrame:
    return spark.range(start, start + rows, numPartitions=2).select(
        F.col("id").cast("string").alias("track_id"), F.lit(tag).alias("note")
    )


def run_both(fns: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Run callables in threads started together; their results and exceptions."""
    start = threading.Barrier(len(fns))
    results: list[Any] = []
    errors: list[BaseException] = []

    def go(fn: Callable[[], Any]) -> None:
        start.wait()
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results, errors


def test_two_threads_append_at_once_both_rows_present_exactly_once(
    spark: SparkSession, lake: Lake
) -> None:
    lake.write(frame(spark, 0, 100, "v0"), SILVER_TRACKS)
    a, b = frame(spark, 1000, 300, "a"), frame(spark, 2000, 300, "b")
    results, errors = run_both(
        [
            lambda: lake.write(a, SILVER_TRACKS, "append"),
            lambda: lake.write(b, SILVER_TRACKS, "append"),
        ]
    )
    assert errors == [], [str(e)[:3000] for e in errors]
    # Each write returns its own commit's version, whichever committed last.
    assert sorted(results) == [1, 2]
    assertDataFrameEqual(lake.read(SILVER_TRACKS), frame(spark, 0, 100, "v0").union(a).union(b))
    assert sorted(h["operation"] for h in lake.history(SILVER_TRACKS)) == [
        "APPEND",
        "APPEND",
        "OVERWRITE",
    ]


def hold_for_both(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, timeout: float = 60
) -> threading.Barrier:
    """Make ``owner.name`` wait until two threads have called it, then run the real one."""
    barrier = threading.Barrier(2, timeout=timeout)
    real = getattr(owner, name)

    def held(*args: Any, **kwargs: Any) -> Any:
        barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return barrier


def test_each_write_returns_its_own_version_when_both_commit_before_either_asks(
    spark: SparkSession, lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both appends commit, then meet before looking up their version: the latest is 2 for both."""
    lake.write(frame(spark, 0, 100, "v0"), SILVER_TRACKS)
    hold_for_both(monkeypatch, deltars, "committed_version", timeout=120)
    tags = {"a": frame(spark, 1000, 300, "a"), "b": frame(spark, 2000, 300, "b")}
    results, errors = run_both(
        [lambda t=t: (t, lake.write(tags[t], SILVER_TRACKS, "append")) for t in tags]
    )
    assert errors == [] and lake.version(SILVER_TRACKS) == 2
    for tag, version in results:  # the version a write returned holds its rows, not the other's
        added = lake.read(SILVER_TRACKS, version).exceptAll(lake.read(SILVER_TRACKS, version - 1))
        assertDataFrameEqual(added, tags[tag])


def test_two_threads_overwrite_at_once_final_table_is_exactly_one_input(
    spark: SparkSession, lake: Lake
) -> None:
    lake.write(frame(spark, 0, 100, "v0"), SILVER_TRACKS)
    a, b = frame(spark, 1000, 300, "a"), frame(spark, 2000, 200, "b")
    results, errors = run_both(
        [lambda: lake.write(a, SILVER_TRACKS), lambda: lake.write(b, SILVER_TRACKS)]
    )
    assert all(isinstance(e, ConcurrentWriteError) for e in errors), errors
    assert len(results) + len(errors) == 2 and results
    final = lake.read(SILVER_TRACKS)
    tags = {r.note for r in final.select("note").distinct().collect()}
    assert len(tags) == 1
    assertDataFrameEqual(final, a if tags == {"a"} else b)
    assert len(lake.history(SILVER_TRACKS)) == 1 + len(results)
    assert sorted(results) == list(range(1, 1 + len(results)))


def test_threads_registering_one_table_for_sql_at_once_all_succeed(
    spark: SparkSession, lake: Lake
) -> None:
    """Threads registering the lake's SQL tables at once (each drops and re-creates) must not collide."""
    lake.write(frame(spark, 0, 100, "v0"), SILVER_TRACKS)
    for _ in range(3):
        results, errors = run_both([lake.register_sql] * 6)
        assert errors == [], [str(e)[:500] for e in errors]
        assert len(results) == 6
    assert spark.sql(f"SELECT count(*) AS n FROM {SILVER_TRACKS}").first()["n"] == 100


# --- the forced race at the commit ---------------------------------------------------


def part_file(folder: str, ids: range, tag: str) -> dict[str, Any]:
    """A complete Parquet part file in the table folder, described as a write task reports it."""
    name = f"part-00000-{uuid.uuid4().hex}.snappy.parquet"
    table = pa.table({"track_id": [str(i) for i in ids], "note": [tag] * len(ids)})
    pq.write_table(table, os.path.join(folder, name))
    stat = os.stat(os.path.join(folder, name))
    return {
        "path": name,
        "size": stat.st_size,
        "rows": len(ids),
        "mtime": int(stat.st_mtime * 1000),
    }


@pytest.fixture
def held_commits(monkeypatch: pytest.MonkeyPatch) -> threading.Barrier:
    """Both writers load their snapshot, then meet here before either commits."""
    return hold_for_both(monkeypatch, DeltaTable, "create_write_transaction")


SCHEMA = pa.schema([("track_id", pa.string()), ("note", pa.string())])


def race(lake: Lake, overwrite: bool) -> tuple[list[str], list[BaseException]]:
    """Version 0 (ids 0-9), then two commits of different files from the same snapshot."""
    path = lake.path(SILVER_TRACKS)
    os.makedirs(path, exist_ok=True)
    first = Commit("OVERWRITE", overwrite=True)
    deltars_log.commit_files(path, SCHEMA, [part_file(path, range(10), "v0")], first)
    op = "OVERWRITE" if overwrite else "APPEND"
    files = {"a": part_file(path, range(100, 150), "a"), "b": part_file(path, range(200, 230), "b")}

    def commit(tag: str) -> Callable[[], str]:
        commit = Commit(op, overwrite=overwrite)
        return lambda: (deltars_log.commit_files(path, SCHEMA, [files[tag]], commit), tag)[1]

    return run_both([commit("a"), commit("b")])


def notes(lake: Lake) -> dict[str, int]:
    rows = lake.read(SILVER_TRACKS).groupBy("note").count().collect()
    return {r["note"]: r["count"] for r in rows}


def test_forced_append_race_both_appends_land_once(
    spark: SparkSession, lake: Lake, held_commits: threading.Barrier
) -> None:
    committed, errors = race(lake, overwrite=False)
    assert errors == [] and sorted(committed) == ["a", "b"]
    assert notes(lake) == {"v0": 10, "a": 50, "b": 30}
    assert lake.read(SILVER_TRACKS).select("track_id").distinct().count() == 90
    assert lake.version(SILVER_TRACKS) == 2


def test_forced_overwrite_race_one_wins_the_other_gets_a_clear_error(
    spark: SparkSession, lake: Lake, held_commits: threading.Barrier
) -> None:
    committed, errors = race(lake, overwrite=True)
    sizes = {"a": 50, "b": 30}
    if errors:  # the loser is told, by name, and nothing of its files is visible
        assert len(committed) == 1 and len(errors) == 1
        assert isinstance(errors[0], ConcurrentWriteError)
        assert "concurrent writer" in str(errors[0]) and lake.path(SILVER_TRACKS) in str(errors[0])
        assert notes(lake) == {committed[0]: sizes[committed[0]]}
        assert lake.version(SILVER_TRACKS) == 1
    else:  # serialised: the later overwrite replaced the earlier one entirely
        assert len(committed) == 2
        assert len(notes(lake)) == 1 and lake.version(SILVER_TRACKS) == 2
        (tag,) = notes(lake)
        assert notes(lake) == {tag: sizes[tag]}


# --- two processes ------------------------------------------------------------------


def tidy_csv(path: Path, prefix: str, rows: int) -> Path:
    """A TidyTuesday export of ``rows`` tracks with ids ``<prefix>0``, ``<prefix>1``, ..."""
    lines = [TIDY_HEADER]
    for i in range(rows):
        fields = TIDY_ROWS[0].split(",")
        fields[0], fields[1] = f"{prefix}{i}", f"Song {prefix}{i}"
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_overwrite_based_on_an_older_version_loses(
    spark: SparkSession, engine_lake: Lake
) -> None:
    """``unchanged_since``: each engine refuses an overwrite decided before the latest commit."""
    absent = engine_lake.version_or_absent(SILVER_TRACKS)
    engine_lake.write(frame(spark, 0, 10, "v0"), SILVER_TRACKS, unchanged_since=absent)
    with pytest.raises(ConcurrentWriteError, match="lost to a concurrent writer"):
        engine_lake.write(frame(spark, 0, 5, "second"), SILVER_TRACKS, unchanged_since=absent)
    seen = engine_lake.version_or_absent(SILVER_TRACKS)
    engine_lake.write(frame(spark, 0, 20, "newer"), SILVER_TRACKS)
    with pytest.raises(ConcurrentWriteError, match="lost to a concurrent writer"):
        engine_lake.write(frame(spark, 0, 5, "stale"), SILVER_TRACKS, unchanged_since=seen)
    assert notes(engine_lake) == {"newer": 20}
    latest = engine_lake.version_or_absent(SILVER_TRACKS)
    engine_lake.write(frame(spark, 0, 5, "fresh"), SILVER_TRACKS, unchanged_since=latest)
    assert notes(engine_lake) == {"fresh": 5} and engine_lake.version(SILVER_TRACKS) == latest + 1


def test_a_silver_refresh_from_an_older_bronze_loses_to_a_newer_one(
    spark: SparkSession, lake: Lake, settings: Settings, tmp_path: Path, monkeypatch: Any
) -> None:
    """The race the two-process test below can only hit by chance, made certain with threads.

    Job "stale" lands a.csv and reads bronze, then is held before its silver
    write while b.csv is landed and silver rebuilt from all three files. Let
    go, the stale silver (without b's rows) must not replace the newer one.
    """
    run_csv(lake, settings, tidy_csv(tmp_path / "first.csv", "f", 5))
    held, release = threading.Event(), threading.Event()
    real = Lake.write

    def write(self: Lake, df: DataFrame, name: str, *args: Any, **kwargs: Any) -> int:
        if name == SILVER_TRACKS and threading.current_thread().name == "stale":
            held.set()
            assert release.wait(300)
        return real(self, df, name, *args, **kwargs)

    monkeypatch.setattr(Lake, "write", write)
    errors: list[BaseException] = []

    def stale() -> None:
        try:
            run_csv(lake, settings, tidy_csv(tmp_path / "a.csv", "a", 7))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=stale, name="stale")
    thread.start()
    assert held.wait(300)
    newer = run_csv(lake, settings, tidy_csv(tmp_path / "b.csv", "b", 7))
    release.set()
    thread.join(300)

    assert newer.summary.rows_in == 19 and newer.summary.silver_rows == 19
    assert [type(e) for e in errors] == [ConcurrentWriteError], errors
    assert "lost to a concurrent writer" in str(errors[0])
    ids = {r["track_id"] for r in lake.read(SILVER_TRACKS).select("track_id").collect()}
    assert ids == {f"{p}{i}" for p, n in (("f", 5), ("a", 7), ("b", 7)) for i in range(n)}


@pytest.mark.slow
def test_two_processes_ingesting_into_one_lake_at_once_lose_and_double_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Two ``genre ingest csv`` jobs build bronze from the same version; the second commits last.

    Each job replaces its own file's partition of bronze.tracks_raw: the two
    replaces touch different partitions, so both may land. Then each rebuilds
    silver from all of bronze; a job whose silver was computed without the
    other's rows must not commit it: it fails with ConcurrentWriteError, one
    line, and running it again gives the tables of both files.
    """
    lake_root = tmp_path / "lake"
    first = CliRunner().invoke(
        app,
        ["ingest", "csv", str(tidy_csv(tmp_path / "first.csv", "f", 5)), "--lake", str(lake_root)],
    )
    assert first.exit_code == 0, first.output
    files = {name: tidy_csv(tmp_path / f"{name}.csv", name, 7) for name in ("a", "b")}
    markers = tmp_path / "markers"
    jobs = {}
    for name, after in (("a", None), ("b", "a")):
        hook = {"kind": "commit_in_turn", "table": BRONZE_TRACKS_RAW, "name": name,
                "peers": ["a", "b"], "after": after}  # fmt: skip
        args = ["ingest", "csv", str(files[name]), "--lake", str(lake_root)]
        spec = {"markers": str(markers), "commands": [{"args": args, "hooks": [hook]}]}
        jobs[name] = start_harness(spec, tmp_path / f"job-{name}")
    logs = {name: finish(job, tmp_path / f"job-{name}" / "job.log") for name, job in jobs.items()}

    for name, job in jobs.items():  # either may lose its silver commit to the other's
        if job.returncode == 0:
            continue
        errors = [line for line in logs[name].splitlines() if line.startswith("error:")]
        assert job.returncode == 1, logs[name]  # refused: named, one line
        assert len(errors) == 1 and "ConcurrentWriteError" in errors[0], logs[name]
        assert "lost to a concurrent writer" in errors[0], errors[0]
        again = CliRunner().invoke(
            app, ["ingest", "csv", str(files[name]), "--lake", str(lake_root)]
        )
        assert again.exit_code == 0, again.output
    assert min(job.returncode for job in jobs.values()) == 0  # one of them always lands
    lake = Lake(spark, str(lake_root))
    bronze = lake.read(BRONZE_TRACKS_RAW)
    per_source = {
        r["source"].rsplit("/", 1)[1]: r["count"]
        for r in bronze.groupBy("source").count().collect()
    }
    assert per_source == {"first.csv": 5, "a.csv": 7, "b.csv": 7}
    assert bronze.select("source", "source_row").distinct().count() == 19
    silver = lake.read(SILVER_TRACKS)
    assert silver.count() + lake.read(BRONZE_QUARANTINE).count() == 19
    assert silver.select("track_id").distinct().count() == silver.count()
