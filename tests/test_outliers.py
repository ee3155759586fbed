"""Slab-wise DBSCAN flags equal scikit-learn's DBSCAN, element for element.

Every case compares the whole flags frame (is_outlier == labels_ == -1,
is_core == index in core_sample_indices_) with scikit-learn on the same
vectors, on data built to hit the hard parts: exact-eps ties, duplicates,
points crowding a slab boundary, many dimensions, degenerate parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual
from sklearn.cluster import DBSCAN
from sklearn.datasets import make_blobs
from sklearn.neighbors import NearestNeighbors

from genre_spark.prepare import outliers
from genre_spark.prepare.outliers import (
    InvalidVectorError,
    MissingColumnError,
    NoPointsError,
    OutlierResult,
    default_min_samples,
    estimate_eps,
    flag_outliers,
)


def _ids(n: int) -> list[str]:
    return [f"t{i:05d}" for i in range(n)]


def _frame(spark: SparkSession, x: np.ndarray) -> DataFrame:
    rows = [(i, [float(v) for v in row]) for i, row in zip(_ids(len(x)), x, strict=True)]
    return spark.createDataFrame(rows, "track_id string, features array<double>")


def _sklearn(x: np.ndarray, eps: float, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(is_outlier, is_core) from scikit-learn's DBSCAN: the reference."""
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="euclidean").fit(x)
    core = np.zeros(len(x), dtype=bool)
    core[model.core_sample_indices_] = True
    return model.labels_ == -1, core


def _assert_equals_sklearn(
    spark: SparkSession, x: np.ndarray, eps: float | None, min_samples: int, **kwargs: object
) -> tuple[OutlierResult, np.ndarray, np.ndarray]:
    result = flag_outliers(_frame(spark, x), eps, min_samples, **kwargs)
    outlier, core = _sklearn(x, result.eps, min_samples)
    rows = [(i, bool(o), bool(c)) for i, o, c in zip(_ids(len(x)), outlier, core, strict=True)]
    expected = spark.createDataFrame(rows, "track_id string, is_outlier boolean, is_core boolean")
    assertDataFrameEqual(result.flags, expected)
    assert (result.n_points, result.n_outliers) == (len(x), int(outlier.sum()))
    assert (result.min_samples, result.metric) == (min_samples, "euclidean")
    result.flags.unpersist()
    return result, outlier, core


def _kinds(outlier: np.ndarray, core: np.ndarray) -> tuple[int, int, int]:
    """(noise, border, core) counts, to show a case exercises all three."""
    return int(outlier.sum()), int((~outlier & ~core).sum()), int(core.sum())


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    x, _ = make_blobs(n_samples=1500, centers=5, n_features=3, cluster_std=0.6, random_state=0)
    return np.vstack([x, rng.uniform(-12, 12, size=(60, 3))])


def test_blobs_with_noise(spark: SparkSession, blobs: np.ndarray) -> None:
    _, outlier, core = _assert_equals_sklearn(spark, blobs, 0.5, 8, slabs=6)
    assert min(_kinds(outlier, core)) > 10


def test_duplicates_are_neighbours_at_distance_zero(spark: SparkSession) -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(150, 2))
    x = np.repeat(base, rng.integers(1, 6, size=150), axis=0)
    lonely = np.repeat(rng.uniform(20, 30, size=(5, 2)), 4, axis=0)  # core only as duplicates
    x = rng.permutation(np.vstack([x, lonely]))
    _, outlier, core = _assert_equals_sklearn(spark, x, 0.15, 4, slabs=5)
    assert min(_kinds(outlier, core)) > 0


def _grid(size: int, spacing: float) -> np.ndarray:
    ticks = np.arange(size) * spacing
    return np.array([(a, b) for a in ticks for b in ticks])


@pytest.mark.parametrize(
    ("spacing", "slab_options"),
    [
        (0.5, {"slabs": 4}),
        (0.25, {"axis": [1.0, 0.0], "boundaries": [0.5, 1.0, 1.75]}),  # cuts on grid lines
    ],
)
def test_grid_with_spacing_exactly_eps(
    spark: SparkSession, spacing: float, slab_options: dict[str, object]
) -> None:
    """Neighbours exactly eps apart count (distance <= eps): interior core, edges border,
    corners noise; with < eps everything would be noise."""
    _, outlier, core = _assert_equals_sklearn(spark, _grid(12, spacing), spacing, 5, **slab_options)
    assert _kinds(outlier, core) == (4, 4 * 10, 10 * 10)


@pytest.mark.parametrize("dim", [12, 20])
def test_many_dimensions(spark: SparkSession, dim: int) -> None:
    """12 dims: scikit-learn uses its KD-tree; 20 dims (> 15): brute force."""
    rng = np.random.default_rng(dim)
    x, _ = make_blobs(n_samples=700, centers=4, n_features=dim, cluster_std=1.0, random_state=dim)
    x = np.vstack([x, rng.uniform(-15, 15, size=(30, dim))])
    _, outlier, core = _assert_equals_sklearn(spark, x, 1.15 * np.sqrt(dim), 2 * dim)
    assert min(_kinds(outlier, core)) > 5


def test_points_crowding_a_slab_boundary(spark: SparkSession) -> None:
    """Many points on the cut, within a hair of it and exactly eps from it, with duplicates."""
    rng = np.random.default_rng(3)
    eps = 0.25
    first = np.array([-0.5, -0.25, -(2.0**-40), 0.0, 0.0, 2.0**-40, 0.25, 0.5])
    rest = np.arange(0, 9) * 0.25
    n = 500
    x = np.column_stack([rng.choice(first, n), rng.choice(rest, n), rng.choice(rest, n)])
    x = np.vstack([x, [[0.0, 10.0, 10.0], [0.25, 10.0, 10.0], [-0.25, 10.0, 10.5]]])
    _, outlier, core = _assert_equals_sklearn(
        spark, x, eps, 9, axis=[1.0, 0.0, 0.0], boundaries=[0.0]
    )
    assert min(_kinds(outlier, core)) > 0


def test_memory_caps_split_slabs_into_pieces(
    spark: SparkSession, blobs: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With tiny caps every slab compares its points with several pieces; counts still add up."""
    monkeypatch.setattr(outliers, "MAX_HOME_POINTS_PER_SLAB", 150)
    monkeypatch.setattr(outliers, "MAX_FIT_POINTS_PER_TASK", 200)
    layouts: list[outliers._Layout] = []
    build = outliers._Layout.of

    def spy(slabbed: DataFrame) -> outliers._Layout:
        layouts.append(build(slabbed))
        return layouts[-1]

    monkeypatch.setattr(outliers._Layout, "of", staticmethod(spy))
    _, outlier, core = _assert_equals_sklearn(spark, blobs, 1.0, 8)
    pieces_per_slab = [len(p) for p in layouts[0].query_pieces.values()]
    assert len(pieces_per_slab) >= 10 and max(pieces_per_slab) > 1
    assert min(_kinds(outlier, core)) > 0


def test_single_slab(spark: SparkSession, blobs: np.ndarray) -> None:
    _assert_equals_sklearn(spark, blobs, 0.5, 8, slabs=1)


def test_min_samples_one_makes_every_point_core(spark: SparkSession, blobs: np.ndarray) -> None:
    _, outlier, core = _assert_equals_sklearn(spark, blobs, 0.5, 1)
    assert core.all() and not outlier.any()


def test_all_noise(spark: SparkSession, blobs: np.ndarray) -> None:
    _, outlier, _ = _assert_equals_sklearn(spark, blobs, 1e-3, 3)
    assert outlier.all()


def test_estimate_eps_is_the_k_distance_quantile(spark: SparkSession, blobs: np.ndarray) -> None:
    """With the whole data as sample it equals the brute-force quantile; sampled, it flags a
    small share as noise and the flags still equal scikit-learn's at that eps."""
    df = _frame(spark, blobs)
    distances, _ = NearestNeighbors(n_neighbors=8).fit(blobs).kneighbors(blobs)
    exact = float(np.quantile(distances[:, -1], 0.95))
    assert estimate_eps(df, 8, quantile=0.95, sample_size=5000) == pytest.approx(exact, rel=1e-12)

    result, outlier, _ = _assert_equals_sklearn(spark, blobs, None, 8, sample_size=400, seed=5)
    assert result.eps == estimate_eps(df, 8, 0.98, 400, 5)
    assert 0 < outlier.mean() <= 0.05


@settings(max_examples=150, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), cap=st.integers(1, 8), eps=st.sampled_from([0.25, 0.5]))
def test_capped_neighbour_counts_equal_sklearn_radius_counts(
    seed: int, cap: int, eps: float
) -> None:
    """The per-task kernel on quarter-grid points, some moved 2**-40 off: pairs a hair
    inside and outside eps, where only the exact test can decide."""
    rng = np.random.default_rng(seed)
    dim = int(rng.integers(1, 4))
    fit = rng.integers(0, 6, size=(int(rng.integers(1, 60)), dim)) * 0.25
    fit[rng.random(len(fit)) < 0.3, 0] += rng.choice([-(2.0**-40), 2.0**-40])
    queries = rng.integers(0, 6, size=(int(rng.integers(1, 40)), dim)) * 0.25
    neighbours = (
        NearestNeighbors(radius=eps).fit(fit).radius_neighbors(queries, return_distance=False)
    )
    expected = np.minimum([len(n) for n in neighbours], cap)
    np.testing.assert_array_equal(outliers._capped_counts(fit, queries, eps, cap), expected)


def test_default_min_samples_is_twice_the_dimension() -> None:
    assert [default_min_samples(d) for d in (1, 10)] == [2, 20]


def test_bad_vectors_are_rejected_with_a_reason(spark: SparkSession) -> None:
    schema = "track_id string, features array<double>"
    bad = {
        "null vector": [("a", [1.0, 2.0]), ("b", None)],
        "NaN": [("a", [1.0, 2.0]), ("b", [float("nan"), 1.0])],
        "lengths": [("a", [1.0, 2.0]), ("b", [1.0])],
    }
    for rows in bad.values():
        with pytest.raises(InvalidVectorError):
            flag_outliers(spark.createDataFrame(rows, schema), 1.0, 2)
    with pytest.raises(MissingColumnError):
        flag_outliers(spark.createDataFrame([("a", [1.0])], schema), 1.0, 2, vector_col="vec")
    with pytest.raises(NoPointsError):
        flag_outliers(spark.createDataFrame([], schema), 1.0, 2)


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    cells=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 2)), min_size=12, max_size=80
    ),
    eps=st.sampled_from([0.25, 0.5, 1.0]),
    min_samples=st.integers(1, 6),
    slabs=st.integers(1, 5),
)
def test_random_small_sets_equal_sklearn(
    spark: SparkSession, cells: list[tuple[int, int, int]], eps: float, min_samples: int, slabs: int
) -> None:
    """Points on a quarter grid: exact ties and duplicates everywhere."""
    x = np.array(cells, dtype=np.float64) * 0.25
    _assert_equals_sklearn(spark, x, eps, min_samples, slabs=slabs)
