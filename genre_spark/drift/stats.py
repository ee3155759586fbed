"""Drift statistics over binned counts: population stability index and Kolmogorov–Smirnov bounds.

Pure numpy over small count vectors (a few thousand numbers at most): Spark
counts the rows into bins (``bins.py``), and everything here works on those
counts alone, so it is the same whether the catalogue has a thousand tracks
or a billion.

Bins are Bucketizer cells ``[b_i, b_{i+1})``. A cumulative count over the
first ``i`` cells is the empirical ``P(X < b_i)``, so the largest gap between
two such cumulative shares is a lower bound of the exact two-sample KS
statistic ``sup_x |F(x) - G(x)|``; inside one cell each CDF can move at most
by that cell's share, which gives an upper bound. A cell that holds a single
value (``[u, nextafter(u))``, used for the grid's quantile values so that
atoms such as ``instrumentalness = 0`` do not widen the bound) is known
exactly. The exact statistic lies in ``[ks, ks_upper]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def shares(counts: Sequence[float], floor: float = 0.0) -> np.ndarray:
    """Counts as shares of their total, each at least ``floor`` (0 for none)."""
    values = np.asarray(counts, dtype=float)
    total = float(values.sum())
    if total <= 0:
        raise ValueError("no rows to compare: every count is zero")
    return np.maximum(values / total, floor)


def psi_terms(expected: Sequence[float], actual: Sequence[float], floor: float) -> np.ndarray:
    """Each bin's share of the PSI: ``(a - e) * ln(a / e)`` on floored shares.

    An empty bin would make the logarithm infinite; its share counts as
    ``floor`` instead (shares are not renormalised after flooring).
    """
    e, a = shares(expected, floor), shares(actual, floor)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape[0]} expected vs {a.shape[0]} actual")
    result: np.ndarray = (a - e) * np.log(a / e)
    return result


def psi(expected: Sequence[float], actual: Sequence[float], floor: float) -> float:
    """Population stability index of ``actual`` against ``expected`` over the same bins."""
    return float(psi_terms(expected, actual, floor).sum())


def point_cells(edges: Sequence[float]) -> npt.NDArray[np.bool_]:
    """Which cells of ``(-inf, e_0), [e_0, e_1), ..., [e_k, inf)`` hold exactly one value.

    ``[u, nextafter(u))`` contains no double but ``u`` itself.
    """
    e = np.asarray(edges, dtype=float)
    points = np.zeros(len(e) + 1, dtype=bool)
    if len(e) > 1:
        points[1:-1] = e[1:] == np.nextafter(e[:-1], np.inf)
    return points


def ks_bounds(
    expected: Sequence[float],
    actual: Sequence[float],
    points: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
) -> tuple[float, float]:
    """``(ks, ks_upper)``: bounds of the exact two-sample KS statistic from counts per cell.

    ``points`` marks the cells holding a single value (see :func:`point_cells`).
    """
    f = np.concatenate([[0.0], np.cumsum(shares(expected))])
    g = np.concatenate([[0.0], np.cumsum(shares(actual))])
    if f.shape != g.shape:
        raise ValueError(f"cells differ: {f.shape[0] - 1} expected vs {g.shape[0] - 1} actual")
    lower = float(np.max(np.abs(f - g)))
    inside = np.maximum(f[1:] - g[:-1], g[1:] - f[:-1])
    if points is not None:
        exact = np.abs(f[1:] - g[1:])
        inside = np.where(np.asarray(points, dtype=bool), exact, inside)
    return min(lower, 1.0), min(max(lower, float(np.max(inside))), 1.0)
