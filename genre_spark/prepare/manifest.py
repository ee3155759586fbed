"""gold.prepare_manifest: whether the last prepare run finished, and what it wrote.

Delta commits one table at a time and prepare writes seven, so a run that
stops part-way (killed, out of memory, a bad setting found late) leaves some
tables new and some old. Read together, they disagree: a model trained on the
old gold.features would be registered with the new gold.normalizer and score
every track on a scaling it never saw. The manifest makes that visible: prepare
marks it ``running`` before its first write and ``complete``, with the version
of every table it wrote, after its last. Stages that read prepare's tables call
``require_complete`` first and refuse a mixed set with a clear message; running
``genre prepare`` again repairs it.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from genre_spark.errors import GenreError
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_FEATURES,
    GOLD_GENRE_BASELINES,
    GOLD_GENRE_MATCHES,
    GOLD_GENRE_PLAYLISTS,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_PREPARE_MANIFEST,
    GOLD_TRENDS_BY_YEAR,
    spec,
)

MANIFEST = GOLD_PREPARE_MANIFEST

#: The tables prepare writes, in the order it writes them.
TABLES: tuple[str, ...] = (
    GOLD_NORMALIZER,
    GOLD_FEATURES,
    GOLD_OUTLIER_PARAMS,
    GOLD_GENRE_BASELINES,
    GOLD_GENRE_MATCHES,
    GOLD_GENRE_PLAYLISTS,
    GOLD_TRENDS_BY_YEAR,
)

RUNNING = "running"
COMPLETE = "complete"


class IncompletePrepareError(GenreError):
    """Prepare's tables are not all from one finished run."""


def _manifest(spark: SparkSession, versions: Mapping[str, int | None], state: str) -> DataFrame:
    rows = [(name, versions.get(name), state) for name in TABLES]
    schema = spec(MANIFEST).stamped_schema()
    return spark.createDataFrame(rows, schema).withColumn("prepared_at", F.current_timestamp())


def mark_running(lake: Lake) -> None:
    """Before prepare's first write: until ``mark_complete``, its tables may be a mix."""
    lake.write(_manifest(lake.spark, {}, RUNNING), MANIFEST)


def mark_complete(lake: Lake, versions: dict[str, int]) -> None:
    """After prepare's last write: ``versions`` (each table's commit) belong together."""
    missing = [name for name in TABLES if name not in versions]
    if missing:
        raise ValueError(f"a complete prepare writes every table; no version for {missing}")
    lake.write(_manifest(lake.spark, versions, COMPLETE), MANIFEST)


def require_complete(lake: Lake) -> None:
    """Raise IncompletePrepareError unless prepare's tables are those its last finished run wrote.

    A lake without a manifest has never had a prepare run start (its gold
    tables, if any, were written some other way): there is nothing to check.
    """
    if not lake.exists(MANIFEST):
        return
    rows = lake.read(MANIFEST).collect()  # one row per prepare table: fixed size
    again = "run `genre prepare` again to rewrite them together"
    if any(r.state != COMPLETE for r in rows):
        started = f"{rows[0].prepared_at:%Y-%m-%d %H:%M:%S}"
        raise IncompletePrepareError(
            f"the last `genre prepare` (started {started} UTC) did not finish, or is still "
            f"running: the gold tables may mix two runs; {again}"
        )
    current = {r.table: lake.version(r.table) for r in rows}
    changed = [
        f"{r.table} (version {current[r.table]}, prepare wrote {r.version})"
        for r in rows
        if current[r.table] != r.version
    ]
    if changed:
        raise IncompletePrepareError(
            f"{', '.join(changed)} changed after the last complete `genre prepare`, so the gold "
            f"tables no longer belong together; {again}"
        )
