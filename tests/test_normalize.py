"""The normalizer: fitted on train only, equal to scikit-learn's scalers, applied by one function."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from prepare_helpers import silver_frame, silver_pandas
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from sklearn.preprocessing import RobustScaler, StandardScaler

from genre_spark.config import SplitSettings
from genre_spark.prepare.normalize import (
    FeatureNotFittedError,
    FeatureNotInNormalizerError,
    MissingFeatureColumnError,
    apply_normalizer,
    fit_normalizer,
)
from genre_spark.prepare.split import assign_split
from genre_spark.schema import FEATURES

SCALERS = {"standard": StandardScaler, "robust": RobustScaler}


@pytest.fixture(scope="module")
def tracks(spark: SparkSession) -> pd.DataFrame:
    """Silver rows with their split, some instrumentalness values missing."""
    pdf = silver_pandas(n_per_genre=120, seed=3)
    pdf.loc[pdf.index % 9 == 0, "instrumentalness"] = np.nan
    split = assign_split(silver_frame(spark, pdf), SplitSettings()).select("track_id", "split")
    return pdf.merge(split.toPandas(), on="track_id")


def _fit(spark: SparkSession, tracks: pd.DataFrame, method: str, features=FEATURES) -> DataFrame:
    silver = silver_frame(spark, tracks.drop(columns="split"))
    split = assign_split(silver, SplitSettings())
    return fit_normalizer(split.where("split = 'train'"), features, method, version=5)


@pytest.mark.parametrize("method", ["standard", "robust"])
def test_fit_equals_sklearn_fitted_on_the_train_rows(
    spark: SparkSession, tracks: pd.DataFrame, method: str
) -> None:
    normalizer = _fit(spark, tracks, method).toPandas().set_index("feature")
    reference = SCALERS[method]().fit(tracks.loc[tracks.split == "train", list(FEATURES)])
    center = reference.mean_ if method == "standard" else reference.center_
    assert list(normalizer.index) == list(FEATURES)
    np.testing.assert_allclose(normalizer["center"], center, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(normalizer["scale"], reference.scale_, rtol=1e-9, atol=1e-9)
    assert set(normalizer["method"]) == {method}
    assert set(normalizer["version"]) == {5}
    assert normalizer["fitted_at"].notna().all()


@pytest.mark.parametrize("method", ["standard", "robust"])
def test_validation_and_test_values_do_not_move_the_normalizer(
    spark: SparkSession, tracks: pd.DataFrame, method: str
) -> None:
    changed = tracks.copy()
    held_out = changed.split != "train"
    changed.loc[held_out, "tempo"] = 299.0
    changed.loc[held_out, "energy"] = changed.loc[held_out, "energy"] / 10
    changed.loc[held_out, "instrumentalness"] = np.nan
    columns = ["feature", "center", "scale", "method", "version"]
    assertDataFrameEqual(
        _fit(spark, changed, method).select(columns),
        _fit(spark, tracks, method).select(columns),
    )


@pytest.mark.parametrize("method", ["standard", "robust"])
def test_apply_equals_sklearn_transform_with_missing_values_imputed_at_the_center(
    spark: SparkSession, tracks: pd.DataFrame, method: str
) -> None:
    features = ["loudness", "tempo", "instrumentalness"]  # any order, any subset
    normalizer = _fit(spark, tracks, method, FEATURES)
    silver = silver_frame(spark, tracks.drop(columns="split"))
    scaled = apply_normalizer(silver, normalizer, features, output_col="x")
    kept = apply_normalizer(silver, normalizer, features, output_col="x", impute=False)
    assert set(scaled.columns) == {*silver.columns, "x"}
    ours = np.array(scaled.orderBy("track_id").select("x").toPandas()["x"].tolist(), dtype=float)
    with_nulls = kept.orderBy("track_id").select("x").toPandas()["x"].tolist()
    ordered = tracks.sort_values("track_id")
    reference = SCALERS[method]().fit(ordered.loc[ordered.split == "train", features])
    expected = reference.transform(ordered[features])
    assert np.isnan(expected[:, 2]).sum() == ordered["instrumentalness"].isna().sum() > 0
    np.testing.assert_allclose(ours, np.nan_to_num(expected, nan=0.0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        np.array([[np.nan if v is None else v for v in row] for row in with_nulls]),
        expected,
        rtol=1e-9,
        atol=1e-9,
    )


def test_a_constant_feature_gets_scale_one_like_sklearn(spark: SparkSession) -> None:
    pdf = silver_pandas(n_per_genre=20, seed=1)
    pdf["speechiness"] = 0.25
    silver = silver_frame(spark, pdf)
    for method, scaler in SCALERS.items():
        normalizer = fit_normalizer(silver, ["speechiness", "energy"], method)
        row = normalizer.where("feature = 'speechiness'").first()
        reference = scaler().fit(pdf[["speechiness", "energy"]])
        assert row["scale"] == reference.scale_[0] == 1.0
        values = apply_normalizer(silver, normalizer, ["speechiness"]).select("features")
        assert {tuple(r["features"]) for r in values.collect()} == {(0.0,)}


def test_named_errors_for_features_that_cannot_be_scaled(spark: SparkSession) -> None:
    pdf = silver_pandas(n_per_genre=10, seed=2)
    pdf["instrumentalness"] = np.nan
    silver = silver_frame(spark, pdf)
    normalizer = fit_normalizer(silver, ["tempo", "instrumentalness"])
    with pytest.raises(FeatureNotInNormalizerError, match="energy"):
        apply_normalizer(silver, normalizer, ["tempo", "energy"])
    with pytest.raises(FeatureNotFittedError, match="instrumentalness"):
        apply_normalizer(silver, normalizer, ["tempo", "instrumentalness"])
    with pytest.raises(MissingFeatureColumnError, match="tempo"):
        apply_normalizer(silver.drop("tempo"), normalizer, ["tempo"])
    assert (
        apply_normalizer(silver, normalizer, ["tempo"]).where(F.size("features") == 1).count() == 40
    )
