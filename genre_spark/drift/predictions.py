"""Scoring runs in gold.scored, and the shift of predicted genre shares between two of them.

A scoring run is one ``genre score`` of one model version: gold.scored rows
of that ``model_version`` sharing one ``scored_at`` (the timestamp is taken
once per Spark query, so every row of a run carries the same one). Rows a
later run of the same version re-scored are replaced in the current table,
so an older run is read from the gold.scored version (Delta time travel) in
which it was the newest run of its model version.

A reference ``"3"`` (or ``"@champion"``) is the newest run of that version in
the current gold.scored; ``"3@12"`` the newest run of version 3 in gold.scored
version 12. By default the current run is the model's newest one and the
baseline the run before it (found by walking gold.scored's history back).
Only counts per genre reach the driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.errors import GenreError
from genre_spark.lake.catalog import GOLD_SCORED
from genre_spark.model.registry import resolve_model

_REF = re.compile(r"^(?P<model>.+)@(?P<table_version>\d+)$")


class NoScoringRunError(GenreError):
    """No scoring run matches the reference (never scored, or the history is gone)."""


@dataclass(frozen=True)
class ScoringRun:
    """One ``genre score`` of one model version, as found in a gold.scored version."""

    model_version: str
    scored_at_us: int
    scored_at: str
    table_version: int

    def describe(self) -> str:
        return f"version {self.model_version} scored {self.scored_at} UTC (gold.scored v{self.table_version})"


def parse(text: str) -> tuple[str, int | None]:
    """``"3@12"`` -> ("3", 12); ``"@champion"`` -> ("@champion", None)."""
    match = _REF.match(text.strip())
    if match:
        return match["model"], int(match["table_version"])
    return text.strip(), None


def newest_run(
    io: stages.StageRun, model_version: str, table_version: int | None = None
) -> ScoringRun | None:
    """The newest run of ``model_version`` in gold.scored (at ``table_version``; default current).

    ``io`` is a run of a stage that reads gold.scored (``stages.DRIFT``).
    """
    version = io.version(GOLD_SCORED) if table_version is None else table_version
    row = (
        io.read(GOLD_SCORED, version)
        .where(F.col("model_version") == model_version)
        .agg(
            F.max(F.unix_micros("scored_at")).alias("us"),
            F.date_format(F.max("scored_at"), "yyyy-MM-dd HH:mm:ss").alias("shown"),
        )
        .first()
    )
    if row is None or row["us"] is None:
        return None
    return ScoringRun(model_version, int(row["us"]), str(row["shown"]), version)


def previous_run(io: stages.StageRun, run: ScoringRun, history: int) -> ScoringRun | None:
    """The run of the same model version before ``run``: searched back ``history`` versions.

    None when the version had no earlier run, or when the older table
    versions are gone (``genre vacuum``).
    """
    for version in range(run.table_version - 1, max(-1, run.table_version - 1 - history), -1):
        try:
            found = newest_run(io, run.model_version, version)
        except Exception:  # that snapshot's files were vacuumed
            return None
        if found is None:
            return None
        if found.scored_at_us < run.scored_at_us:
            return found
    return None


def find_run(io: stages.StageRun, settings: Settings, text: str) -> ScoringRun:
    """The scoring run a ``--baseline-scored`` / ``--current-scored`` reference names."""
    model, table_version = parse(text)
    version = resolve_model(settings, model).version
    found = newest_run(io, version, table_version)
    if found is None:
        at = f" in gold.scored v{table_version}" if table_version is not None else ""
        raise NoScoringRunError(f"model version {version} has no scored rows{at} ({text!r})")
    return found


def genre_counts(io: stages.StageRun, run: ScoringRun) -> dict[str, int]:
    """Tracks per predicted genre in one scoring run (one row per genre reaches the driver)."""
    rows = (
        io.read(GOLD_SCORED, run.table_version)
        .where(
            (F.col("model_version") == run.model_version)
            & (F.unix_micros("scored_at") == F.lit(run.scored_at_us))
        )
        .groupBy("predicted_genre")
        .count()
        .collect()
    )
    return {r["predicted_genre"]: int(r["count"]) for r in rows}
