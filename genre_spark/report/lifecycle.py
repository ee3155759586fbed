"""The report's model-lifecycle sections: champion against challenger, and drift.

Kept apart from the per-model sections in ``report/__init__.py``: these read
the registry's aliases and gold.drift, and describe where the model stands
among versions and catalogues rather than how it was trained.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.drift.run import ALL_GENRES, FEATURE, PREDICTION
from genre_spark.model.registry import CHALLENGER, CHAMPION, aliases
from genre_spark.report import data, plots
from genre_spark.report.data import MissingInputError, ModelInfo
from genre_spark.report.html import Section, table

#: Histograms shown when no feature is flagged: the ones with the largest PSI.
TOP_SHOWN = 4


def _figure(folder: Path, name: str, build: Callable[[], Figure]) -> str:
    plots.save(build(), folder / name)
    return name


def _registry_table(io: stages.StageRun, found: dict[str, str]) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    for alias in (CHAMPION, CHALLENGER):
        version = found.get(alias)
        if version is None:
            rows.append({"alias": f"@{alias}", "version": "none"})
            continue
        info = data.model_info(io, version)
        rows.append(
            {
                "alias": f"@{alias}",
                "version": version,
                "val macro-F1": info.val_macro_f1,
                "val accuracy": info.val_accuracy,
                "registered": str(info.created_at),
            }
        )
    return pd.DataFrame(rows)


def champion_section(
    io: stages.StageRun, settings: Settings, model: ModelInfo, split: str
) -> Section:
    """Which version is champion, which challenger, and both on the same tracks."""
    title = "Champion and challenger"
    found = aliases(settings)
    champion, challenger = found.get(CHAMPION), found.get(CHALLENGER)
    caption = (
        f"Registry aliases of {settings.mlflow.model_name}: `genre score`, `evaluate` and `report` "
        f"use @champion; `genre promote` moves it to @challenger when the challenger's "
        f"validation macro-F1 is at least the champion's (+ promote.margin {settings.promote.margin:g})."
    )
    tables = [table(_registry_table(io, found), "Registry aliases")]
    note = None if champion else "No @champion yet: run `genre promote` to promote one."
    compared = list(dict.fromkeys(v for v in (champion, challenger, model.version) if v))
    if len(compared) > 1:
        try:
            frame = data.head_to_head(io, compared, split)
            tables.append(table(frame, f"{' vs '.join(compared)} on the same {split}-split tracks"))
        except MissingInputError as exc:
            note = str(exc)
    else:
        caption += " No other version to compare with."
    return Section(title, caption, tables=tables, note=note)


def _feature_section(folder: Path, features: pd.DataFrame) -> Section:
    first = features.iloc[0]
    flagged = list(features.loc[features["drifted"].astype(bool), "name"])
    caption = (
        f"{first['current']} against {first['baseline']} of model version "
        f"{first['model_version']}, over the values present: PSI in the training split's "
        f"quantile bins, Kolmogorov–Smirnov distance on a grid of its quantiles (the exact value "
        f"lies between ks and ks_upper); beside them the share of missing values. Thresholds: "
        f"PSI {first['psi_threshold']:g}, KS {first['ks_threshold']:g}, missing share "
        f"{first['missing_threshold']:g}."
    )
    image = _figure(folder, "drift.png", lambda: plots.drift_scores(features, "drift per feature"))
    shown = features[
        ["name", "psi", "ks", "ks_upper", "baseline_missing", "current_missing", "drifted"]
    ].rename(columns={"name": "feature"})
    note = f"Drift flagged: {', '.join(flagged)}." if flagged else None
    return Section(
        "Drift against the training snapshot",
        caption,
        image=image,
        tables=[table(shown, "gold.drift, newest comparison")],
        note=note,
    )


def _distribution_section(folder: Path, features: pd.DataFrame) -> Section:
    flagged = features[features["drifted"].astype(bool)]
    chosen = flagged if not flagged.empty else features.nlargest(TOP_SHOWN, "psi")
    which = "flagged features" if not flagged.empty else f"the {len(chosen)} largest PSI"
    image = _figure(
        folder,
        "drift_distributions.png",
        lambda: plots.drift_distributions(chosen, f"share per bin, {which}"),
    )
    return Section(
        "Drift: distributions",
        "Share of non-missing values per PSI bin (edges at the training split's quantiles).",
        image=image,
    )


def _prediction_section(folder: Path, rows: pd.DataFrame) -> Section:
    overall = rows[rows["name"] == ALL_GENRES].iloc[0]
    genres = rows[rows["name"] != ALL_GENRES]
    image = _figure(
        folder, "genre_shares.png", lambda: plots.genre_shares(genres, "predicted genre shares")
    )
    caption = (
        f"Baseline: {overall['baseline']}; current: {overall['current']}. PSI over genres "
        f"{overall['psi']:.3f} (threshold {overall['psi_threshold']:g})."
    )
    note = "Predicted genre shares drifted." if overall["drifted"] else None
    return Section("Drift: predicted genre shares", caption, image=image, note=note)


def drift_sections(io: stages.StageRun, model: ModelInfo, folder: Path) -> list[Section]:
    """The newest gold.drift comparison against this version: scores, distributions, predictions."""
    try:
        frame = data.drift(io, model.version)
    except MissingInputError as exc:
        return [Section("Drift against the training snapshot", "", note=str(exc))]
    sections = []
    features = frame[frame["kind"] == FEATURE].sort_values("psi", ascending=False)
    if not features.empty:
        sections += [_feature_section(folder, features), _distribution_section(folder, features)]
    predictions = frame[frame["kind"] == PREDICTION]
    if not predictions.empty:
        sections.append(_prediction_section(folder, predictions))
    return sections
