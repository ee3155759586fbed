"""``genre promote``: move the champion alias to a challenger that is at least as good.

The gate reads validation macro-F1 only (each version's MLflow run metric,
the number training chose its epoch by; the test split stays for
``genre evaluate``): the candidate is promoted when its score is at least the
champion's plus ``promote.margin``. With no champion yet, the candidate
becomes the first. ``--force`` promotes a candidate the gate refuses, and says
so wherever the promotion is recorded.

Every decision (promoted, forced or refused) is recorded three ways: a row in
gold.promotions, model-version tags (``genre_spark.promotion``,
``genre_spark.promotion_reason``, ``genre_spark.promoted_at``) and, for a
promotion, the version's description, which the MLflow UI shows beside the
alias. The same decision made again replaces its row (so re-running is
idempotent); gold.models' ``aliases`` column follows the registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_PROMOTIONS, spec
from genre_spark.model.registry import (
    CHALLENGER,
    CHAMPION,
    aliases,
    client,
    resolve_model,
    set_alias,
    sync_aliases,
    use_tracking,
)

log = logging.getLogger(__name__)

PROMOTED = "promoted"
FORCED = "forced"
REFUSED = "refused"
UNCHANGED = "unchanged"
OUTCOME_TAG = "genre_spark.promotion"
REASON_TAG = "genre_spark.promotion_reason"
WHEN_TAG = "genre_spark.promoted_at"
#: Scores this close count as equal (both come from float32 confusion counts).
TOLERANCE = 1e-12


@dataclass(frozen=True)
class Decision:
    """What ``promote`` decided, with the numbers it decided on."""

    version: str
    previous_champion: str | None
    candidate_f1: float | None
    champion_f1: float | None
    margin: float
    outcome: str
    reason: str

    @property
    def promoted(self) -> bool:
        return self.outcome in (PROMOTED, FORCED)

    def summary(self) -> str:
        verb = {
            PROMOTED: "promoted to @champion",
            FORCED: "promoted to @champion with --force",
            REFUSED: "not promoted",
            UNCHANGED: "unchanged",
        }[self.outcome]
        return f"version {self.version} {verb}: {self.reason}"


def _f1(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def decide(
    candidate_f1: float | None,
    champion_f1: float | None,
    margin: float,
    force: bool,
    has_champion: bool = True,
) -> tuple[str, str]:
    """The gate: ``(outcome, reason)`` for a candidate against the champion."""
    if not has_champion:
        return PROMOTED, "no champion yet: the first one"
    if candidate_f1 is None or champion_f1 is None:
        reason = "validation macro-F1 unknown for the candidate or the champion"
        return (FORCED, reason) if force else (REFUSED, reason)
    compared = (
        f"val macro-F1 {_f1(candidate_f1)} vs champion {_f1(champion_f1)} + margin {margin:g}"
    )
    if candidate_f1 - champion_f1 >= margin - TOLERANCE:
        return PROMOTED, compared
    return (FORCED, f"{compared} (below)") if force else (REFUSED, f"{compared} (below)")


def val_macro_f1(settings: Settings, version: str) -> float | None:
    """The version's validation macro-F1 from its MLflow run (None if the run lacks it)."""
    store = client(settings)
    run_id = store.get_model_version(settings.mlflow.model_name, version).run_id
    if not run_id:
        return None
    value = store.get_run(run_id).data.metrics.get("val_macro_f1")
    return None if value is None else float(value)


def _record_in_registry(settings: Settings, decision: Decision, when: str) -> None:
    store, name = client(settings), settings.mlflow.model_name
    store.set_model_version_tag(name, decision.version, OUTCOME_TAG, decision.outcome)
    store.set_model_version_tag(name, decision.version, REASON_TAG, decision.reason)
    if decision.promoted:
        store.set_model_version_tag(name, decision.version, WHEN_TAG, when)
        previous = decision.previous_champion or "none"
        forced = " with --force" if decision.outcome == FORCED else ""
        store.update_model_version(
            name,
            decision.version,
            description=f"@champion since {when}{forced} (previous champion: {previous}); "
            f"{decision.reason}",
        )


def _record_in_lake(lake: Lake, decision: Decision) -> None:
    """Replace the same decision's row (same candidate, previous champion, outcome), add the rest."""
    row = (
        decision.version,
        decision.previous_champion,
        decision.candidate_f1,
        decision.champion_f1,
        decision.margin,
        decision.outcome,
        decision.reason,
    )
    schema = spec(GOLD_PROMOTIONS).stamped_schema()
    new = lake.spark.createDataFrame([row], schema).withColumn("decided_at", F.current_timestamp())
    with stages.run(lake, stages.PROMOTE) as io:
        if io.exists(GOLD_PROMOTIONS):
            same = (
                (F.col("version") == decision.version)
                & F.col("previous_champion").eqNullSafe(F.lit(decision.previous_champion))
                & (F.col("outcome") == decision.outcome)
            )
            new = io.read(GOLD_PROMOTIONS).where(~same).unionByName(new)
        io.write(new, GOLD_PROMOTIONS)


def promote(
    lake: Lake,
    settings: Settings,
    version: str | None = None,
    force: bool = False,
    margin: float | None = None,
) -> Decision:
    """Gate ``version`` (default: @challenger) against @champion; move the alias if it passes.

    Returns the decision; a refused one is recorded too (the caller decides
    whether that is an error: the CLI exits 1, the pipeline goes on).
    """
    use_tracking(settings)
    margin = settings.promote.margin if margin is None else margin
    candidate = resolve_model(settings, version or f"@{CHALLENGER}").version
    champion = aliases(settings).get(CHAMPION)
    candidate_f1 = val_macro_f1(settings, candidate)
    if champion == candidate:
        return Decision(
            candidate,
            champion,
            candidate_f1,
            candidate_f1,
            margin,
            UNCHANGED,
            "already the champion",
        )
    champion_f1 = val_macro_f1(settings, champion) if champion else None
    outcome, reason = decide(candidate_f1, champion_f1, margin, force, champion is not None)
    decision = Decision(candidate, champion, candidate_f1, champion_f1, margin, outcome, reason)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if decision.promoted:
        set_alias(settings, CHAMPION, candidate)
        if aliases(settings).get(CHALLENGER) == candidate:
            set_alias(settings, CHALLENGER, None)
    _record_in_registry(settings, decision, when)
    _record_in_lake(lake, decision)
    if decision.promoted:
        sync_aliases(lake, settings)
    log.info(decision.summary())
    return decision
