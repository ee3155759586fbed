"""Yearly trends per genre: how many tracks, how popular, how they sound, what share of the year.

Descriptive, for people: computed on every track (all splits) in raw Spotify
units, over every audio feature in ``schema.FEATURES`` whatever subset the
model uses, so the table's columns do not change with the model's settings.
Tracks without a release year cannot be placed on the timeline and are left
out; ``run`` reports how many.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def trends_by_year(tracks: DataFrame, features: Sequence[str]) -> DataFrame:
    """One row per (year, genre): tracks, share, mean_popularity, mean_<feature> for each feature.

    ``share`` is the genre's tracks over all tracks of that year (sums to 1 per
    year). Means ignore missing values.
    """
    per_genre = (
        tracks.where(F.col("year").isNotNull())
        .groupBy("year", "genre")
        .agg(
            F.count(F.lit(1)).alias("tracks"),
            F.avg(F.col("popularity").cast("double")).alias("mean_popularity"),
            *[F.avg(F.col(f).cast("double")).alias(f"mean_{f}") for f in features],
        )
    )
    year_total = F.sum("tracks").over(Window.partitionBy("year"))
    return per_genre.select(
        "year",
        "genre",
        "tracks",
        (F.col("tracks") / year_total).alias("share"),
        "mean_popularity",
        *[f"mean_{f}" for f in features],
    )
