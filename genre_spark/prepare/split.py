"""Train / validation / test split by a salted hash of track_id.

Why a hash and not a random sample or a per-genre rank: a track's split must
never change when the catalog grows or the job re-runs (ARCHITECTURE decision
4), otherwise tracks a model was validated on leak into the next training set.
A hash depends on nothing but the track's own id, so adding, removing or
re-ordering other tracks cannot move it.

How stratification by genre holds: each track's hash is mapped to a number
``u`` uniform in [0, 1), and every genre is cut at the same thresholds
(``u < train`` -> train, ``u < train + validation`` -> validation, else test).
The hash is independent of the label, so within every genre the split is a
stratified Bernoulli sample: each genre's expected proportions are exactly the
configured fractions, and a genre with ``n`` tracks deviates by about
``sqrt(p (1 - p) / n)`` (a genre of 500 tracks: train 70% +- 2%). An exactly
stratified split (ranking within genre) would move tracks between splits
whenever a genre grows, which is the property we must keep.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from genre_spark.config import SplitSettings

SPLITS: tuple[str, ...] = ("train", "validation", "test")

_BITS = 53  # a double holds 53-bit integers exactly, so u is exact and uniform on a 2^-53 grid


def hash_unit(track_id: Column, salt: str) -> Column:
    """A number uniform in [0, 1) determined by ``salt`` and the track id alone."""
    hashed = F.xxhash64(F.lit(salt), track_id).bitwiseAND(F.lit((1 << _BITS) - 1))
    return hashed.cast("double") / F.lit(float(1 << _BITS))


def split_column(settings: SplitSettings, id_col: str = "track_id") -> Column:
    """'train', 'validation' or 'test' for each row, from the hash of its id."""
    u = hash_unit(F.col(id_col), settings.salt)
    return (
        F.when(u < F.lit(settings.train), F.lit("train"))
        .when(u < F.lit(settings.train + settings.validation), F.lit("validation"))
        .otherwise(F.lit("test"))
    )


def assign_split(
    df: DataFrame, settings: SplitSettings, id_col: str = "track_id", output_col: str = "split"
) -> DataFrame:
    """Add the ``split`` column; usable as ``df.transform(assign_split, settings)``."""
    return df.withColumn(output_col, split_column(settings, id_col))
