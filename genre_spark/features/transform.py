"""The fitted feature transform: raw track fields -> the model's inputs, one value, two applications.

Why one value. What turns a track's raw fields into the model's input vector
(which features, how each is scaled, what a missing value becomes) is decided
once, by ``genre prepare`` on the train split, and must then be applied the
same way wherever the model meets data: when prepare builds the training
vectors, when ``genre score`` scores a catalogue in Spark, and when a single
process scores a pandas frame. So the fitted numbers live in one immutable
:class:`FeatureTransform`, stored as the gold.normalizer rows and in every
registered model's metadata (so a later prepare cannot change how an existing
model version scores), with two applications that tests hold against each
other and against an independent computation: Spark column expressions
(``genre_spark.features.spark``) and numpy (:meth:`FeatureTransform.apply`,
here, with no Spark needed).

Per feature (:class:`FittedFeature`), by its kind (``schema.Kind``):

- ``continuous``: ``standard`` ``(x - mean) / std`` or ``robust``
  ``(x - median) / IQR`` (scikit-learn's scalers; a zero scale becomes 1), or
  ``quantile`` (quantile-normal): a piecewise-linear map through ``K`` knots,
  the train quantiles at probabilities ``(k + 0.5) / K`` mapped to the
  standard-normal quantiles of the same probabilities, flat beyond the first
  and last knot. Skewed features (speechiness, instrumentalness, duration)
  come out near-Gaussian and an extreme value cannot dominate an input. Knots
  that coincide (a feature with many equal values, e.g. instrumentalness 0)
  are merged into one at the mean of their normal quantiles, so the map stays
  a function and a tie lands in the middle of its probability mass.
- ``cyclic``: two inputs, ``sin`` and ``cos`` of ``2 pi x / period``, so the
  first and last value (key B and C) are neighbours. A value outside
  ``[0, period)`` (Spotify's key -1, "no key detected") is missing.
- ``binary``: ``2x - 1``, i.e. -1 / +1.

Missing values. A null (or NaN) value is replaced by ``fill``, in raw units:
the train centre for a continuous feature (mean, median), the most frequent
train value for a cyclic or binary one. When the train split had missing
values of a feature, the transform adds one more input, ``<name>_missing``
(1.0 where the value was missing, else 0.0), so the model can tell an imputed
value from a real one; the indicator is decided at fit time, so the input
layout never depends on the data being scored.

Example::

    transform = FeatureTransform.from_dict(loaded.transform_dict)
    x = transform.apply(pandas_frame)           # float64 [n, len(transform.outputs)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from genre_spark.errors import GenreError
from genre_spark.schema import Kind

#: A scale below this is treated as zero (scikit-learn's ``_handle_zeros_in_scale``).
ZERO_SCALE = 10 * float(np.finfo(np.float64).eps)
CONTINUOUS_METHODS = ("standard", "robust", "quantile")
#: Method names of the other kinds, as gold.normalizer shows them.
CYCLIC_METHOD = "sin-cos"
BINARY_METHOD = "plus-minus-one"
MISSING_SUFFIX = "_missing"


class TransformError(GenreError):
    """The transform cannot be built or applied as asked."""


class FeatureNotInTransformError(TransformError):
    """A feature was asked for that the transform was not fitted on."""


class MissingFeatureColumnError(TransformError):
    """The data to transform lacks a raw feature column."""


def quantile_probabilities(k: int) -> list[float]:
    """The ``k`` knot probabilities ``(i + 0.5) / k``: evenly spaced, never 0 or 1."""
    return [(i + 0.5) / k for i in range(k)]


def quantile_knots(
    values: Sequence[float], probabilities: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Train quantiles ``values`` at ``probabilities`` -> strictly increasing knots (x, z).

    ``z`` is the standard-normal quantile of each probability; equal ``x``
    are merged into one knot at the mean of their ``z``.
    """
    normal = NormalDist()
    merged: dict[float, list[float]] = {}
    for x, p in zip(values, probabilities, strict=True):
        merged.setdefault(float(x), []).append(normal.inv_cdf(p))
    xs = sorted(merged)
    return tuple(xs), tuple(float(np.mean(merged[x])) for x in xs)


@dataclass(frozen=True)
class FittedFeature:
    """One feature's fitted numbers: enough to turn its raw values into its inputs.

    ``present`` (the share of train tracks with a value) is informational: it
    is why ``features: auto`` chose the feature and whether ``indicator`` is on.
    """

    name: str
    kind: str
    method: str
    fill: float
    indicator: bool
    present: float
    center: float | None = None
    scale: float | None = None
    period: float | None = None
    knots_x: tuple[float, ...] = ()
    knots_z: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        kind = Kind(self.kind)
        if kind is Kind.CONTINUOUS and self.method not in CONTINUOUS_METHODS:
            raise TransformError(
                f"{self.name}: unknown scaling {self.method!r}; allowed: {list(CONTINUOUS_METHODS)}"
            )
        if self.method in ("standard", "robust") and (self.center is None or self.scale is None):
            raise TransformError(f"{self.name}: {self.method} scaling needs a center and a scale")
        if self.method == "quantile" and (
            not self.knots_x or len(self.knots_x) != len(self.knots_z)
        ):
            raise TransformError(f"{self.name}: quantile scaling needs knots")
        if kind is Kind.CYCLIC and not self.period:
            raise TransformError(f"{self.name}: a cyclic feature needs a period")

    @property
    def outputs(self) -> list[str]:
        """The names of this feature's inputs, in order."""
        values = (
            [f"{self.name}_sin", f"{self.name}_cos"] if self.kind == Kind.CYCLIC else [self.name]
        )
        return values + ([self.name + MISSING_SUFFIX] if self.indicator else [])

    def slopes(self) -> list[float]:
        """Per quantile segment, ``dz / dx`` (what both applications multiply by)."""
        xs, zs = self.knots_x, self.knots_z
        return [(zs[i + 1] - zs[i]) / (xs[i + 1] - xs[i]) for i in range(len(xs) - 1)]

    def missing(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Where ``x`` (float, NaN for null) counts as missing."""
        if self.kind == Kind.CYCLIC:
            assert self.period is not None
            return np.isnan(x) | (x < 0) | (x >= self.period)
        return np.isnan(x)

    def values(self, x: np.ndarray) -> list[np.ndarray]:
        """This feature's value inputs for present (already filled) raw values ``x``."""
        if self.kind == Kind.CYCLIC:
            assert self.period is not None
            angle = 2 * math.pi * x / self.period
            return [np.sin(angle), np.cos(angle)]
        if self.kind == Kind.BINARY:
            return [2.0 * x - 1.0]
        if self.method == "quantile":
            return [_interpolate(x, self.knots_x, self.knots_z, self.slopes())]
        assert self.center is not None and self.scale is not None
        return [(x - self.center) / self.scale]


def _interpolate(
    x: np.ndarray, xs: Sequence[float], zs: Sequence[float], slopes: Sequence[float]
) -> np.ndarray:
    """Piecewise-linear through the knots, flat outside them: ``z_i + (x - x_i) * slope_i``.

    Written out (not ``np.interp``) so that it is the same arithmetic as the
    Spark expression, term for term.
    """
    knots = np.asarray(xs)
    out = np.where(x < knots[0], zs[0], zs[-1]).astype(np.float64)
    if len(knots) > 1:
        segment = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
        inside = (x >= knots[0]) & (x < knots[-1])
        start = knots[segment]
        linear = np.asarray(zs)[segment] + (x - start) * np.asarray(slopes)[segment]
        out = np.where(inside, linear, out)
    return out


def _as_float(values: Any) -> np.ndarray:
    """A column (numpy, pandas with NA, a list with None) as float64 with NaN for missing."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False)  # numeric numpy: NaN already means missing
    if hasattr(values, "to_numpy"):
        return np.asarray(values.to_numpy(dtype="float64", na_value=np.nan), dtype=np.float64)
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True)
class FeatureTransform:
    """The fitted transform: an ordered tuple of features, each with its numbers.

    ``features`` is the raw feature order (``schema.MODEL_FEATURES`` order);
    ``outputs`` is the model's input order.
    """

    features: tuple[FittedFeature, ...]

    def __post_init__(self) -> None:
        if not self.features:
            raise TransformError("a feature transform needs at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise TransformError(f"a feature appears twice in the transform: {names}")

    @property
    def names(self) -> list[str]:
        """The raw feature columns the transform reads."""
        return [f.name for f in self.features]

    @property
    def outputs(self) -> list[str]:
        """The model's inputs, in vector order."""
        return [name for f in self.features for name in f.outputs]

    def feature(self, name: str) -> FittedFeature:
        for fitted in self.features:
            if fitted.name == name:
                return fitted
        raise FeatureNotInTransformError(
            f"feature {name!r} is not in the transform (fitted on {self.names}); "
            "run `genre prepare` with the features the model uses"
        )

    def select(self, names: Iterable[str]) -> FeatureTransform:
        """The transform of ``names`` only, in this transform's order."""
        wanted = set(names)
        for name in wanted:
            self.feature(name)
        return FeatureTransform(tuple(f for f in self.features if f.name in wanted))

    def continuous(self) -> FeatureTransform:
        """The continuous features without missing indicators: a space with a meaningful distance.

        What the DBSCAN outlier flags and the genre match use; a 12-valued key
        or a binary mode would cut that space into slabs.
        """
        kept = [replace(f, indicator=False) for f in self.features if f.kind == Kind.CONTINUOUS]
        if not kept:
            raise TransformError("the transform has no continuous feature")
        return FeatureTransform(tuple(kept))

    def apply(self, frame: Mapping[str, Any] | Any) -> np.ndarray:
        """The numpy application: raw columns (a pandas frame or a mapping) -> ``[n, outputs]``."""
        absent = [name for name in self.names if name not in frame]
        if absent:
            raise MissingFeatureColumnError(
                f"cannot transform: column(s) {absent} missing from the input"
            )
        columns: list[np.ndarray] = []
        for fitted in self.features:
            raw = _as_float(frame[fitted.name])
            gap = fitted.missing(raw)
            columns += fitted.values(np.where(gap, fitted.fill, raw))
            if fitted.indicator:
                columns.append(gap.astype(np.float64))
        return np.column_stack(columns) if columns else np.zeros((0, 0))

    def gaps(self, frame: Mapping[str, Any] | Any) -> np.ndarray:
        """Rows of raw columns with a missing value of any feature (what ``score.missing=skip`` drops)."""
        gaps = np.zeros(len(frame[self.names[0]]) if self.names else 0, dtype=bool)
        for fitted in self.features:
            gaps |= fitted.missing(_as_float(frame[fitted.name]))
        return gaps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what a registered model's metadata carries."""
        return {"features": [_json(f) for f in self.features]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureTransform:
        return cls.from_records(data["features"])

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> FeatureTransform:
        """From dicts or rows with FittedFeature's fields (gold.normalizer rows, metadata)."""
        fields = FittedFeature.__dataclass_fields__
        features = []
        for record in records:
            values = {k: record[k] for k in fields if k in record}
            for key in ("knots_x", "knots_z"):
                values[key] = tuple(float(v) for v in values.get(key) or ())
            features.append(FittedFeature(**values))
        return cls(tuple(features))

    @classmethod
    def standard(cls, parameters: Mapping[str, tuple[float, float]]) -> FeatureTransform:
        """Continuous features scaled as ``(x - center) / scale`` from ``{feature: (center, scale)}``.

        A missing value gets the center and no indicator: a transform written
        down by hand (benchmarks, tests) instead of fitted.
        """
        return cls(
            tuple(
                FittedFeature(
                    name=name,
                    kind=Kind.CONTINUOUS.value,
                    method="standard",
                    fill=float(center),
                    indicator=False,
                    present=1.0,
                    center=float(center),
                    scale=float(scale),
                )
                for name, (center, scale) in parameters.items()
            )
        )


def _json(fitted: FittedFeature) -> dict[str, Any]:
    record = asdict(fitted)
    record["knots_x"], record["knots_z"] = list(fitted.knots_x), list(fitted.knots_z)
    return record
