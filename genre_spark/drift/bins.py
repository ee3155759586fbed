"""Binning in Spark: bin edges from a table's quantiles, and counts of any table on given edges.

Both sides of a drift comparison go through :func:`count_bins` with the same
edges, so the reference (the training split, binned once at training time)
and the current catalogue are counted by the same rule. Edges come from
Spark's ``approxQuantile`` (Greenwald–Khanna; the executors summarise, the
driver gets the quantiles); how exact those quantiles are only moves the bin
edges, never the counts, which are exact aggregations. Nothing per row is
collected: the result is one count per (feature, bin).

Two edge sets per feature:

* PSI bins: the reference's ``1/psi_bins`` quantiles (deciles by default),
  repeated values merged. Cells ``(-inf, e_0), [e_0, e_1), ..., [e_k, inf)``.
* The KS grid: the reference's ``1/ks_grid`` quantiles, each also followed by
  ``nextafter(q)`` so that every quantile value gets a cell of its own
  (``[q, nextafter(q))`` holds ``q`` alone); atoms such as ``mode`` or
  ``instrumentalness = 0`` then stay exact (see ``stats.ks_bounds``).

Missing values (null or NaN) are counted apart, per feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

PSI = "psi"
GRID = "grid"


@dataclass(frozen=True)
class FeatureBins:
    """One feature of one table on fixed edges: value counts per cell, and missing values."""

    feature: str
    rows: int
    missing: int
    psi_edges: tuple[float, ...]
    psi_counts: tuple[int, ...]
    grid_edges: tuple[float, ...]
    grid_counts: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "missing": self.missing,
            "psi_edges": list(self.psi_edges),
            "psi_counts": list(self.psi_counts),
            "grid_edges": list(self.grid_edges),
            "grid_counts": list(self.grid_counts),
        }

    @classmethod
    def from_json(cls, feature: str, data: Mapping[str, Any]) -> FeatureBins:
        return cls(
            feature,
            int(data["rows"]),
            int(data["missing"]),
            tuple(float(v) for v in data["psi_edges"]),
            tuple(int(v) for v in data["psi_counts"]),
            tuple(float(v) for v in data["grid_edges"]),
            tuple(int(v) for v in data["grid_counts"]),
        )


def _value(feature: str) -> Column:
    """The feature as a double; NaN counts as missing, like null."""
    column = F.col(feature).cast("double")
    return F.when(F.isnan(column), F.lit(None).cast("double")).otherwise(column)


def psi_edges(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Distinct quantile values, in order: the PSI bin edges."""
    return tuple(sorted({float(q) for q in quantiles if math.isfinite(q)}))


def grid_edges(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Each distinct quantile value followed by ``nextafter`` it: a cell of its own per value."""
    edges: set[float] = set()
    for q in psi_edges(quantiles):
        edges.update((q, float(np.nextafter(q, np.inf))))
    return tuple(sorted(edges))


def quantile_edges(
    df: DataFrame, features: Sequence[str], psi_bins: int, ks_grid: int
) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """``{feature: (psi edges, grid edges)}`` from one ``approxQuantile`` pass over ``df``."""
    psi_p = [i / psi_bins for i in range(1, psi_bins)]
    grid_p = [i / ks_grid for i in range(1, ks_grid)]
    probabilities = sorted({round(p, 12) for p in psi_p + grid_p})
    position = {p: i for i, p in enumerate(probabilities)}
    values = df.select(*[_value(f).alias(f) for f in features])
    found = values.approxQuantile(list(features), probabilities, 1.0 / (4 * ks_grid))
    edges: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    for feature, quantiles in zip(features, found, strict=True):
        if not quantiles:  # no value at all: one placeholder edge (Bucketizer needs one)
            edges[feature] = ((0.0,), grid_edges([0.0]))
            continue
        at = [quantiles[position[round(p, 12)]] for p in psi_p]
        grid = [quantiles[position[round(p, 12)]] for p in grid_p]
        edges[feature] = (psi_edges(at), grid_edges(grid))
    return edges


def count_bins(
    df: DataFrame, edges: Mapping[str, tuple[Sequence[float], Sequence[float]]]
) -> dict[str, FeatureBins]:
    """Counts of ``df``'s rows per cell of each feature's PSI and grid edges: one Spark job.

    Bucketizer (binary search in the JVM) gives each value its cell; one
    ``groupBy`` over (feature, kind, cell) counts them. A null cell is a
    missing value.
    """
    from pyspark.ml.feature import Bucketizer

    features = list(edges)
    inputs = df.select(*[_value(f).alias(f"v{i}") for i, f in enumerate(features)])
    splits, outputs, keys = [], [], []
    for i, feature in enumerate(features):
        for kind, cut in zip((PSI, GRID), edges[feature], strict=True):
            splits.append([-math.inf, *cut, math.inf])
            outputs.append(f"{kind}{i}")
            keys.append((feature, kind))
    bucketed = Bucketizer(
        inputCols=[f"v{i}" for i, _ in enumerate(features) for _ in (PSI, GRID)],
        outputCols=outputs,
        splitsArray=splits,
        handleInvalid="keep",
    ).transform(inputs)
    cells = F.explode(
        F.array(
            *[
                F.struct(F.lit(j).alias("key"), F.col(o).alias("cell"))
                for j, o in enumerate(outputs)
            ]
        )
    )
    counted = bucketed.select(cells.alias("c")).groupBy("c.key", "c.cell").count().collect()
    counts = [np.zeros(len(s) - 1, dtype=np.int64) for s in splits]
    missing = [0] * len(outputs)
    for row in counted:
        if row["cell"] is None:
            missing[row["key"]] += row["count"]
        else:
            counts[row["key"]][int(row["cell"])] += row["count"]
    result = {}
    for i, feature in enumerate(features):
        p, g = 2 * i, 2 * i + 1
        result[feature] = FeatureBins(
            feature=feature,
            rows=int(counts[p].sum()) + missing[p],
            missing=missing[p],
            psi_edges=tuple(edges[feature][0]),
            psi_counts=tuple(int(c) for c in counts[p]),
            grid_edges=tuple(edges[feature][1]),
            grid_counts=tuple(int(c) for c in counts[g]),
        )
    return result


def profile(
    df: DataFrame, features: Sequence[str], psi_bins: int, ks_grid: int
) -> dict[str, FeatureBins]:
    """Edges from ``df``'s own quantiles, and ``df`` counted on them (the training reference)."""
    return count_bins(df, quantile_edges(df, features, psi_bins, ks_grid))
