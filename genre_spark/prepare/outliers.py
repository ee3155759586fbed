"""Exact DBSCAN outlier flags at scale (ARCHITECTURE decision 5).

Why not scikit-learn directly: its DBSCAN needs every point in one process and
keeps every neighbourhood list in memory (quadratic in dense regions). Why not
an approximate method: the flags must be the ones a reader can reproduce with
``sklearn.cluster.DBSCAN(eps, min_samples, metric="euclidean")`` on the same
vectors. The noise and core sets do not depend on row order (cluster ids and
the cluster a border point joins do), so they can be computed piece by piece:

1. Project every vector onto the first principal axis (a Spark aggregate of
   the d x d scatter matrix; distances are rotation-invariant, and this axis
   spreads the data most, so slabs are thinnest relative to eps).
2. Cut the axis into slabs at approximate quantiles (balanced slabs). A point
   lives in its *home* slab and is copied into every other slab whose
   interval lies within the *halo* width ``h`` of its projection.
   Projections shrink distances, so every eps-neighbour of a home point is in
   its slab's home + halo set.
3. Core pass (one ``applyInPandas`` group per slab): a KD-tree over home +
   halo points counts each home point's eps-neighbours, itself included, as
   scikit-learn does; ``is_core = count >= min_samples``.
4. Noise pass: each point goes back to its home slab, core points again into
   their halos (their core flag was decided in their own home slab). A
   non-core home point is a border point when some core point is within eps;
   otherwise it is noise: ``is_outlier = not core and no core neighbour``.

Ties: a pair is "within eps" by scikit-learn's KD-tree test,
``sum_j (x_j - y_j)**2 <= eps * eps`` accumulated in feature order. A tree
query at radius ``eps * (1 - 1e-9)`` finds pairs that are surely inside, one
at ``eps * (1 + 1e-9)`` those that may be; only the pairs in between are
decided with that exact formula, so a pair exactly eps apart (a grid with
spacing eps) and duplicates (distance 0) count as scikit-learn counts them,
whatever the slab layout. Caveats, both about pairs whose squared distance is
within a few units in the last place of ``eps**2``: scikit-learn's own
tree prunes with bounds computed through ``pow`` and may decide such a pair
differently depending on its tree; and with more than 15 features (or fewer
than 12 points) scikit-learn uses brute force with the ``|x|^2 - 2 x.y + |y|^2``
expansion, whose rounding differs from the direct formula. Neither shows on
measured data; exactly representable ties agree.

Halo width: ``h = eps * (1 + 1e-6) + 1e-9 * max_norm``. A pair scikit-learn
counts is at most ``eps * (1 + (d + 2) * 2**-53)`` apart, and each computed
projection is off by at most ``(d + 1) * 2**-53 * |x|``; ``h`` covers both
with room to spare, and a too-wide halo only costs copies, never flags.

Slab count and memory: ``max(slabs, ceil(n / MAX_HOME_POINTS_PER_SLAB))`` so a
slab holds at most about 250 000 home points (a few tens of MB of coordinates
and tree per Python worker), plus its halo: the points within ``h`` of its
interval. The halo cannot shrink below the points in a ``2 * eps`` band of the
axis, so an eps that spans most of the data along the principal axis makes
every slab nearly the whole data set; choose eps as DBSCAN intends (a
neighbourhood scale), which the default heuristic does.

Example::

    result = flag_outliers(features_df, eps=1.2, min_samples=20)
    result.flags  # track_id, is_outlier, is_core
"""

from __future__ import annotations

import math
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
from sklearn.neighbors import KDTree

METRIC = "euclidean"
#: Upper bound on home points per slab; more rows make more slabs.
MAX_HOME_POINTS_PER_SLAB = 250_000
#: Relative width of the band around eps that is decided pair by pair.
_SHELL = 1e-9
_HALO_REL = 1e-6
_HALO_ABS = 1e-9
#: Candidate pairs decided exactly per chunk (bounds the pair arrays' memory).
_PAIR_BUDGET = 200_000
#: Rows per KD-tree in the k-distance pass (bounds a worker's memory).
_TREE_ROWS = 250_000

_ID = "_id"
_HOME, _LO, _HI, _SLAB, _CORE, _OUTLIER = "_home", "_lo", "_hi", "_slab", "_is_core", "_is_outlier"


class OutlierError(ValueError):
    """DBSCAN cannot run on this input with these parameters."""


class MissingColumnError(OutlierError):
    """The id or vector column is absent."""


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
    It is persisted (memory and disk) because computing it takes two passes;
    call ``flags.unpersist()`` once it is written.
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
    merge genuine small groups into noise.
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
    """DBSCAN noise and core flags equal to scikit-learn's, computed slab by slab in Spark.

    ``eps`` defaults to :func:`estimate_eps` and ``min_samples`` to
    :func:`default_min_samples` of the vector length. ``slabs`` is the
    minimum number of slabs (see the module docstring for the rule).
    ``axis`` (projection direction) and ``boundaries`` (slab cut points on
    that axis) override the computed ones; results do not depend on them,
    which is what tests use them to show.
    """
    vectors = _vectors(df, vector_col, id_col)
    n, dim = _check_vectors(vectors)
    ms = default_min_samples(dim) if min_samples is None else int(min_samples)
    if ms < 1:
        raise OutlierError(f"min_samples must be at least 1, got {ms}")
    points = _points(vectors, dim).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if eps is None:
            eps = _k_distance_eps(points, n, dim, ms, k_distance_quantile, sample_size, seed)
        eps = float(eps)
        if not (eps > 0 and math.isfinite(eps)):
            raise OutlierError(f"eps must be a positive finite number, got {eps}")
        plan = _plan(points, n, dim, eps, slabs, axis, boundaries)
        flags = (
            _noise_pass(_core_pass(_with_slabs(points, plan), dim, eps, ms), dim, eps)
            .select(
                F.col(_ID).alias(id_col),
                F.col(_OUTLIER).alias("is_outlier"),
                F.col(_CORE).alias("is_core"),
            )
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        totals = flags.agg(
            F.count(F.lit(1)).alias("n"), F.count_if(F.col("is_outlier")).alias("outliers")
        ).first()
    finally:
        points.unpersist()
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
    return df.select(*ids, F.col(vector_col).cast("array<double>").alias("_v"))


def _check_vectors(vectors: DataFrame) -> tuple[int, int]:
    """Row count and vector length, after checking every vector is complete and finite."""
    v = F.col("_v")
    bad_element = F.exists(v, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    row = vectors.agg(
        F.count(F.lit(1)).alias("n"),
        F.count_if(v.isNull()).alias("nulls"),
        F.count_if(bad_element).alias("bad"),
        F.min(F.size(v)).alias("shortest"),
        F.max(F.size(v)).alias("longest"),
    ).first()
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
    keep = [c for c in vectors.columns if c != "_v"]
    return vectors.select(*keep, *[F.col("_v")[j].alias(c) for j, c in enumerate(_coords(dim))])


# ---------------------------------------------------------------- exact neighbour test


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


def _exact_counts(tree: KDTree, points: np.ndarray, queries: np.ndarray, eps: float) -> np.ndarray:
    """Neighbours within eps of each query by the exact pair test, over the tree's wide candidates."""
    candidates = tree.query_radius(queries, eps * (1 + _SHELL))
    lengths = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=len(candidates))
    owner = np.repeat(np.arange(len(queries)), lengths)
    inside = _squared_distances(queries[owner], points[np.concatenate(candidates)]) <= eps * eps
    return np.bincount(owner, weights=inside, minlength=len(queries)).astype(np.int64)


def _at_least(points: np.ndarray, queries: np.ndarray, eps: float, threshold: int) -> np.ndarray:
    """For each query: are at least ``threshold`` of ``points`` within eps (scikit-learn's test)?

    Tree counts at radii just below and above eps settle almost every query
    in O(log n) (scikit-learn counts whole tree nodes at once); the few left,
    with a candidate in the thin shell around eps, are decided pair by pair.
    """
    result = np.zeros(len(queries), dtype=bool)
    if len(queries) == 0 or len(points) == 0:
        return result
    tree = KDTree(points)
    surely = tree.query_radius(queries, eps * (1 - _SHELL), count_only=True)
    result = surely >= threshold
    open_ = np.flatnonzero(~result)
    if len(open_) == 0:
        return result
    maybe = tree.query_radius(queries[open_], eps * (1 + _SHELL), count_only=True)
    undecided = open_[maybe >= threshold]
    for part in _chunks(maybe[maybe >= threshold], _PAIR_BUDGET):
        rows = undecided[part]
        result[rows] = _exact_counts(tree, points, queries[rows], eps) >= threshold
    return result


# ---------------------------------------------------------------- slabs


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
    """Each point's home slab and the range of slabs whose halo it falls in."""
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


# ---------------------------------------------------------------- the two passes


def _core_pass(slabbed: DataFrame, dim: int, eps: float, min_samples: int) -> DataFrame:
    """Home points with ``_is_core``: eps-neighbour count over home + halo >= min_samples."""
    cols = _coords(dim)
    keep = slabbed.columns

    def per_slab(key: tuple[int, ...], pdf: pd.DataFrame) -> pd.DataFrame:
        home = (pdf[_HOME] == key[0]).to_numpy()
        x = pdf[cols].to_numpy(np.float64)
        out = pdf.loc[home, keep]
        return out.assign(**{_CORE: _at_least(x, x[home], eps, min_samples)})

    schema = T.StructType([*slabbed.schema.fields, T.StructField(_CORE, T.BooleanType())])
    replicated = slabbed.withColumn(_SLAB, F.explode(F.sequence(_LO, _HI)))
    return replicated.groupBy(_SLAB).applyInPandas(per_slab, schema)


def _noise_pass(cored: DataFrame, dim: int, eps: float) -> DataFrame:
    """``_is_outlier``: not core and no core point (home or halo) within eps."""
    cols = _coords(dim)

    def per_slab(key: tuple[int, ...], pdf: pd.DataFrame) -> pd.DataFrame:
        home = (pdf[_HOME] == key[0]).to_numpy()
        core = pdf[_CORE].to_numpy(bool)
        x = pdf[cols].to_numpy(np.float64)
        loose = home & ~core
        outlier = np.zeros(len(pdf), dtype=bool)
        outlier[loose] = ~_at_least(x[core], x[loose], eps, 1)
        return pd.DataFrame(
            {_ID: pdf[_ID].to_numpy()[home], _CORE: core[home], _OUTLIER: outlier[home]}
        )

    schema = T.StructType(
        [
            cored.schema[_ID],
            T.StructField(_CORE, T.BooleanType()),
            T.StructField(_OUTLIER, T.BooleanType()),
        ]
    )
    slabs = F.when(F.col(_CORE), F.sequence(_LO, _HI)).otherwise(F.array(_HOME))
    replicated = cored.withColumn(_SLAB, F.explode(slabs))
    return replicated.groupBy(_SLAB).applyInPandas(per_slab, schema)


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
    if not 0 < quantile < 1:
        raise EpsEstimationError(f"quantile must be in (0, 1), got {quantile}")
    if n < min_samples:
        raise EpsEstimationError(
            f"{n} point(s) but min_samples={min_samples}: no point can be core; pass eps explicitly"
        )
    cols = _coords(dim)
    fraction = min(1.0, 1.2 * sample_size / n)
    sample = points.sample(fraction=fraction, seed=seed).limit(sample_size).select(cols)
    queries = sample.toPandas().to_numpy(np.float64)
    distances = _kth_neighbour_distances(points.select(cols), queries, min_samples)
    eps = float(np.quantile(distances, quantile))
    if not eps > 0:
        raise EpsEstimationError(
            f"the {quantile} quantile of the {min_samples}-distance is 0 (many duplicate "
            "vectors); pass eps explicitly"
        )
    return eps


def _kth_neighbour_distances(coords: DataFrame, queries: np.ndarray, k: int) -> np.ndarray:
    """Distance from each query to its k-th nearest row of ``coords``, merged across partitions."""

    def nearest(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        best = np.full((len(queries), k), np.inf)
        for block in _blocks(batches):
            found, _ = cKDTree(block).query(queries, k=min(k, len(block)))
            found = found.reshape(len(queries), -1)
            best = np.sort(np.concatenate([best, found], axis=1), axis=1)[:, :k]
        if np.isfinite(best[:, 0]).any():
            yield pd.DataFrame({"q": np.arange(len(queries)), "d": list(best)})

    merged = (
        coords.mapInPandas(nearest, "q long, d array<double>")
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
