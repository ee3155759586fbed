"""The report's figures: small pandas/numpy inputs in, matplotlib figures out.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas,
no pyplot state), so plotting works headless and in any thread, and each
function is a pure input -> figure step that ``save`` writes as PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from genre_spark.report.data import Projection

DPI = 110
LOSS_WORD = "loss"
QUALITY_WORDS = ("accuracy", "f1")


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def confusion_heatmap(matrix: pd.DataFrame, title: str) -> Figure:
    """Rows: true genre; columns: predicted. Colour is the row share (recall), text the count."""
    counts = matrix.to_numpy()
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(5.0, 0.6 * len(matrix) + 2)
    figure = Figure(figsize=(size + 1, size))
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(matrix.index)), matrix.index)
    ax.set_xlabel("predicted genre")
    ax.set_ylabel("true genre")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(counts):
        colour = "white" if shares[i, j] > 0.6 else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=ax, label="share of the true genre's tracks")
    return figure


def f1_by_genre(per_genre: pd.DataFrame, title: str) -> Figure:
    """Grouped bars: F1 per genre (x) for each model (one bar colour per model).

    A ``macro avg`` row, if given, is drawn last: every model's macro-F1 side by side.
    """
    table = per_genre.pivot_table(index="genre", columns="model", values="f1", aggfunc="first")
    table = table.loc[sorted(table.index, key=lambda g: (g == "macro avg", g))]
    models = list(table.columns)
    width = 0.8 / max(len(models), 1)
    figure = Figure(figsize=(max(7.0, 0.9 * len(table) + 2), 4.5))
    ax = figure.subplots()
    x = np.arange(len(table))
    for k, model in enumerate(models):
        ax.bar(
            x + (k - (len(models) - 1) / 2) * width, table[model].fillna(0.0), width, label=model
        )
    ax.set_xticks(x, table.index, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return figure


def training_curves(history: pd.DataFrame, title: str) -> Figure:
    """Losses on the left, validation accuracy / macro-F1 on the right, by epoch."""
    figure = Figure(figsize=(11, 4))
    loss_ax, quality_ax = figure.subplots(1, 2)
    for metric, rows in history.groupby("metric"):
        name = str(metric)
        if LOSS_WORD in name:
            loss_ax.plot(rows["epoch"], rows["value"], marker=".", label=name)
        elif any(word in name for word in QUALITY_WORDS):
            quality_ax.plot(rows["epoch"], rows["value"], marker=".", label=name)
    for ax, label in ((loss_ax, "loss"), (quality_ax, "score")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    figure.suptitle(title)
    return figure


def genre_baselines(baselines: pd.DataFrame, title: str) -> Figure:
    """Small multiples, one per feature: each genre's median with its interquartile range."""
    features = list(dict.fromkeys(baselines["feature"]))
    genres = sorted(baselines["genre"].unique())
    cols = min(5, len(features))
    rows = math.ceil(len(features) / cols)
    figure = Figure(figsize=(3.2 * cols, 0.28 * len(genres) * rows + 1.5 * rows))
    axes = np.atleast_1d(figure.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    y = np.arange(len(genres))
    for ax, feature in zip(axes, features, strict=False):
        table = baselines[baselines["feature"] == feature].set_index("genre").reindex(genres)
        low = (table["median"] - table["q25"]).clip(lower=0)
        high = (table["q75"] - table["median"]).clip(lower=0)
        ax.errorbar(table["median"], y, xerr=[low, high], fmt="o", ms=4, capsize=2)
        ax.set_title(feature, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, genres)
    for ax in axes[len(features) :]:
        ax.set_visible(False)
    figure.suptitle(title)
    return figure


def trends(trends_by_year: pd.DataFrame, title: str) -> Figure:
    """Tracks per year by genre (left) and each genre's share of the year (right, stacked)."""
    tracks = trends_by_year.pivot_table(
        index="year", columns="genre", values="tracks", fill_value=0
    )
    share = trends_by_year.pivot_table(index="year", columns="genre", values="share", fill_value=0)
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    for genre in tracks.columns:
        left.plot(tracks.index, tracks[genre], marker=".", label=genre)
    left.set_xlabel("year")
    left.set_ylabel("tracks")
    left.grid(alpha=0.3)
    right.stackplot(share.index, share.T.to_numpy(), labels=list(share.columns))
    right.set_xlabel("year")
    right.set_ylabel("share of the year's tracks")
    right.set_ylim(0, 1)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle(title)
    return figure


def outlier_projection(projection: Projection, title: str) -> Figure:
    """Sampled tracks on the first two principal axes; outliers as red crosses."""
    figure = Figure(figsize=(8, 6))
    ax = figure.subplots()
    inliers = ~projection.is_outlier
    for genre in sorted(set(projection.genres[inliers])):
        chosen = inliers & (projection.genres == genre)
        x, y = projection.points[chosen].T
        ax.scatter(x, y, s=6, alpha=0.5, label=genre)
    x, y = projection.points[projection.is_outlier].T
    ax.scatter(
        x,
        y,
        s=28,
        marker="x",
        color="red",
        label="outlier (DBSCAN noise)",
    )
    first, second = projection.explained
    ax.set_xlabel(f"PC1 ({first:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({second:.0%} of variance)")
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    return figure


def _threshold_bars(
    ax: Axes, names: list[str], values: np.ndarray, limit: float, label: str
) -> None:
    colours = ["#c0392b" if v > limit else "#4a7ab5" for v in values]
    ax.barh(names, values, color=colours)
    ax.axvline(limit, color="black", linestyle="--", linewidth=1, label=f"threshold {limit:g}")
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def drift_scores(features: pd.DataFrame, title: str) -> Figure:
    """PSI (left) and KS (right) per feature, flagged ones red, thresholds dashed."""
    names = list(features["name"])
    figure = Figure(figsize=(11, 0.35 * len(names) + 1.8))
    left, right = figure.subplots(1, 2, sharey=True)
    psi_limit = float(features["psi_threshold"].iloc[0])
    ks_limit = float(features["ks_threshold"].iloc[0])
    _threshold_bars(
        left, names, features["psi"].to_numpy(float), psi_limit, "population stability index"
    )
    _threshold_bars(
        right,
        names,
        features["ks"].fillna(0.0).to_numpy(float),
        ks_limit,
        "Kolmogorov–Smirnov distance",
    )
    left.invert_yaxis()  # shared y axis: once, so the largest PSI (first row) is on top
    figure.suptitle(title)
    return figure


def drift_distributions(features: pd.DataFrame, title: str) -> Figure:
    """Small multiples: each feature's share per PSI bin, training snapshot beside the current table."""
    cols = min(4, len(features))
    rows = math.ceil(len(features) / cols)
    figure = Figure(figsize=(3.4 * cols, 2.6 * rows + 0.8))
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (_, row) in zip(axes, features.iterrows(), strict=False):
        base = np.asarray(row["baseline_hist"], dtype=float)
        now = np.asarray(row["current_hist"], dtype=float)
        edges = [f"{e:.3g}" for e in row["bin_edges"]]
        labels = [f"<{edges[0]}", *[f"≥{e}" for e in edges]] if edges else ["all"]
        x = np.arange(len(base))
        ax.bar(x - 0.2, base, 0.4, label="training split")
        ax.bar(x + 0.2, now, 0.4, label="current")
        ax.set_xticks(x, labels[: len(base)], rotation=60, ha="right", fontsize=6)
        flag = " (drift)" if row["drifted"] else ""
        ax.set_title(f"{row['name']}{flag}: PSI {row['psi']:.2f}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].legend(fontsize=7)
    for ax in axes[len(features) :]:
        ax.set_visible(False)
    figure.suptitle(title)
    return figure


def genre_shares(genres: pd.DataFrame, title: str) -> Figure:
    """Predicted share of each genre in two scoring runs, side by side."""
    table = genres.sort_values("name")
    x = np.arange(len(table))
    figure = Figure(figsize=(max(7.0, 0.8 * len(table) + 2), 4.2))
    ax = figure.subplots()
    ax.bar(x - 0.2, table["baseline_share"], 0.4, label="baseline run")
    ax.bar(x + 0.2, table["current_share"], 0.4, label="current run")
    ax.set_xticks(x, table["name"], rotation=45, ha="right")
    ax.set_ylabel("share of predictions")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return figure
