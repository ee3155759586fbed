"""Yearly trends against a pandas groupby reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
from prepare_helpers import silver_frame, silver_pandas
from pyspark.sql import SparkSession

from genre_spark.prepare.trends import trends_by_year
from genre_spark.schema import FEATURES


def test_trends_equal_a_pandas_groupby(spark: SparkSession) -> None:
    pdf = silver_pandas(n_per_genre=80, seed=9)
    pdf["year"] = pd.array(1990 + pdf.index % 4, dtype="Int32")  # few years: several rows per cell
    pdf.loc[pdf.index % 11 == 0, "year"] = pd.NA
    pdf["popularity"] = pd.array(pdf["popularity"], dtype="Int32")
    pdf.loc[pdf.index % 13 == 0, "popularity"] = pd.NA
    pdf.loc[pdf.index % 3 == 0, "instrumentalness"] = np.nan

    ours = trends_by_year(silver_frame(spark, pdf), FEATURES).toPandas()

    dated = pdf.dropna(subset=["year"]).astype({"year": int, "popularity": float})
    expected = dated.groupby(["year", "genre"]).agg(
        tracks=("track_id", "size"),
        mean_popularity=("popularity", "mean"),
        **{f"mean_{f}": (f, "mean") for f in FEATURES},
    )
    expected.insert(
        1, "share", expected["tracks"] / expected.groupby("year")["tracks"].transform("sum")
    )
    ours = ours.astype({"year": int}).set_index(["year", "genre"]).sort_index()
    assert list(ours.columns) == list(expected.columns)
    assert ours.index.equals(expected.index)
    assert (ours["tracks"] == expected["tracks"]).all()
    np.testing.assert_allclose(ours.to_numpy(float), expected.to_numpy(float), rtol=1e-12)
    np.testing.assert_allclose(ours.groupby("year")["share"].sum(), 1.0, rtol=1e-12)
    assert ours["tracks"].sum() == len(dated) < len(pdf)
