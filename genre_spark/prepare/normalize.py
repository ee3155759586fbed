"""Feature scaling: fitted on the train split only, stored as a table, applied by one function.

Why: a scaler fitted on all tracks lets validation and test values shape the
training inputs, and a scaler re-fitted at scoring time makes the model see
numbers it was never trained on. So ``fit_normalizer`` sees only train rows,
its result is stored as gold.normalizer (one row per feature: center, scale),
and ``apply_normalizer`` is the single function that training and scoring call
to turn raw Spotify values into the model's vector (ARCHITECTURE decision 3).
Training stores the numbers it read from gold.normalizer in the registered
model, and scoring applies those, so re-running prepare later (new tracks, a
new fit) cannot change how an existing model version is scored.

Methods (``settings.prepare.scaler``):

- ``standard``: center = mean, scale = population standard deviation, as
  scikit-learn's ``StandardScaler``.
- ``robust``: center = median, scale = 75th - 25th percentile, exact with
  linear interpolation (Spark's ``percentile``), as scikit-learn's
  ``RobustScaler``; less pulled by extreme values.

A scale that is zero (a constant feature) becomes 1.0, as scikit-learn does,
so a constant feature maps to 0 instead of dividing by zero.

Missing values: silver.tracks may lack a nullable feature (``instrumentalness``
from some CSV exports). The fit ignores nulls, and ``apply_normalizer``
imputes a missing value with the train center, i.e. 0 after scaling: the
track is kept, and the same rule holds at training and scoring because both
call this function. ``run`` reports how many values were imputed per feature.
A feature with no value at all in the train split cannot be fitted: that is a
``FeatureNotFittedError`` telling the user to drop it from ``features``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypeAlias

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

Method = Literal["standard", "robust"]
#: gold.normalizer rows, or the same numbers as ``{feature: (center, scale)}``
#: (what a registered model carries, so it is scaled as it was trained).
Normalizer: TypeAlias = DataFrame | Mapping[str, tuple[float | None, float | None]]

#: A scale below this is treated as zero (scikit-learn's ``_handle_zeros_in_scale``).
ZERO_SCALE = 10 * float(np.finfo(np.float64).eps)


class NormalizerError(ValueError):
    """The normalizer cannot scale the requested features."""


class FeatureNotInNormalizerError(NormalizerError):
    """A feature was requested that the stored normalizer was not fitted on."""


class FeatureNotFittedError(NormalizerError):
    """A feature has no center or scale: the train split had no value for it."""


class MissingFeatureColumnError(NormalizerError):
    """The DataFrame to scale lacks a raw feature column."""


def _center_and_scale(feature: str, method: Method) -> tuple[Column, Column]:
    value = F.col(feature).cast("double")
    if method == "standard":
        return F.avg(value), F.stddev_pop(value)
    if method == "robust":
        q = F.percentile(value, F.array(F.lit(0.25), F.lit(0.5), F.lit(0.75)))
        return q[1], q[2] - q[0]
    raise NormalizerError(f"unknown scaling method {method!r}; allowed: standard, robust")


def fit_normalizer(
    train: DataFrame, features: Sequence[str], method: Method = "standard", version: int = 0
) -> DataFrame:
    """Fit center and scale per feature on ``train`` (the train split only).

    Returns the gold.normalizer rows: feature, center, scale, method,
    fitted_at, version (the silver.tracks version the fit read). One pass
    over the data; the result has one row per feature.
    """
    aggregates = []
    for i, feature in enumerate(features):
        center, scale = _center_and_scale(feature, method)
        aggregates += [center.alias(f"c{i}"), scale.alias(f"s{i}")]
    fitted = train.agg(*aggregates)
    guarded = [
        F.when(F.col(f"s{i}").isNull(), F.lit(None).cast("double"))
        .when(F.col(f"s{i}") < F.lit(ZERO_SCALE), F.lit(1.0))
        .otherwise(F.col(f"s{i}"))
        for i in range(len(features))
    ]
    rows = F.array(
        *[
            F.struct(
                F.lit(feature).alias("feature"),
                F.col(f"c{i}").cast("double").alias("center"),
                guarded[i].cast("double").alias("scale"),
            )
            for i, feature in enumerate(features)
        ]
    )
    return fitted.select(F.explode(rows).alias("row")).select(
        "row.feature",
        "row.center",
        "row.scale",
        F.lit(method).alias("method"),
        F.current_timestamp().alias("fitted_at"),
        F.lit(version).cast("long").alias("version"),
    )


def normalizer_parameters(
    normalizer: Normalizer, features: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """``{feature: (center, scale)}`` for ``features``, checked.

    The normalizer has one row per feature, so collecting it is cheap; this is
    also how ``run`` fails fast, before writing, when a feature cannot be fitted.
    """
    if isinstance(normalizer, DataFrame):
        rows = normalizer.select("feature", "center", "scale").collect()
        fitted = {r["feature"]: (r["center"], r["scale"]) for r in rows}
        if len(fitted) != len(rows):
            raise NormalizerError("the normalizer has more than one row for a feature")
    else:
        fitted = dict(normalizer)
    missing = [f for f in features if f not in fitted]
    if missing:
        raise FeatureNotInNormalizerError(
            f"feature(s) {missing} are not in the normalizer (fitted on {sorted(fitted)}); "
            "run `genre prepare` with the same features the model uses"
        )
    unfitted = [f for f in features if None in fitted[f]]
    if unfitted:
        raise FeatureNotFittedError(
            f"feature(s) {unfitted} have no value in any train-split track, so they cannot "
            "be scaled; remove them from `features` (e.g. --set 'features=[...]')"
        )
    return {f: fitted[f] for f in features}


def scaled_columns(
    normalizer: Normalizer, features: Sequence[str], impute: bool = True
) -> list[Column]:
    """One scaled column per feature, in ``features`` order; a null becomes 0 when ``impute``."""
    columns = []
    for feature, (center, scale) in normalizer_parameters(normalizer, features).items():
        scaled = (F.col(feature).cast("double") - F.lit(center)) / F.lit(scale)
        columns.append(F.coalesce(scaled, F.lit(0.0)) if impute else scaled)
    return columns


def apply_normalizer(
    df: DataFrame,
    normalizer: Normalizer,
    features: Sequence[str],
    output_col: str = "features",
    impute: bool = True,
) -> DataFrame:
    """Add ``output_col``: array<double> of scaled features, in ``features`` order.

    The one function training and scoring both call. Built from column
    expressions with the fitted constants inlined, so it runs in the JVM with
    no Python per row. ``impute=False`` keeps nulls for missing values (used by
    the genre match, which leaves a missing feature out of the likelihood).

    >>> apply_normalizer(silver, lake.read("gold.normalizer"), settings.features)  # doctest: +SKIP
    """
    absent = [f for f in features if f not in df.columns]
    if absent:
        raise MissingFeatureColumnError(f"cannot scale: column(s) {absent} missing from the input")
    return df.withColumn(output_col, F.array(*scaled_columns(normalizer, features, impute)))
