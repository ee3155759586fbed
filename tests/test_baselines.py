"""Genre baselines against pandas, genre matches against scikit-learn's GaussianNB, playlists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from prepare_helpers import silver_frame, silver_pandas
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual
from scipy.special import logsumexp
from sklearn.naive_bayes import GaussianNB

from genre_spark.config import SplitSettings
from genre_spark.features.spark import apply_transform, fit_transform, sub_vector
from genre_spark.prepare.baselines import (
    NoTrainingDataError,
    genre_baselines,
    genre_matches,
    genre_parameters,
    genre_playlists,
)
from genre_spark.prepare.split import assign_split
from genre_spark.schema import FEATURES

FEATS = ["tempo", "energy", "loudness", "instrumentalness"]


def test_baselines_equal_pandas_describe(spark: SparkSession) -> None:
    pdf = silver_pandas(n_per_genre=40, seed=5)
    pdf.loc[pdf.index % 7 == 0, "instrumentalness"] = np.nan
    pdf.loc[pdf.genre == "jazz", "speechiness"] = 0.3  # constant: std 0, quartiles equal
    ours = (
        genre_baselines(silver_frame(spark, pdf), FEATURES)
        .toPandas()
        .set_index(["genre", "feature"])
        .sort_index()
    )
    described = pdf.groupby("genre")[list(FEATURES)].describe().stack(level=0, future_stack=True)
    described.index.names = ["genre", "feature"]
    expected = described.rename(columns={"25%": "q25", "50%": "median", "75%": "q75"}).sort_index()
    assert list(ours.columns) == ["count", "mean", "std", "min", "q25", "median", "q75", "max"]
    assert ours.index.equals(expected.index)
    assert (ours.loc[("pop", "instrumentalness"), "count"]) < 40
    np.testing.assert_allclose(
        ours.to_numpy(dtype=float),
        expected[ours.columns].to_numpy(dtype=float),
        rtol=1e-9,
        atol=1e-12,
    )


def _scaled(spark: SparkSession, pdf: pd.DataFrame) -> DataFrame:
    split = assign_split(silver_frame(spark, pdf), SplitSettings())
    transform = fit_transform(split.where("split = 'train'"), FEATS, scaler="standard").transform
    return apply_transform(split, transform, output_col="_x").select(
        "track_id",
        "genre",
        "split",
        sub_vector(transform, transform, False, "_x").alias("features"),
    )


def _as_numpy(df: DataFrame) -> pd.DataFrame:
    pdf = df.toPandas().sort_values("track_id").reset_index(drop=True)
    pdf["x"] = [np.array([np.nan if v is None else v for v in row]) for row in pdf["features"]]
    return pdf


def test_matches_equal_gaussian_naive_bayes_with_equal_priors(spark: SparkSession) -> None:
    scaled = _scaled(spark, silver_pandas(n_per_genre=60, seed=6))
    params = genre_parameters(scaled.where("split = 'train'"))
    matches = genre_matches(scaled, params, len(FEATS)).toPandas()
    tracks = _as_numpy(scaled)
    x, train = np.stack(tracks["x"]), tracks["split"] == "train"
    genres = sorted(tracks["genre"].unique())
    nb = GaussianNB(priors=np.full(len(genres), 1 / len(genres))).fit(
        x[train], tracks["genre"][train]
    )
    assert list(nb.classes_) == genres
    match = matches.pivot(index="track_id", columns="genre", values="match")
    ll = matches.pivot(index="track_id", columns="genre", values="log_likelihood")
    assert list(match.index) == list(tracks["track_id"]) and list(match.columns) == genres
    np.testing.assert_allclose(match.to_numpy(), nb.predict_proba(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        ll.to_numpy(), nb.predict_joint_log_proba(x) - np.log(1 / len(genres)), rtol=1e-9
    )
    np.testing.assert_allclose(match.sum(axis=1), 1.0, rtol=1e-12)
    labels = matches[["track_id", "label"]].drop_duplicates().set_index("track_id")["label"]
    assert (
        labels.sort_index().tolist() == tracks.set_index("track_id")["genre"].sort_index().tolist()
    )


def test_a_missing_value_is_left_out_of_the_likelihood(spark: SparkSession) -> None:
    pdf = silver_pandas(n_per_genre=50, seed=7)
    pdf.loc[pdf.index % 5 == 0, "instrumentalness"] = np.nan
    pdf.loc[pdf.genre == "metal", "instrumentalness"] = np.nan  # metal never has it
    scaled = _scaled(spark, pdf)
    matches = genre_matches(scaled, genre_parameters(scaled.where("split = 'train'")), len(FEATS))
    got = matches.toPandas().pivot(index="track_id", columns="genre", values="match")

    tracks = _as_numpy(scaled)
    x, y = np.stack(tracks["x"]), tracks["genre"]
    train = x[tracks["split"] == "train"]
    y_train = y[tracks["split"] == "train"].to_numpy()
    genres = sorted(y.unique())
    pooled_mean, pooled_var = np.nanmean(train, axis=0), np.nanvar(train, axis=0)
    epsilon = 1e-9 * pooled_var.max()
    log_lik = []
    for genre in genres:
        rows = train[y_train == genre]
        has = (~np.isnan(rows)).any(axis=0)
        mean = np.where(has, np.nanmean(np.where(has, rows, 0.0), axis=0), pooled_mean)
        var = np.where(has, np.nanvar(np.where(has, rows, 0.0), axis=0), pooled_var) + epsilon
        terms = -0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)
        log_lik.append(np.nansum(terms, axis=1))
    log_lik = np.stack(log_lik, axis=1)
    expected = np.exp(log_lik - logsumexp(log_lik, axis=1, keepdims=True))
    assert np.isnan(x).any(axis=1).sum() > 0
    np.testing.assert_allclose(
        got.loc[tracks["track_id"], genres].to_numpy(), expected, rtol=1e-9, atol=1e-12
    )


@pytest.fixture
def tracks(spark: SparkSession) -> DataFrame:
    rows = [(f"t{i}", f"title {i}", f"artist {i}") for i in range(1, 7)]
    return spark.createDataFrame(rows, "track_id string, title string, artist string")


def test_playlists_rank_by_match_include_other_labels_and_break_ties(
    spark: SparkSession, tracks: DataFrame
) -> None:
    schema = "track_id string, genre string, label string, match double, log_likelihood double"
    matches = spark.createDataFrame(
        [
            ("t1", "pop", "pop", 0.9, -1.0),
            ("t1", "jazz", "pop", 0.1, -5.0),
            ("t2", "pop", "jazz", 0.95, -2.0),  # a jazz track that sounds like pop
            ("t2", "jazz", "jazz", 0.05, -6.0),
            ("t3", "pop", "pop", 1.0, -9.0),  # saturated posterior, untypical
            ("t3", "jazz", "pop", 0.0, -50.0),
            ("t4", "pop", "pop", 1.0, -3.0),  # saturated and more typical than t3
            ("t4", "jazz", "pop", 0.0, -40.0),
            ("t5", "pop", "jazz", 0.2, -4.0),
            ("t5", "jazz", "jazz", 0.8, -1.0),
            ("t6", "pop", "jazz", 0.2, -4.0),  # exact tie with t5: smaller track_id first
            ("t6", "jazz", "jazz", 0.8, -1.0),
        ],
        schema,
    )
    expected = spark.createDataFrame(
        [
            ("pop", 1, "t4", "title 4", "artist 4", "pop", 1.0),
            ("pop", 2, "t3", "title 3", "artist 3", "pop", 1.0),
            ("pop", 3, "t2", "title 2", "artist 2", "jazz", 0.95),
            ("jazz", 1, "t5", "title 5", "artist 5", "jazz", 0.8),
            ("jazz", 2, "t6", "title 6", "artist 6", "jazz", 0.8),
            ("jazz", 3, "t1", "title 1", "artist 1", "pop", 0.1),
        ],
        "genre string, rank int, track_id string, title string, artist string, label string, match double",
    )
    assertDataFrameEqual(genre_playlists(matches, tracks, size=3), expected, checkRowOrder=False)


def test_a_feature_without_train_values_is_a_named_error(spark: SparkSession) -> None:
    parameters = spark.createDataFrame(
        [("pop", 0, 3, 0.0, 1.0)], "genre string, position int, n long, mean double, var double"
    )
    scaled = spark.createDataFrame(
        [("t1", "pop", [0.0, 1.0])], "track_id string, genre string, features array<double>"
    )
    with pytest.raises(NoTrainingDataError, match="position 1"):
        genre_matches(scaled, parameters, dimensions=2)
