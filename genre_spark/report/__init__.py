"""The HTML report of one model version: ``<reports>/<version>/index.html`` plus PNGs beside it.

Sections: the metrics table (every model on every split, and the CNN per
genre), the confusion matrix, per-genre F1 of the CNN against the reference
models (logistic regression, random forest, XGBoost), the features the model
reads (its fitted transform: kinds, fill values, missing indicators), the
champion against the challenger on the same tracks, training curves from the
model's MLflow run, genre baselines, trends by year, outliers in a 2-D
projection, and the newest drift comparison (``genre drift``). Each section reads one small
aggregate or a bounded sample (``report.data``); one whose input is missing
(a stage not run yet, no reference models) shows a note saying what to run
instead of failing the whole report.

Example::

    genre report                          # @champion -> reports/<its version>/index.html
    genre report --model-version 3        # -> reports/3/index.html
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.metrics import ACCURACY, AVERAGE_ROWS, MACRO, WEIGHTED
from genre_spark.model.registry import CHALLENGER, CHAMPION, ResolvedModel, aliases, resolve_model
from genre_spark.report import data, lifecycle, plots
from genre_spark.report.data import MissingInputError, ModelInfo
from genre_spark.report.html import Section, page, table

__all__ = ["MissingInputError", "ModelInfo", "run"]

SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
Build = Callable[[], tuple[Figure, str]]


def _figure_section(folder: Path, name: str, title: str, caption: str, build: Build) -> Section:
    """Render one figure to ``folder/name``; a missing input becomes the section's note."""
    try:
        figure, detail = build()
    except MissingInputError as exc:
        return Section(title, caption, note=str(exc))
    plots.save(figure, folder / name)
    return Section(title, f"{caption} {detail}".strip(), image=name)


def _overview(evaluation: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, split): accuracy, macro precision/recall/F1, weighted F1, support."""
    macro = evaluation[evaluation["genre"] == MACRO]
    weighted = evaluation[evaluation["genre"] == WEIGHTED][["model", "split", "f1"]]
    frame = macro.merge(weighted, on=["model", "split"], suffixes=("", "_weighted"))
    frame = frame.assign(order=frame["split"].map(SPLIT_ORDER).fillna(9))
    frame = frame.sort_values(["order", "model"])
    return frame[
        ["model", "split", "accuracy", "precision", "recall", "f1", "f1_weighted", "support"]
    ].rename(
        columns={
            "precision": "macro precision",
            "recall": "macro recall",
            "f1": "macro F1",
            "f1_weighted": "weighted F1",
        }
    )


def _per_genre(evaluation: pd.DataFrame, split: str) -> pd.DataFrame:
    rows = evaluation[(evaluation["split"] == split) & ~evaluation["genre"].isin(AVERAGE_ROWS)]
    return rows.sort_values(["model", "genre"])


def _metrics_section(
    model: ModelInfo, evaluation: pd.DataFrame | None, note: str | None, split: str
) -> Section:
    title = "Metrics"
    caption = (
        "Computed in Spark from gold.confusion; equal to scikit-learn's accuracy and "
        "precision/recall/F1 (zero_division=0). Support is the number of tracks."
    )
    if evaluation is None:
        return Section(title, caption, note=note)
    cnn = _per_genre(evaluation, split)
    cnn = cnn[cnn["model"] == model.name][["genre", "precision", "recall", "f1", "support"]]
    return Section(
        title,
        caption,
        tables=[
            table(_overview(evaluation), "Every model on every split"),
            table(cnn, f"{model.name} per genre, {split} split"),
        ],
    )


def _f1_section(
    folder: Path, model: ModelInfo, evaluation: pd.DataFrame | None, note: str | None, split: str
) -> Section:
    def build() -> tuple[Figure, str]:
        if evaluation is None:
            raise MissingInputError(note or "gold.evaluation not found")
        rows = evaluation[
            (evaluation["split"] == split) & ~evaluation["genre"].isin([WEIGHTED, ACCURACY])
        ]
        figure = plots.f1_by_genre(rows, f"F1 per genre and macro-F1, {split} split")
        return figure, f"Models: {', '.join(sorted(rows['model'].unique()))}."

    section = _figure_section(
        folder,
        "f1_by_genre.png",
        "Per-genre F1: CNN vs reference models",
        "F1 per genre, and macro-F1 (the last group), of the CNN and of the reference models "
        "(MLlib, XGBoost on Spark) on the same tracks.",
        build,
    )
    if evaluation is not None and (evaluation["model"] == model.name).all():
        section.note = (
            "No reference model in gold.evaluation (gold.reference_predictions was missing "
            "when `genre evaluate` ran): the CNN is shown alone."
        )
    return section


def _features_section(settings: Settings, model: ModelInfo) -> Section:
    title = "Features"
    caption = (
        "What the model reads, as fitted on the train split by `genre prepare` and stored in "
        "the registered model: a missing value gets the fill value, and a feature that had "
        "missing values in train also gets a missing-indicator input."
    )
    try:
        frame = data.model_features(settings, model)
    except MissingInputError as exc:
        return Section(title, caption, note=str(exc))
    return Section(title, caption, tables=[table(frame, f"{model.name}: {len(frame)} features")])


def _sections(
    io: stages.StageRun, settings: Settings, model: ModelInfo, folder: Path
) -> list[Section]:
    split = settings.report.split
    try:
        evaluation, note = data.evaluation(io, model), None
    except MissingInputError as exc:
        evaluation, note = None, str(exc)

    def confusion() -> tuple[Figure, str]:
        matrix = data.confusion_matrix(io, model, split)
        figure = plots.confusion_heatmap(matrix, f"{model.name}, {split} split")
        return figure, f"{int(matrix.to_numpy().sum())} tracks."

    def curves() -> tuple[Figure, str]:
        history = data.training_history(settings, model.run_id)
        return plots.training_curves(
            history, f"training of {model.name}"
        ), f"MLflow run {model.run_id}."

    def baselines() -> tuple[Figure, str]:
        return plots.genre_baselines(
            data.baselines(io, model.features), "genre baselines (train split)"
        ), ""

    def trends() -> tuple[Figure, str]:
        return plots.trends(data.trends(io), "trends by release year"), ""

    def outliers() -> tuple[Figure, str]:
        projection = data.projection(io, settings.report.sample_size)
        shown = int(projection.is_outlier.sum())
        detail = (
            f"{len(projection.points)} of {projection.total} tracks sampled; "
            f"{shown} of {projection.outliers} outliers shown."
        )
        return plots.outlier_projection(
            projection, "gold.features, first two principal axes"
        ), detail

    return [
        _metrics_section(model, evaluation, note, split),
        _figure_section(
            folder,
            "confusion.png",
            f"Confusion matrix ({split} split)",
            "Rows are true genres, columns predicted ones; colour is the share of the row, "
            "numbers are track counts.",
            confusion,
        ),
        _f1_section(folder, model, evaluation, note, split),
        _features_section(settings, model),
        lifecycle.champion_section(io, settings, model, split),
        _figure_section(
            folder,
            "training.png",
            "Training curves",
            "Per-epoch loss (train and validation) and validation accuracy / macro-F1, "
            "from the model's MLflow run.",
            curves,
        ),
        _figure_section(
            folder,
            "baselines.png",
            "Genre baselines",
            "Per feature (raw units), each genre's median and interquartile range "
            "(gold.genre_baselines).",
            baselines,
        ),
        _figure_section(
            folder,
            "trends.png",
            "Trends by year",
            "Tracks per release year and each genre's share of the year (gold.trends_by_year).",
            trends,
        ),
        _figure_section(
            folder,
            "outliers.png",
            "Outliers in 2-D",
            "A bounded sample of gold.features (scaled vectors) projected on its first two "
            "principal axes; DBSCAN outliers (is_outlier) as red crosses, sampled apart so "
            "rare outliers still show.",
            outliers,
        ),
        *lifecycle.drift_sections(io, model, folder),
    ]


def _facts(model: ModelInfo, chosen: ResolvedModel, settings: Settings) -> dict[str, str]:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    found = aliases(settings)
    own = ", ".join(f"@{a}" for a, v in sorted(found.items()) if v == model.version)
    version = f"{model.version} ({own})" if own else model.version
    return {
        "model version": f"{version}; {chosen.chosen_by}" if chosen.fallback else version,
        "champion / challenger": f"{found.get(CHAMPION, 'none')} / {found.get(CHALLENGER, 'none')}",
        "registered": str(model.created_at),
        "validation accuracy / macro-F1": f"{number(model.val_accuracy)} / {number(model.val_macro_f1)}",
        "MLflow run": model.run_id or "n/a",
        "parameters": json.dumps(model.params, sort_keys=True),
        "genres": ", ".join(model.genres),
        "features": ", ".join(model.features),
        "lake": str(settings.lake),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run(lake: Lake, settings: Settings, model_version: str | None = None) -> Path:
    """Write ``<settings.reports>/<version>/index.html`` (and its PNGs); returns the page's path.

    ``model_version`` is any reference ``registry.resolve_model`` takes; None
    reports on the champion (the newest version while there is none).
    """
    with stages.run(lake, stages.REPORT) as io:
        chosen = resolve_model(settings, model_version)
        model = data.model_info(io, chosen.version)
        folder = Path(settings.reports) / model.version
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        sections = _sections(io, settings, model, folder)
    document = page(
        f"genre-spark report: model {model.name}", _facts(model, chosen, settings), sections
    )
    target = folder / "index.html"
    partial = folder / ".index.html.tmp"
    partial.write_text(document, encoding="utf-8")
    os.replace(partial, target)
    return target
