"""gold.prepare_manifest: whether the last prepare run finished, and what it wrote.

Delta commits one table at a time and prepare writes seven, so a run that
stops part-way (killed, out of memory, a bad setting found late) leaves some
tables new and some old. Read together, they disagree: a model trained on the
old gold.features would be registered with the new gold.normalizer and score
every track on a scaling it never saw. The manifest makes that visible: prepare
marks it ``running`` before its first write and ``complete``, with the version
of every table it wrote, after its last. Which tables those are is prepare's
stage declaration (``stages.PREPARE.outputs``); the stage runner marks the
manifest around prepare's writes, and calls ``require_complete`` before any
stage reads one of them, so a mixed set is refused with a clear message;
running ``genre prepare`` again repairs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from genre_spark.errors import GenreError
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_PREPARE_MANIFEST, spec

RUNNING = "running"
COMPLETE = "complete"


class IncompletePrepareError(GenreError):
    """Prepare's tables are not all from one finished run."""


def _manifest(
    spark: SparkSession, tables: Sequence[str], versions: Mapping[str, int], state: str
) -> DataFrame:
    rows = [(name, versions.get(name), state) for name in tables]
    schema = spec(GOLD_PREPARE_MANIFEST).stamped_schema()
    return spark.createDataFrame(rows, schema).withColumn("prepared_at", F.current_timestamp())


def mark_running(lake: Lake, tables: Sequence[str]) -> None:
    """Before prepare's first write of ``tables``: until ``mark_complete``, they may be a mix."""
    lake.write(_manifest(lake.spark, tables, {}, RUNNING), GOLD_PREPARE_MANIFEST)


def mark_complete(lake: Lake, tables: Sequence[str], versions: Mapping[str, int]) -> None:
    """After prepare's last write: ``versions`` (each of ``tables``' commits) belong together."""
    missing = [name for name in tables if name not in versions]
    if missing:
        raise ValueError(f"a complete prepare writes every table; no version for {missing}")
    lake.write(_manifest(lake.spark, tables, versions, COMPLETE), GOLD_PREPARE_MANIFEST)


def require_complete(lake: Lake) -> None:
    """Raise IncompletePrepareError unless prepare's tables are those its last finished run wrote.

    A lake without a manifest has never had a prepare run start (its gold
    tables, if any, were written some other way): there is nothing to check.
    """
    if not lake.exists(GOLD_PREPARE_MANIFEST):
        return
    rows = lake.read(GOLD_PREPARE_MANIFEST).collect()  # one row per prepare table: fixed size
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
