"""Exact DBSCAN outlier flags at scale (ARCHITECTURE decision 5).

Why not scikit-learn directly: its DBSCAN needs every point in one process and
keeps every neighbourhood list in memory (quadratic in dense regions). Why not
an approximate method: the flags must be the ones a reader can reproduce with
``sklearn.cluster.DBSCAN(eps, min_samples, metric="euclidean")`` on the same
vectors. The noise and core sets do not depend on row order (cluster ids and
the cluster a border point joins do), so they can be computed piece by piece:

1. Project every vector onto the first principal axis (a Spark aggregate of
   the d x d scatter matrix; distances are rotation-invariant, and this axis
   spreads the data most, so eps is smallest relative to the slabs).
2. Cut the axis into slabs at approximate quantiles (balanced slabs). A point
   lives in its *home* slab and reaches every slab whose interval lies within
   the *halo* width ``h`` of its projection. Projections never lengthen
   distances, so a point's eps-neighbours all live in slabs it reaches.
3. Slab ``s`` must compare its home points with the points of every slab
   ``t`` that reach it. Those are grouped into *pieces* of consecutive ``t``
   holding at most ``MAX_FIT_POINTS_PER_TASK`` points; one Spark task
   (``applyInPandas`` grouped by piece) gets the home points of ``s`` that
   reach the piece and the piece's points, builds a KD-tree over the piece
   and counts, per home point, the piece's points within eps, capped at
   ``min_samples`` (a k-nearest-neighbour query with k = min_samples answers
   that without enumerating dense neighbourhoods). Each pair is compared in
   exactly one piece, so summing a point's counts over its pieces gives its
   eps-neighbour count, itself included as scikit-learn counts it:
   ``is_core = count >= min_samples``.
4. The same layout again, with the non-core points as queries and the core
   points as the pieces' content: a non-core point with a core point within
   eps is a border point, any other is noise:
   ``is_outlier = not core and no core point within eps``.

Ties: a pair is "within eps" by scikit-learn's KD-tree test,
``sum_j (x_j - y_j)**2 <= eps * eps`` accumulated in feature order. The tree
search runs at ``eps * (1 + 1e-9)`` and every pair it returns is re-decided
with that exact formula (and when a candidate fails it, all candidates of that
query are), so a pair exactly eps apart (a grid with spacing eps) and
duplicates (distance 0) count as scikit-learn counts them, whatever the slab
layout. Caveats, both only about pairs whose squared distance is within a
few units in the last place of ``eps**2``: scikit-learn's tree prunes with
bounds computed through ``pow`` and may decide such a pair differently
depending on its tree; and with more than 15 features (or fewer than 12
points) scikit-learn uses brute force with the ``|x|^2 - 2 x.y + |y|^2``
expansion, whose rounding differs from the direct formula. Exactly
representable ties agree; on measured data neither shows.

Halo width: ``h = eps * (1 + 1e-6) + 1e-9 * max_norm``. A pair scikit-learn
counts is at most ``eps * (1 + (d + 2) * 2**-53)`` apart, and each computed
projection is off by at most ``(d + 1) * 2**-53 * |x|``; ``h`` covers both
with room to spare, and a too-wide halo only costs comparisons, never flags.

Memory: slabs = ``max(slabs, ceil(n / MAX_HOME_POINTS_PER_SLAB))``, so a
slab's home points number about ``n / slabs`` (at most ~200 000), and a
piece at most ``MAX_FIT_POINTS_PER_TASK`` (500 000) or one slab's home
points; a task holds both, about ``0.7M x (d + 4) x 8`` bytes of columns plus
a KD-tree over the piece, whatever n and eps are. When eps is large next to
the spread along the axis (common in 10 standardized dimensions) every slab
reaches most others: memory stays bounded, work grows with the number of
pieces per slab. One limit: points with equal projections cannot be cut
apart, so a mass of duplicates makes its slab larger than ``n / slabs``.

The row key is ``monotonically_increasing_id`` over the persisted points;
the points are cached (memory and disk) for the duration of the call.

Example::

    result = flag_outliers(features_df, eps=1.2, min_samples=20)
    result.flags  # track_id, is_outlier, is_core
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import add

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy.spatial import cKDTree

from genre_spark.errors import GenreError, MissingColumnError

METRIC = "euclidean"
#: Upper bound on a slab's home points; more rows make more slabs.
MAX_HOME_POINTS_PER_SLAB = 200_000
#: Upper bound on the points one task compares home points with.
MAX_FIT_POINTS_PER_TASK = 500_000
#: Relative widening of the tree search radius; returned pairs are re-decided exactly.
_SHELL = 1e-9
_HALO_REL = 1e-6
_HALO_ABS = 1e-9
#: Candidate pairs handled at once in a task (bounds the pair arrays' memory).
_PAIR_BUDGET = 1_000_000
#: Rows per KD-tree in the k-distance pass (bounds a worker's memory).
_TREE_ROWS = 250_000

_KEY, _ID, _V = "_key", "_id", "_v"
_HOME, _LO, _HI, _SLAB, _PIECE, _QUERY = "_home", "_lo", "_hi", "_slab", "_piece", "_query"
_COUNT, _CORE = "_count", "_is_core"


class OutlierError(GenreError):
    """DBSCAN cannot run on this input with these parameters."""


class InvalidVectorError(OutlierError):
    """A vector is null, has a null / NaN / infinite element, or the lengths differ."""


class NoPointsError(OutlierError):
    """The input has no rows."""


class EpsEstimationError(OutlierError):
    """The k-distance heuristic cannot give a positive eps for this data."""


@dataclass(frozen=True)
class OutlierResult:
    """Per-row DBSCAN flags and the parameters that produced them.

    ``flags`` has one row per input row: the id column, ``is_outlier`` (scikit-
    learn's ``labels_ == -1``) and ``is_core`` (index in ``core_sample_indices_``).
    It is persisted (memory and disk) because computing it takes several
    passes; call ``flags.unpersist()`` once it is written.
    """

    flags: DataFrame
    eps: float
    min_samples: int
    metric: str
    n_points: int
    n_outliers: int


def default_min_samples(dim: int) -> int:
    """``2 * dim``: the rule of thumb of Sander et al. (1998) and Schubert et al. (2017).

    Fewer neighbours make noise in high dimensions look like clusters; more
    turn genuine small groups into noise.
    """
    if dim < 1:
        raise OutlierError(f"dimension must be at least 1, got {dim}")
    return 2 * dim


def flag_outliers(
    df: DataFrame,
    eps: float | None = None,
    min_samples: int | None = None,
    *,
    id_col: str = "track_id",
    vector_col: str = "features",
    k_distance_quantile: float = 0.98,
    sample_size: int = 20000,
    slabs: int = 8,
    seed: int = 0,
    axis: Sequence[float] | None = None,
    boundaries: Sequence[float] | None = None,
) -> OutlierResult:
    """DBSCAN noise and core flags equal to scikit-learn's, computed piece by piece in Spark.

    ``eps`` defaults to :func:`estimate_eps` and ``min_samples`` to
    :func:`default_min_samples` of the vector length. ``slabs`` is the
    minimum number of slabs (the module docstring gives the rule).
    ``axis`` (projection direction) and ``boundaries`` (slab cut points on
    that axis) replace the computed ones; the flags do not depend on them,
    which is what the tests use them to show.
    """
    vectors = _vectors(df, vector_col, id_col)
    n, dim = _check_vectors(vectors)
    ms = default_min_samples(dim) if min_samples is None else int(min_samples)
    if ms < 1 or slabs < 1:
        raise OutlierError(f"min_samples and slabs must be at least 1, got {ms} and {slabs}")
    points = (
        _points(vectors, dim)
        .withColumn(_KEY, F.monotonically_increasing_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    cached = [points]
    try:
        if eps is None:
            eps = _k_distance_eps(points, n, dim, ms, k_distance_quantile, sample_size, seed)
        eps = float(eps)
        if not (eps > 0 and math.isfinite(eps)):
            raise OutlierError(f"eps must be a positive finite number, got {eps}")
        plan = _plan(points, n, dim, eps, slabs, axis, boundaries)
        slabbed = _with_slabs(points, plan)
        layout = _Layout.of(slabbed)
        cored = _core_flags(slabbed, layout, dim, eps, ms).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(cored)
        flags = _outlier_flags(cored, layout, dim, eps).withColumnRenamed(_ID, id_col)
        flags = flags.persist(StorageLevel.MEMORY_AND_DISK)
        totals = flags.agg(
            F.count(F.lit(1)).alias("n"), F.count_if(F.col("is_outlier")).alias("outliers")
        ).first()
        assert totals is not None  # a global aggregate has exactly one row
    finally:
        for frame in cached:
            frame.unpersist()
    return OutlierResult(
        flags=flags,
        eps=eps,
        min_samples=ms,
        metric=METRIC,
        n_points=int(totals["n"]),
        n_outliers=int(totals["outliers"]),
    )


def estimate_eps(
    df: DataFrame,
    min_samples: int,
    quantile: float = 0.98,
    sample_size: int = 20000,
    seed: int = 0,
    vector_col: str = "features",
) -> float:
    """The k-distance heuristic (Ester et al. 1996) at scale, with k = ``min_samples``.

    Up to ``sample_size`` points are sampled (Spark ``sample`` with ``seed``);
    for each, the distance to its ``min_samples``-th nearest neighbour, counting
    the point itself as scikit-learn's ``min_samples`` does, is found among
    ALL points (each partition answers for its rows with a KD-tree, Spark
    merges the per-partition candidates), and eps is the ``quantile`` of those
    distances (numpy's linear interpolation). So about ``quantile`` of the
    points are core points and at most about ``1 - quantile`` are noise.

    Why neighbours among all points and not within the sample: a sample of
    fraction f is 1/f times sparser, so its k-distances are too long, and
    rescaling k by f (or distances by f**(1/d)) assumes a uniform density
    and full intrinsic dimension. Only the query points are sampled here,
    which estimates the same distribution without that assumption.
    """
    vectors = _vectors(df, vector_col)
    n, dim = _check_vectors(vectors)
    return _k_distance_eps(
        _points(vectors, dim), n, dim, int(min_samples), quantile, sample_size, seed
    )


# ---------------------------------------------------------------- input checks


def _vectors(df: DataFrame, vector_col: str, id_col: str | None = None) -> DataFrame:
    """``_v`` (array<double>) and, given ``id_col``, ``_id``; a clear error for a bad column."""
    missing = [c for c in (id_col, vector_col) if c is not None and c not in df.columns]
    if missing:
        raise MissingColumnError(f"missing column(s) {missing}; the DataFrame has {df.columns}")
    dtype = df.schema[vector_col].dataType
    if not (isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, T.NumericType)):
        raise InvalidVectorError(f"{vector_col} must be an array of numbers, got {dtype}")
    ids = [] if id_col is None else [F.col(id_col).alias(_ID)]
    return df.select(*ids, F.col(vector_col).cast("array<double>").alias(_V))


def _check_vectors(vectors: DataFrame) -> tuple[int, int]:
    """Row count and vector length, after checking every vector is complete and finite."""
    v = F.col(_V)
    bad_element = F.exists(v, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    row = vectors.agg(
        F.count(F.lit(1)).alias("n"),
        F.count_if(v.isNull()).alias("nulls"),
        F.count_if(bad_element).alias("bad"),
        F.min(F.size(v)).alias("shortest"),
        F.max(F.size(v)).alias("longest"),
    ).first()
    assert row is not None  # a global aggregate has exactly one row
    if row["nulls"] or row["bad"]:
        raise InvalidVectorError(
            f"{row['nulls']} null vector(s) and {row['bad']} vector(s) with a null, NaN or "
            "infinite element; DBSCAN needs complete finite vectors"
        )
    if not row["n"]:
        raise NoPointsError("no rows: DBSCAN needs at least one vector")
    if row["shortest"] != row["longest"] or row["shortest"] < 1:
        raise InvalidVectorError(
            f"vectors must have one non-zero length, found lengths {row['shortest']}..{row['longest']}"
        )
    return int(row["n"]), int(row["longest"])


def _coords(dim: int) -> list[str]:
    return [f"_c{j}" for j in range(dim)]


def _points(vectors: DataFrame, dim: int) -> DataFrame:
    """One double column per coordinate: pandas UDFs then get plain float64 columns."""
    keep = [c for c in vectors.columns if c != _V]
    return vectors.select(*keep, *[F.col(_V)[j].alias(c) for j, c in enumerate(_coords(dim))])


# ---------------------------------------------------------------- exact neighbour counts


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise squared distance accumulated in feature order: scikit-learn's ``euclidean_rdist``."""
    total = np.zeros(len(a))
    for j in range(a.shape[1]):
        diff = a[:, j] - b[:, j]
        total += diff * diff
    return total


def _chunks(sizes: np.ndarray, budget: int) -> Iterator[slice]:
    """Consecutive slices whose sizes sum to about ``budget`` (at least one item each)."""
    ends = np.cumsum(sizes)
    start = 0
    while start < len(sizes):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + budget, side="right")))
        yield slice(start, stop)
        start = stop


def _ball_counts(tree: cKDTree, fit: np.ndarray, queries: np.ndarray, eps: float) -> np.ndarray:
    """All fit points within eps of each query by the exact test (candidates from the tree)."""
    radius = eps * (1 + _SHELL)
    counts = np.zeros(len(queries), dtype=np.int64)
    sizes = tree.query_ball_point(queries, radius, return_length=True)
    for part in _chunks(sizes, _PAIR_BUDGET):
        block = queries[part]
        candidates = tree.query_ball_point(block, radius)
        owner = np.repeat(np.arange(len(block)), sizes[part])
        flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in candidates])
        inside = _squared_distances(block[owner], fit[flat]) <= eps * eps
        counts[part] = np.bincount(owner, weights=inside, minlength=len(block))
    return counts


def _capped_counts(fit: np.ndarray, queries: np.ndarray, eps: float, cap: int) -> np.ndarray:
    """``min(cap, #fit points within eps)`` per query, by scikit-learn's exact pair test.

    A k-nearest query (k = cap) bounded at eps * (1 + 1e-9) finds the
    candidates; each is re-decided exactly. Fewer than k found means all
    candidates were seen; k found and all inside means at least ``cap``. Only
    when k were found and one failed the exact test (a pair within 1e-9 of
    eps) may an unseen candidate count, and that query is counted in full.
    """
    counts = np.zeros(len(queries), dtype=np.int64)
    if len(fit) == 0 or len(queries) == 0:
        return counts
    tree = cKDTree(fit)
    k = min(cap, len(fit))
    step = max(1, _PAIR_BUDGET // k)
    for start in range(0, len(queries), step):
        block = queries[start : start + step]
        dist, idx = tree.query(block, k=k, distance_upper_bound=eps * (1 + _SHELL))
        # 2-D queries give 2-D arrays; scipy-stubs also allow the scalar of a single query
        dist, idx = np.asarray(dist).reshape(len(block), k), np.asarray(idx).reshape(len(block), k)
        found = np.isfinite(dist)
        rows, cols = np.nonzero(found)
        inside = np.zeros_like(found)
        inside[rows, cols] = _squared_distances(block[rows], fit[idx[rows, cols]]) <= eps * eps
        block_counts = inside.sum(axis=1)
        unsure = np.flatnonzero(found[:, -1] & ~inside.all(axis=1))
        if len(unsure):
            block_counts[unsure] = np.minimum(_ball_counts(tree, fit, block[unsure], eps), k)
        counts[start : start + step] = block_counts
    return counts


# ---------------------------------------------------------------- slabs and pieces


@dataclass(frozen=True)
class _Plan:
    """Projection axis, slab cut points on it, and the halo width."""

    axis: tuple[float, ...]
    boundaries: tuple[float, ...]
    halo: float


@dataclass(frozen=True)
class _Moments:
    """Count, mean, scatter matrix and largest norm of a set of vectors (Chan et al. merge)."""

    n: int
    mean: np.ndarray
    scatter: np.ndarray
    max_norm: float

    @classmethod
    def of(cls, x: np.ndarray) -> _Moments:
        mean = x.mean(axis=0)
        centred = x - mean
        norm = float(np.sqrt((x * x).sum(axis=1)).max())
        return cls(len(x), mean, centred.T @ centred, norm)

    def merge(self, other: _Moments) -> _Moments:
        n = self.n + other.n
        delta = other.mean - self.mean
        return _Moments(
            n,
            self.mean + delta * (other.n / n),
            self.scatter + other.scatter + np.outer(delta, delta) * (self.n * other.n / n),
            max(self.max_norm, other.max_norm),
        )


def _moments(points: DataFrame, dim: int) -> _Moments:
    """Spark aggregate: one partial per partition, merged on the driver (d x d each)."""
    cols = _coords(dim)

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        parts = [_Moments.of(b[cols].to_numpy(np.float64)) for b in batches if len(b)]
        if parts:
            m = reduce(_Moments.merge, parts)
            yield pd.DataFrame(
                {"n": [m.n], "mean": [m.mean], "scatter": [m.scatter.ravel()], "norm": [m.max_norm]}
            )

    schema = "n long, mean array<double>, scatter array<double>, norm double"
    rows = points.select(cols).mapInPandas(partial, schema).collect()
    return reduce(
        _Moments.merge,
        [
            _Moments(
                r["n"], np.array(r["mean"]), np.array(r["scatter"]).reshape(dim, dim), r["norm"]
            )
            for r in rows
        ],
    )


def _principal_axis(scatter: np.ndarray) -> tuple[float, ...]:
    """Unit eigenvector of the largest eigenvalue, sign fixed so reruns agree."""
    _, vectors = np.linalg.eigh(scatter)
    axis = vectors[:, -1]
    if axis[np.argmax(np.abs(axis))] < 0:
        axis = -axis
    return tuple(float(a) for a in axis)


def _projection(axis: Sequence[float]) -> Column:
    cols = _coords(len(axis))
    return reduce(add, [F.col(c) * F.lit(float(a)) for c, a in zip(cols, axis, strict=True)])


def _slab_of(value: Column, boundaries: Sequence[float]) -> Column:
    """Index of the slab holding ``value``: the number of cut points at or below it."""
    if not boundaries:
        return F.lit(0)
    return reduce(add, [(value >= F.lit(float(b))).cast("int") for b in boundaries])


def _plan(
    points: DataFrame,
    n: int,
    dim: int,
    eps: float,
    slabs: int,
    axis: Sequence[float] | None,
    boundaries: Sequence[float] | None,
) -> _Plan:
    moments = _moments(points, dim)
    if axis is None:
        unit = _principal_axis(moments.scatter)
    else:
        given = np.asarray(axis, dtype=np.float64)
        if given.shape != (dim,) or not np.linalg.norm(given) > 0:
            raise OutlierError(f"axis must be a non-zero vector of length {dim}")
        unit = tuple(float(a) for a in given / np.linalg.norm(given))
    if boundaries is None:
        count = max(int(slabs), math.ceil(n / MAX_HOME_POINTS_PER_SLAB))
        probs = [i / count for i in range(1, count)]
        projected = points.select(_projection(unit).alias("p"))
        cuts = projected.approxQuantile("p", probs, min(0.01, 0.25 / count)) if probs else []
    else:
        cuts = [float(b) for b in boundaries]
    halo = eps * (1 + _HALO_REL) + _HALO_ABS * moments.max_norm
    return _Plan(unit, tuple(sorted(set(cuts))), halo)


def _with_slabs(points: DataFrame, plan: _Plan) -> DataFrame:
    """Each point's home slab and the range of slabs it reaches (within the halo)."""
    proj = _projection(plan.axis)
    return (
        points.withColumn("_p", proj)
        .select(
            "*",
            _slab_of(F.col("_p"), plan.boundaries).alias(_HOME),
            _slab_of(F.col("_p") - plan.halo, plan.boundaries).alias(_LO),
            _slab_of(F.col("_p") + plan.halo, plan.boundaries).alias(_HI),
        )
        .drop("_p")
    )


@dataclass(frozen=True)
class _Layout:
    """Which task compares which points.

    ``fit_piece[(s, t)]``: the piece holding slab t's points that reach slab s.
    ``query_pieces[s]``: slab s's pieces as (piece, first t, last t).
    """

    fit_piece: dict[tuple[int, int], int]
    query_pieces: dict[int, list[tuple[int, int, int]]]

    @classmethod
    def of(cls, slabbed: DataFrame) -> _Layout:
        """Pieces for every slab with home points, from a small (home, lo, hi) count."""
        band: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for row in slabbed.groupBy(_HOME, _LO, _HI).count().collect():
            for s in range(row[_LO], row[_HI] + 1):
                band[s][row[_HOME]] += row["count"]
        fit_piece: dict[tuple[int, int], int] = {}
        query_pieces: dict[int, list[tuple[int, int, int]]] = {}
        for s in sorted(s for s in band if band[s].get(s)):
            query_pieces[s] = []
            for members in _consecutive_groups(band[s], MAX_FIT_POINTS_PER_TASK):
                piece = len(set(fit_piece.values()))
                fit_piece.update({(s, t): piece for t in members})
                query_pieces[s].append((piece, members[0], members[-1]))
        return cls(fit_piece, query_pieces)

    def fit_rows(self, points: DataFrame) -> DataFrame:
        """A row per (point, slab it reaches), in the piece of that slab holding its home."""
        stride = max(s for s, _ in self.fit_piece) + 1
        lookup = F.create_map(
            *[F.lit(v) for (s, t), piece in self.fit_piece.items() for v in (s * stride + t, piece)]
        )
        reached = points.withColumn(_SLAB, F.explode(F.sequence(_LO, _HI)))
        piece = F.element_at(lookup, F.col(_SLAB) * stride + F.col(_HOME))
        return (
            reached.withColumn(_PIECE, piece)
            .filter(F.col(_PIECE).isNotNull())  # slabs without home points need no fit rows
            .drop(_SLAB)
            .withColumn(_QUERY, F.lit(False))
        )

    def query_rows(self, points: DataFrame) -> DataFrame:
        """A row per (point, piece of its home slab within its reach)."""
        lookup = F.create_map(
            *[
                v
                for s, pieces in self.query_pieces.items()
                for v in (F.lit(s), F.array(*[_piece_struct(*p) for p in pieces]))
            ]
        )
        near = F.filter(
            F.element_at(lookup, F.col(_HOME)),
            lambda p: (p["first"] <= F.col(_HI)) & (p["last"] >= F.col(_LO)),
        )
        reached = points.withColumn(_PIECE, F.explode(F.transform(near, lambda p: p["piece"])))
        return reached.withColumn(_QUERY, F.lit(True))


def _consecutive_groups(sizes: dict[int, int], limit: int) -> list[list[int]]:
    """Sorted keys cut greedily into runs whose sizes sum to at most ``limit`` (or one key)."""
    groups: list[list[int]] = []
    total = 0
    for key in sorted(sizes):
        if not groups or total + sizes[key] > limit:
            groups.append([])
            total = 0
        groups[-1].append(key)
        total += sizes[key]
    return groups


def _piece_struct(piece: int, first: int, last: int) -> Column:
    return F.struct(
        F.lit(piece).alias("piece"), F.lit(first).alias("first"), F.lit(last).alias("last")
    )


def _per_piece(
    queries: DataFrame, fits: DataFrame, dim: int, eps: float, cap: int, carry: list[str]
) -> DataFrame:
    """``carry`` + ``_count``: each query's capped exact eps-neighbour count in its piece."""
    cols = _coords(dim)

    def count(pdf: pd.DataFrame) -> pd.DataFrame:
        is_query = pdf[_QUERY].to_numpy(bool)
        x = pdf[cols].to_numpy(np.float64)
        out = pdf.loc[is_query, carry]
        return out.assign(**{_COUNT: _capped_counts(x[~is_query], x[is_query], eps, cap)})

    keep = [*carry, *[c for c in cols if c not in carry], _PIECE, _QUERY]
    rows = queries.select(keep).unionByName(
        fits.select([*cols, _PIECE, _QUERY]), allowMissingColumns=True
    )
    schema = T.StructType(
        [*[queries.schema[c] for c in carry], T.StructField(_COUNT, T.LongType())]
    )
    return rows.groupBy(_PIECE).applyInPandas(count, schema)


def _core_flags(
    slabbed: DataFrame, layout: _Layout, dim: int, eps: float, min_samples: int
) -> DataFrame:
    """Every point with ``_is_core``: its eps-neighbours, summed over its pieces, >= min_samples."""
    carry = [_KEY, _ID, *_coords(dim), _HOME, _LO, _HI]
    counts = _per_piece(
        layout.query_rows(slabbed), layout.fit_rows(slabbed), dim, eps, min_samples, carry
    )
    return counts.groupBy(_KEY).agg(
        *[F.any_value(c).alias(c) for c in carry if c != _KEY],
        (F.sum(_COUNT) >= min_samples).alias(_CORE),
    )


def _outlier_flags(cored: DataFrame, layout: _Layout, dim: int, eps: float) -> DataFrame:
    """``_id``, ``is_outlier``, ``is_core``: noise is non-core with no core point within eps."""
    core = F.col(_CORE)
    loose = cored.filter(~core)
    reached = _per_piece(
        layout.query_rows(loose), layout.fit_rows(cored.filter(core)), dim, eps, 1, [_KEY, _ID]
    )
    noise_or_border = reached.groupBy(_KEY).agg(
        F.any_value(_ID).alias(_ID),
        (F.max(_COUNT) == 0).alias("is_outlier"),
        F.lit(False).alias("is_core"),
    )
    cores = cored.filter(core).select(
        _KEY, _ID, F.lit(False).alias("is_outlier"), F.lit(True).alias("is_core")
    )
    return cores.unionByName(noise_or_border).drop(_KEY)


# ---------------------------------------------------------------- eps heuristic


def _k_distance_eps(
    points: DataFrame,
    n: int,
    dim: int,
    min_samples: int,
    quantile: float,
    sample_size: int,
    seed: int,
) -> float:
    """See :func:`estimate_eps`; ``points`` has one double column per coordinate."""
    if not 0 < quantile < 1 or sample_size < 1:
        raise EpsEstimationError(
            f"need 0 < quantile < 1 and sample_size >= 1, got {quantile} and {sample_size}"
        )
    if n < min_samples:
        raise EpsEstimationError(
            f"{n} point(s) but min_samples={min_samples}: no point can be core; pass eps explicitly"
        )
    cols = _coords(dim)
    fraction = min(1.0, 1.2 * sample_size / n)
    sample = points.sample(fraction=fraction, seed=seed).limit(sample_size).select(cols)
    queries = sample.toPandas().to_numpy(np.float64)
    distances = _kth_neighbour_distances(points.select(cols), n, queries, min_samples)
    eps = float(np.quantile(distances, quantile))
    if not eps > 0:
        raise EpsEstimationError(
            f"the {quantile} quantile of the {min_samples}-distance is 0 (many duplicate "
            "vectors); pass eps explicitly"
        )
    return eps


def _kth_neighbour_distances(coords: DataFrame, n: int, queries: np.ndarray, k: int) -> np.ndarray:
    """Distance from each query to its k-th nearest row of ``coords``, merged across partitions.

    Every task answers all queries, so the data is first coalesced to about
    one task per core (or per ``_TREE_ROWS`` rows, whichever is more).
    """

    def nearest(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        best = np.full((len(queries), k), np.inf)
        for block in _blocks(batches):
            found, _ = cKDTree(block).query(queries, k=min(k, len(block)))
            found = np.asarray(found).reshape(len(queries), -1)  # 2-D queries: an array
            best = np.sort(np.concatenate([best, found], axis=1), axis=1)[:, :k]
        if np.isfinite(best[:, 0]).any():
            yield pd.DataFrame({"q": np.arange(len(queries)), "d": list(best)})

    tasks = max(coords.sparkSession.sparkContext.defaultParallelism, math.ceil(n / _TREE_ROWS))
    merged = (
        coords.coalesce(tasks)
        .mapInPandas(nearest, "q long, d array<double>")
        .groupBy("q")
        .agg(F.element_at(F.array_sort(F.flatten(F.collect_list("d"))), k).alias("kd"))
    )
    return np.array([row["kd"] for row in merged.collect()], dtype=np.float64)


def _blocks(batches: Iterator[pd.DataFrame]) -> Iterator[np.ndarray]:
    """Arrow batches joined into coordinate blocks of up to ``_TREE_ROWS`` rows."""
    pending: list[np.ndarray] = []
    size = 0
    for batch in batches:
        pending.append(batch.to_numpy(np.float64))
        size += len(batch)
        if size >= _TREE_ROWS:
            yield np.concatenate(pending)
            pending, size = [], 0
    if size:
        yield np.concatenate(pending)
