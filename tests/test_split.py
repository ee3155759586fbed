"""The hash split: stable under catalog growth and re-runs, stratified by genre."""

from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from scipy import stats

from genre_spark.config import SplitSettings
from genre_spark.prepare.split import assign_split, hash_unit

GENRES = ("pop", "rock", "jazz", "metal", "latin")


def _catalog(spark: SparkSession, n_per_genre: int, prefix: str = "id") -> DataFrame:
    rows = [(f"{prefix}-{g}-{i}", g) for g in GENRES for i in range(n_per_genre)]
    return spark.createDataFrame(rows, "track_id string, genre string")


def test_old_tracks_keep_their_split_when_the_catalog_grows(spark: SparkSession) -> None:
    settings = SplitSettings()
    before = assign_split(_catalog(spark, 200), settings).select("track_id", "split")
    grown = (
        _catalog(spark, 200)
        .unionByName(_catalog(spark, 300, prefix="new"))
        .withColumn("genre", F.lit("relabelled"))  # the split must not depend on the label either
        .repartition(7)
    )
    after = assign_split(grown, settings).select("track_id", "split")
    old_after = after.join(before.select("track_id"), "track_id")
    assertDataFrameEqual(old_after, before)
    assert after.count() == 5 * 500
    assertDataFrameEqual(
        assign_split(_catalog(spark, 200), settings).select("track_id", "split"), before
    )


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.15, 0.15), (0.5, 0.3, 0.2)], ids=["default", "50-30-20"]
)
def test_every_genre_is_split_in_the_configured_proportions(
    spark: SparkSession, fractions: tuple[float, float, float]
) -> None:
    settings = SplitSettings(train=fractions[0], validation=fractions[1], test=fractions[2])
    n = 1000
    counts = assign_split(_catalog(spark, n), settings).groupBy("genre", "split").count().toPandas()
    share = counts.pivot(index="genre", columns="split", values="count").fillna(0) / n
    expected = pd.Series(dict(zip(("train", "validation", "test"), fractions, strict=True)))
    assert sorted(share.index) == sorted(GENRES)
    # binomial sd at n=1000 is <= 0.016; 0.05 is > 3 sd for every genre and split
    deviation = (share[expected.index] - expected).abs()
    assert (deviation < 0.05).all().all(), deviation


def test_the_hash_is_uniform_and_the_salt_reshuffles(spark: SparkSession) -> None:
    ids = _catalog(spark, 1000)
    u = ids.select(hash_unit(F.col("track_id"), "genre-spark").alias("u")).toPandas()["u"]
    assert ((u >= 0) & (u < 1)).all()
    assert stats.kstest(u, "uniform").pvalue > 0.001
    a = assign_split(ids, SplitSettings()).select("track_id", F.col("split").alias("a"))
    b = assign_split(ids, SplitSettings(salt="another")).select(
        "track_id", F.col("split").alias("b")
    )
    moved = a.join(b, "track_id").where("a != b").count()
    # independent draws disagree with probability 1 - (.7^2 + 2 * .15^2) = 0.465
    assert 0.4 < moved / 5000 < 0.53
