"""The whole pipeline as one job: ingest -> prepare -> train (+ references) -> promote -> score -> evaluate -> report.

Every stage reads and writes lake tables through its own ``run``; this module
only wires them in order. The trained version becomes @challenger and is
promoted only if the gate lets it (a worse retrain leaves the champion in
place); scoring covers the champion and a remaining challenger, so the report
on the champion can compare the two on the same tracks. Nothing is skipped,
and each stage is re-runnable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from genre_spark.config import Settings
from genre_spark.lake import Lake


@dataclass
class PipelineState:
    """What stages hand on to later stages."""

    model_version: str | None = None
    mlflow_run_id: str | None = None
    report: Path | None = None


@dataclass(frozen=True)
class StageResult:
    name: str
    seconds: float
    summary: str


@dataclass
class PipelineResult:
    stages: list[StageResult] = field(default_factory=list)
    state: PipelineState = field(default_factory=PipelineState)


StageFn = Callable[[Lake, Settings, PipelineState], str]


def _ingest(csv_path: str | None) -> StageFn:
    def ingest(lake: Lake, settings: Settings, state: PipelineState) -> str:
        if csv_path:
            from genre_spark.ingest.csv import run_csv

            report = run_csv(lake, settings, csv_path)
            summary = report.summary
        else:
            from genre_spark.ingest import synthetic

            summary = synthetic.run(lake, settings)
        return (
            f"{summary.rows_in:,} rows in -> silver {summary.silver_rows:,} + "
            f"quarantine {summary.quarantined:,}"
        )

    return ingest


def _prepare(lake: Lake, settings: Settings, state: PipelineState) -> str:
    from genre_spark.prepare.run import run

    summary = run(lake, settings)
    return (
        f"{summary.tracks:,} tracks, {summary.n_outliers:,} DBSCAN outliers (eps {summary.eps:.3f}); "
        f"features: {', '.join(summary.features)} ({summary.inputs} model inputs)"
    )


def _train(lake: Lake, settings: Settings, state: PipelineState) -> str:
    from genre_spark.model.train import run

    outcome = run(lake, settings)
    state.model_version, state.mlflow_run_id = outcome.version, outcome.run_id
    metrics = outcome.result.metrics
    reused = " (identical re-train: existing version re-used)" if outcome.reused else ""
    return (
        f"model version {outcome.version}{reused}: val macro-F1 {metrics['val_macro_f1']:.4f}, "
        f"val accuracy {metrics['val_accuracy']:.4f}"
    )


def _references(lake: Lake, settings: Settings, state: PipelineState) -> str:
    from genre_spark.model.reference import run

    outcome = run(lake, settings)
    scores = (f"{name} {m['val_macro_f1']:.4f}" for name, m in outcome.metrics.items())
    return "val macro-F1: " + ", ".join(scores)


def _promote(lake: Lake, settings: Settings, state: PipelineState) -> str:
    from genre_spark.model.promote import promote
    from genre_spark.model.registry import CHALLENGER, aliases

    if CHALLENGER not in aliases(settings):
        return "no @challenger (the trained version is the champion)"
    return promote(lake, settings).summary()


def _score(lake: Lake, settings: Settings, state: PipelineState) -> str:
    from genre_spark.model.registry import CHALLENGER, CHAMPION, aliases, resolve_model
    from genre_spark.score import run

    champion = resolve_model(settings).version
    challenger = aliases(settings).get(CHALLENGER)
    state.model_version = champion
    done = []
    for version in dict.fromkeys(v for v in (champion, challenger) if v):
        result = run(lake, settings, model_version=version)
        role = CHAMPION if version == champion else CHALLENGER
        done.append(f"{result.scored:,} tracks with version {version} (@{role})")
    return "scored " + ", ".join(done)


def _evaluate(lake: Lake, settings: Settings, state: PipelineState) -> str:
    from genre_spark.evaluate import run

    result = run(lake)
    return f"models evaluated: {', '.join(result.models)}"


def _report(lake: Lake, settings: Settings, state: PipelineState) -> str:
    from genre_spark.report import run

    state.report = run(lake, settings, model_version=state.model_version)
    return str(state.report)


def stage_functions(csv_path: str | None = None) -> dict[str, StageFn]:
    return {
        "ingest": _ingest(csv_path),
        "prepare": _prepare,
        "train": _train,
        "references": _references,
        "promote": _promote,
        "score": _score,
        "evaluate": _evaluate,
        "report": _report,
    }


def run_pipeline(
    lake: Lake,
    settings: Settings,
    csv_path: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_done: Callable[[StageResult], None] | None = None,
) -> PipelineResult:
    """Run every stage in order; a failing stage stops the pipeline with its own error."""
    result = PipelineResult()
    for name, fn in stage_functions(csv_path).items():
        if on_stage:
            on_stage(name)
        start = time.perf_counter()
        summary = fn(lake, settings, result.state)
        done = StageResult(name, time.perf_counter() - start, summary)
        result.stages.append(done)
        if on_done:
            on_done(done)
    return result
