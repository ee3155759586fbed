"""The Spark side of the feature transform: fit it on the train split, apply it as column expressions.

Fit (:func:`fit_transform`). One aggregate over the train rows computes, for
every candidate feature, how many tracks have a value and the statistics its
kind and the scaler need: mean and population standard deviation
(``standard``), exact quartiles (``robust``, as scikit-learn's
``RobustScaler``), approximate quantiles (``quantile``: ``percentile_approx``,
rank error at most ``n / 10000``), the most frequent value (cyclic, binary).
The executors do the work; the driver receives one row of a few numbers per
feature and builds the :class:`~genre_spark.features.transform.FeatureTransform`.
Validation and test rows never reach the fit.

Selection. ``features: auto`` (``None`` here) keeps every feature of
``schema.MODEL_FEATURES`` that has a value in at least ``min_present`` of the
train tracks: a CSV export without ``year`` or ``key`` trains on what it has,
with no flag, and a Spotify development-mode catalogue whose popularity is
mostly missing leaves it out. An explicit list keeps every named feature,
and one with no train value at all is a :class:`FeatureNotFittedError`.

Apply (:func:`apply_transform`). One expression per input with the fitted
constants inlined, so it runs in the JVM with no Python per row; the quantile
map finds each value's segment with MLlib's ``Bucketizer`` (a binary search in
the JVM) and looks the segment's numbers up in literal arrays. These are the
same formulas, in the same order of operations, as the numpy application.

gold.normalizer (:func:`transform_table`, :func:`read_transform`) holds the
fitted transform as one row per feature, in input order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from genre_spark.features.transform import (
    BINARY_METHOD,
    CONTINUOUS_METHODS,
    CYCLIC_METHOD,
    ZERO_SCALE,
    FeatureTransform,
    FittedFeature,
    MissingFeatureColumnError,
    TransformError,
    quantile_knots,
    quantile_probabilities,
)
from genre_spark.lake.catalog import GOLD_NORMALIZER, spec
from genre_spark.schema import MODEL_FEATURE_BY_NAME, MODEL_FEATURES, Kind, ModelFeature


class FeatureNotFittedError(TransformError):
    """A configured feature has no value in any train-split track, so nothing can be fitted."""


class NoFeatureSelectedError(TransformError):
    """``features: auto`` found no feature present in enough train tracks."""


@dataclass(frozen=True)
class FitResult:
    """The fitted transform, and each candidate's share of train tracks with a value."""

    transform: FeatureTransform
    present: dict[str, float]
    auto: bool
    min_present: float

    @property
    def left_out(self) -> dict[str, float]:
        """Candidates that ``auto`` did not choose, with their share present."""
        chosen = set(self.transform.names)
        return {name: share for name, share in self.present.items() if name not in chosen}


def is_missing(feature: ModelFeature | FittedFeature) -> Column:
    """True where the feature's value counts as missing: null, NaN, or off a cyclic feature's circle."""
    x = F.col(feature.name).cast("double")
    gap = x.isNull() | F.isnan(x)
    if feature.kind == Kind.CYCLIC:
        assert feature.period is not None
        gap = gap | (x < F.lit(0.0)) | (x >= F.lit(feature.period))
    return gap


def _valid(feature: ModelFeature) -> Column:
    """The value where it counts as present, else null (what the statistics see)."""
    return F.when(~is_missing(feature), F.col(feature.name).cast("double"))


def _statistics(feature: ModelFeature, scaler: str, quantiles: int) -> list[Column]:
    """The aggregate columns this feature's fit needs (named by the caller's prefix)."""
    value = _valid(feature)
    if feature.kind != Kind.CONTINUOUS:
        return [F.mode(value, deterministic=True)]
    if scaler == "standard":
        return [F.avg(value), F.stddev_pop(value)]
    if scaler == "robust":
        return [F.percentile(value, F.array(*[F.lit(q) for q in (0.25, 0.5, 0.75)]))]
    if scaler == "quantile":
        return [F.percentile_approx(value, [0.5, *quantile_probabilities(quantiles)])]
    raise TransformError(f"unknown scaler {scaler!r}; allowed: {list(CONTINUOUS_METHODS)}")


def _fitted(
    feature: ModelFeature, stats: Sequence[Any], present: float, indicator: bool, scaler: str
) -> FittedFeature:
    """Build one FittedFeature from its collected statistics (a Row's values: untyped)."""
    common: dict[str, Any] = {
        "name": feature.name,
        "kind": feature.kind.value,
        "present": present,
        "indicator": indicator,
    }
    if feature.kind == Kind.CYCLIC:
        return FittedFeature(
            **common, method=CYCLIC_METHOD, fill=float(stats[0]), period=feature.period
        )
    if feature.kind == Kind.BINARY:
        return FittedFeature(**common, method=BINARY_METHOD, fill=float(stats[0]))
    if scaler == "quantile":
        median, *values = stats[0]
        xs, zs = quantile_knots(values, quantile_probabilities(len(values)))
        return FittedFeature(**common, method=scaler, fill=float(median), knots_x=xs, knots_z=zs)
    if scaler == "standard":
        center, scale = float(stats[0]), float(stats[1])
    else:
        q25, center, q75 = (float(q) for q in stats[0])
        scale = q75 - q25
    scale = 1.0 if scale < ZERO_SCALE else scale
    return FittedFeature(**common, method=scaler, fill=center, center=center, scale=scale)


def fit_transform(
    train: DataFrame,
    features: Sequence[str] | None = None,
    *,
    scaler: str = "standard",
    min_present: float = 0.5,
    quantiles: int = 64,
) -> FitResult:
    """Choose and fit the features on ``train`` (the train split only) in one aggregate.

    ``features`` None is ``auto``; a list is used as given (in
    ``MODEL_FEATURES`` order; ``schema.validate_features`` checked the names).
    """
    if features is None:
        candidates = [f for f in MODEL_FEATURES if f.name in train.columns]
    else:
        candidates = [MODEL_FEATURE_BY_NAME[name] for name in features]
        absent = [f.name for f in candidates if f.name not in train.columns]
        if absent:
            raise MissingFeatureColumnError(
                f"cannot fit: column(s) {absent} missing from the input"
            )
    aggregates = [F.count(F.lit(1)).alias("rows")]
    widths = []
    for i, feature in enumerate(candidates):
        stats = _statistics(feature, scaler, quantiles)
        widths.append(len(stats))
        aggregates.append(F.count(_valid(feature)).alias(f"n{i}"))
        aggregates += [s.alias(f"s{i}_{j}") for j, s in enumerate(stats)]
    row = train.agg(*aggregates).first()
    assert row is not None
    rows = int(row["rows"])
    present = {f.name: (row[f"n{i}"] / rows if rows else 0.0) for i, f in enumerate(candidates)}
    if features is not None:
        empty = [name for name, share in present.items() if share == 0.0]
        if empty:
            raise FeatureNotFittedError(
                f"feature(s) {empty} have no value in any train-split track, so they cannot be "
                "fitted; remove them from `features` (or use features: auto)"
            )
    fitted = []
    for i, feature in enumerate(candidates):
        if features is None and present[feature.name] < min_present:
            continue
        stats = [row[f"s{i}_{j}"] for j in range(widths[i])]
        indicator = row[f"n{i}"] < rows
        fitted.append(_fitted(feature, stats, present[feature.name], indicator, scaler))
    if not fitted:
        raise NoFeatureSelectedError(
            f"features: auto found no feature with a value in at least {min_present:.0%} of the "
            f"{rows:,} train tracks ({present}); lower prepare.min_present or list `features`"
        )
    return FitResult(FeatureTransform(tuple(fitted)), present, features is None, min_present)


# --- application --------------------------------------------------------------------------

_BUCKET = "_bucket_"


def _filled(fitted: FittedFeature) -> Column:
    """The raw value, or the fill value where it is missing."""
    return F.when(is_missing(fitted), F.lit(fitted.fill)).otherwise(
        F.col(fitted.name).cast("double")
    )


def _with_buckets(df: DataFrame, transform: FeatureTransform) -> DataFrame:
    """Add ``_bucket_<name>``: which quantile segment each filled value falls in.

    MLlib's ``Bucketizer`` (a binary search in the JVM) over the splits
    ``-inf, x_0, ..., x_last, +inf``: bucket 0 is below the first knot, bucket
    ``i`` is ``[x_(i-1), x_i)``, the last is at or above the last knot, which
    is ``np.searchsorted(knots, x, side="right")``. Looking the segment up
    this way keeps each input a short expression (a tree of ``CASE WHEN`` over
    64 knots per feature outgrows Spark's generated-code limits).
    """
    quantile = [f for f in transform.features if f.method == "quantile"]
    if not quantile:
        return df
    from pyspark.ml.feature import Bucketizer

    filled = [f"_filled_{f.name}" for f in quantile]
    with_filled = df.select(
        "*", *[_filled(f).alias(c) for f, c in zip(quantile, filled, strict=True)]
    )
    bucketizer = Bucketizer(
        splitsArray=[[-math.inf, *f.knots_x, math.inf] for f in quantile],
        inputCols=filled,
        outputCols=[_BUCKET + f.name for f in quantile],
    )
    return bucketizer.transform(with_filled).drop(*filled)


def _quantile_map(x: Column, fitted: FittedFeature) -> Column:
    """``z_i + (x - x_i) * slope_i`` of the value's segment; flat (slope 0) beyond the end knots."""
    xs, zs = fitted.knots_x, fitted.knots_z
    bases = [zs[0], *zs[:-1], zs[-1]]
    starts = [xs[0], *xs[:-1], xs[-1]]
    slopes = [0.0, *fitted.slopes(), 0.0]
    bucket = F.col(_BUCKET + fitted.name).cast("int") + 1  # element_at is 1-based

    def lookup(values: Sequence[float]) -> Column:
        return F.element_at(F.array(*[F.lit(float(v)) for v in values]), bucket)

    return lookup(bases) + (x - lookup(starts)) * lookup(slopes)


def _values(x: Column, fitted: FittedFeature) -> list[Column]:
    """This feature's value inputs from its filled raw value ``x``."""
    if fitted.kind == Kind.CYCLIC:
        assert fitted.period is not None
        angle = F.lit(2 * math.pi) * x / F.lit(fitted.period)
        return [F.sin(angle), F.cos(angle)]
    if fitted.kind == Kind.BINARY:
        return [F.lit(2.0) * x - F.lit(1.0)]
    if fitted.method == "quantile":
        return [_quantile_map(x, fitted)]
    return [(x - F.lit(fitted.center)) / F.lit(fitted.scale)]


def _columns(transform: FeatureTransform) -> list[Column]:
    """One column per input, in ``transform.outputs`` order (needs ``_with_buckets``' columns)."""
    columns = []
    for fitted in transform.features:
        columns += _values(_filled(fitted), fitted)
        if fitted.indicator:
            columns.append(is_missing(fitted).cast("double"))
    return columns


def apply_transform(
    df: DataFrame, transform: FeatureTransform, output_col: str = "features"
) -> DataFrame:
    """Add ``output_col``: array<double> of the model's inputs (``transform.outputs`` order).

    The one function that builds training inputs (prepare) and scoring inputs
    (``genre score``).

    >>> apply_transform(silver, read_transform(lake.read(GOLD_NORMALIZER)))  # doctest: +SKIP
    """
    absent = [name for name in transform.names if name not in df.columns]
    if absent:
        raise MissingFeatureColumnError(
            f"cannot transform: column(s) {absent} missing from the input"
        )
    buckets = [_BUCKET + f.name for f in transform.features if f.method == "quantile"]
    with_buckets = _with_buckets(df, transform)
    return with_buckets.withColumn(output_col, F.array(*_columns(transform))).drop(*buckets)


def sub_vector(
    transform: FeatureTransform,
    subset: FeatureTransform,
    impute: bool = True,
    vector_col: str = "features",
) -> Column:
    """``subset``'s inputs picked from ``transform``'s vector column (no recomputation).

    ``subset`` is a part of ``transform`` (``transform.continuous()``).
    ``impute=False`` makes a missing value null instead of its fill value (the
    genre match leaves a missing feature out of its likelihood).
    """
    position = {name: i for i, name in enumerate(transform.outputs)}
    picked = []
    for fitted in subset.features:
        for name in fitted.outputs:
            value = F.col(vector_col)[position[name]]
            picked.append(value if impute else F.when(~is_missing(fitted), value))
    return F.array(*picked)


# --- gold.normalizer ------------------------------------------------------------------------


def transform_table(spark: SparkSession, transform: FeatureTransform, version: int) -> DataFrame:
    """gold.normalizer rows: one per feature in input order, ``version`` = silver.tracks' version."""
    rows = [
        (
            position,
            f.name,
            f.kind,
            f.method,
            f.fill,
            f.indicator,
            f.present,
            f.center,
            f.scale,
            f.period,
            list(f.knots_x),
            list(f.knots_z),
            f.outputs,
            version,
        )
        for position, f in enumerate(transform.features)
    ]
    table = spark.createDataFrame(rows, spec(GOLD_NORMALIZER).stamped_schema())
    return table.withColumn("fitted_at", F.current_timestamp())


def read_transform(normalizer: DataFrame) -> FeatureTransform:
    """The transform stored in gold.normalizer (one small row per feature)."""
    missing = [c for c in ("position", "kind", "fill") if c not in normalizer.columns]
    if missing:
        raise TransformError(
            f"gold.normalizer lacks column(s) {missing}: it was written by an older version; "
            "run `genre prepare` again"
        )
    rows = [r.asDict() for r in normalizer.orderBy("position").collect()]
    for r in rows:
        r["name"] = r.pop("feature")
    return FeatureTransform.from_records(rows)
