"""Genre baselines, every track's match to every genre, and genre playlists.

- ``genre_baselines``: the "standard value" of each feature per genre (count,
  mean, std, min, quartiles, max, as pandas' ``describe``), on **raw** values
  in Spotify's units over the **train split**, so a person reads "rock's median
  tempo is 121 BPM" and held-out tracks stay unseen.
- ``genre_matches``: for every track and every genre that has train tracks, a
  probability-like ``match`` in [0, 1] that sums to 1 over genres per track:
  the posterior of a Gaussian naive Bayes model with equal priors. Each genre
  is a diagonal Gaussian on the **scaled** features, its per-feature mean and
  (population) variance estimated on the genre's train tracks; the variances
  get ``var_smoothing`` x the largest feature variance added, exactly as
  scikit-learn's ``GaussianNB`` does, so a genre with one track or a constant
  feature still has a density. ``match = softmax over genres of the
  log-likelihoods`` (log-sum-exp, so no underflow). A missing feature value is
  left out of the likelihood (marginalised), not imputed. ``log_likelihood``,
  the track's log density under the genre, is kept: it says how *typical* the
  track is, where ``match`` says which genre it resembles *most*.
- ``genre_playlists``: songs for a genre's audience, the ``size`` tracks with
  the highest match per genre, whatever their own label. Ties (posteriors that
  saturate at 1.0) go to the more typical track (higher log-likelihood), then
  the smaller track_id, so the order is deterministic.

Everything runs as column expressions: the per-genre parameters (genres x
features numbers) are the only thing the driver collects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from operator import add

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from genre_spark.errors import NoTrainingDataError

#: scikit-learn's GaussianNB default: fraction of the largest variance added to every variance.
VAR_SMOOTHING = 1e-9


def _long(df: DataFrame, features: Sequence[str], keys: Sequence[str]) -> DataFrame:
    """One row per (keys..., feature) with the feature's raw value."""
    pairs = F.array(
        *[
            F.struct(F.lit(f).alias("feature"), F.col(f).cast("double").alias("value"))
            for f in features
        ]
    )
    return df.select(*keys, F.explode(pairs).alias("kv")).select(*keys, "kv.feature", "kv.value")


def genre_baselines(train: DataFrame, features: Sequence[str]) -> DataFrame:
    """Per genre and feature: count, mean, std (sample), min, q25, median, q75, max.

    Nulls are not counted (``count`` is the number of tracks with a value).
    Quartiles are exact with linear interpolation, as pandas' ``describe``.
    """
    quartiles = F.percentile("value", F.array(F.lit(0.25), F.lit(0.5), F.lit(0.75)))
    return (
        _long(train, features, ["genre"])
        .groupBy("genre", "feature")
        .agg(
            F.count("value").alias("count"),
            F.avg("value").alias("mean"),
            F.stddev_samp("value").alias("std"),
            F.min("value").alias("min"),
            quartiles.alias("q"),
            F.max("value").alias("max"),
        )
        .select(
            "genre",
            "feature",
            "count",
            "mean",
            "std",
            "min",
            F.col("q")[0].alias("q25"),
            F.col("q")[1].alias("median"),
            F.col("q")[2].alias("q75"),
            "max",
        )
    )


def genre_parameters(train_scaled: DataFrame, vector_col: str = "features") -> DataFrame:
    """Per genre and vector position: count, mean and population variance of the scaled values.

    Input: train-split rows with ``genre`` and an array column whose nulls mark
    missing values (``features.spark.apply_transform(..., impute=False)``).
    """
    return (
        train_scaled.select("genre", F.posexplode(vector_col).alias("position", "value"))
        .groupBy("genre", "position")
        .agg(
            F.count("value").alias("n"),
            F.avg("value").alias("mean"),
            F.var_pop("value").alias("var"),
        )
    )


@dataclass(frozen=True)
class _Gaussian:
    genre: str
    means: tuple[float, ...]
    variances: tuple[float, ...]


def _gaussians(parameters: DataFrame, dimensions: int, var_smoothing: float) -> list[_Gaussian]:
    """Per-genre means and smoothed variances, collected (genres x features numbers).

    A (genre, feature) with no train value falls back to the pooled (all
    genres) mean and variance of that feature: that feature then says nothing
    specific about the genre, instead of leaving the genre without a density.
    """
    stats: dict[str, dict[int, tuple[int, float, float]]] = {}
    for row in parameters.collect():
        if row["n"]:
            stats.setdefault(row["genre"], {})[row["position"]] = (
                row["n"],
                row["mean"],
                row["var"],
            )
    pooled = []
    for j in range(dimensions):
        cells = [s[j] for s in stats.values() if j in s]
        if not cells:
            raise NoTrainingDataError(f"no train-split track has a value at vector position {j}")
        n = sum(c[0] for c in cells)
        mean = sum(c[0] * c[1] for c in cells) / n
        var = sum(c[0] * (c[2] + (c[1] - mean) ** 2) for c in cells) / n
        pooled.append((n, mean, var))
    epsilon = var_smoothing * max(p[2] for p in pooled) or var_smoothing
    return [
        _Gaussian(
            genre,
            tuple(stats[genre].get(j, pooled[j])[1] for j in range(dimensions)),
            tuple(stats[genre].get(j, pooled[j])[2] + epsilon for j in range(dimensions)),
        )
        for genre in sorted(stats)
    ]


def _log_likelihood(vector: Column, gaussian: _Gaussian) -> Column:
    """Diagonal Gaussian log density; a null component contributes 0 (marginalised)."""
    terms = []
    for j, (mean, var) in enumerate(zip(gaussian.means, gaussian.variances, strict=True)):
        x = vector[j]
        term = F.lit(-0.5 * math.log(2 * math.pi * var)) - (x - F.lit(mean)) ** 2 / F.lit(2 * var)
        terms.append(F.coalesce(term, F.lit(0.0)))
    return reduce(add, terms)


def genre_matches(
    scaled: DataFrame,
    parameters: DataFrame,
    dimensions: int,
    vector_col: str = "features",
    var_smoothing: float = VAR_SMOOTHING,
) -> DataFrame:
    """For every track and every trained genre: track_id, genre, label, match, log_likelihood.

    ``scaled`` has track_id, genre (the track's label) and the scaled vector
    (nulls for missing values); ``parameters`` comes from ``genre_parameters``.
    """
    gaussians = _gaussians(parameters, dimensions, var_smoothing)
    genres = F.array(*[F.lit(g.genre) for g in gaussians])
    ll = F.array(*[_log_likelihood(F.col(vector_col), g) for g in gaussians])
    with_ll = scaled.select("track_id", F.col("genre").alias("label"), ll.alias("_ll"))
    peak = F.array_max("_ll")
    log_sum = peak + F.log(F.aggregate("_ll", F.lit(0.0), lambda acc, x: acc + F.exp(x - peak)))
    return with_ll.select(
        "track_id",
        "label",
        F.posexplode("_ll").alias("_i", "log_likelihood"),
        log_sum.alias("_lse"),
    ).select(
        "track_id",
        genres[F.col("_i")].alias("genre"),
        "label",
        F.exp(F.col("log_likelihood") - F.col("_lse")).alias("match"),
        "log_likelihood",
    )


def genre_playlists(matches: DataFrame, tracks: DataFrame, size: int) -> DataFrame:
    """The ``size`` best-matching tracks per genre: genre, rank, track_id, title, artist, label, match.

    Tracks labelled with another genre are included on purpose: a jazz track
    that sounds like pop belongs in the pop audience's playlist. Spark turns
    ``row_number() <= size`` into a per-partition top-k before the shuffle, so
    this does not sort the whole catalog.
    """
    order = Window.partitionBy("genre").orderBy(
        F.desc("match"), F.desc("log_likelihood"), F.asc("track_id")
    )
    top = (
        matches.withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= size)
        .select("genre", "rank", "track_id", "label", "match")
    )
    return top.join(tracks.select("track_id", "title", "artist"), "track_id").select(
        "genre", "rank", "track_id", "title", "artist", "label", "match"
    )
