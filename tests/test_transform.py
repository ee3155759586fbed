"""The feature transform: fitted on train only, equal to an independent numpy/scikit-learn computation,
and its Spark and numpy applications give the same inputs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from prepare_helpers import silver_frame, silver_pandas
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual
from scipy.stats import norm
from sklearn.preprocessing import RobustScaler, StandardScaler

from genre_spark.config import SplitSettings
from genre_spark.features.spark import (
    FeatureNotFittedError,
    FitResult,
    NoFeatureSelectedError,
    apply_transform,
    fit_transform,
    read_transform,
    sub_vector,
    transform_table,
)
from genre_spark.features.transform import (
    FeatureNotInTransformError,
    FeatureTransform,
    MissingFeatureColumnError,
    quantile_probabilities,
)
from genre_spark.prepare.split import assign_split
from genre_spark.schema import FEATURES, MODEL_FEATURE_NAMES

CONTINUOUS = [*FEATURES, "popularity", "year"]
METHODS = ("standard", "robust", "quantile")
SCALERS = {"standard": StandardScaler, "robust": RobustScaler}
K = 16


@pytest.fixture(scope="module")
def tracks(spark: SparkSession) -> pd.DataFrame:
    """Silver rows with their split; instrumentalness, popularity and key partly missing (key -1)."""
    pdf = silver_pandas(n_per_genre=120, seed=3)
    pdf.loc[pdf.index % 9 == 0, "instrumentalness"] = np.nan
    for column in ("popularity", "key", "year"):
        pdf[column] = pd.array(pdf[column], dtype="Int32")
    pdf.loc[pdf.index % 5 < 2, "popularity"] = pd.NA  # 40 % missing
    pdf.loc[pdf.index % 13 == 0, "key"] = -1  # Spotify's "no key detected"
    pdf.loc[pdf.index % 17 == 0, "key"] = pd.NA
    pdf["instrumentalness"] = pdf["instrumentalness"].round(1)  # ties between quantile knots
    split = assign_split(silver_frame(spark, pdf), SplitSettings()).select("track_id", "split")
    return pdf.merge(split.toPandas(), on="track_id").sort_values("track_id", ignore_index=True)


def _silver(spark: SparkSession, tracks: pd.DataFrame) -> DataFrame:
    return assign_split(silver_frame(spark, tracks.drop(columns="split")), SplitSettings())


def _fit(spark: SparkSession, tracks: pd.DataFrame, method: str, **options: object) -> FitResult:
    train = _silver(spark, tracks).where("split = 'train'")
    return fit_transform(train, scaler=method, quantiles=K, **options)  # type: ignore[arg-type]


def _present(values: pd.Series, feature: str) -> np.ndarray:
    x = values.to_numpy(dtype="float64", na_value=np.nan)
    if feature == "key":
        x = np.where((x >= 0) & (x < 12), x, np.nan)
    return x[~np.isnan(x)]


def _expected_knots(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train quantiles (lower value, as percentile_approx) -> normal quantiles, ties averaged."""
    p = np.array(quantile_probabilities(K))
    frame = pd.DataFrame(
        {"x": np.quantile(values, p, method="inverted_cdf"), "z": norm.ppf(p)}
    ).groupby("x")["z"]
    means = frame.mean()
    return means.index.to_numpy(), means.to_numpy()


@pytest.mark.parametrize("method", METHODS)
def test_fit_equals_an_independent_computation_on_the_train_rows(
    spark: SparkSession, tracks: pd.DataFrame, method: str
) -> None:
    fitted = _fit(spark, tracks, method)
    transform = fitted.transform
    train = tracks[tracks.split == "train"]
    assert transform.names == list(MODEL_FEATURE_NAMES)  # every one present in >= 50 %
    for feature in CONTINUOUS:
        values = _present(train[feature], feature)
        got = transform.feature(feature)
        assert got.kind == "continuous" and got.method == method
        if method == "quantile":
            xs, zs = _expected_knots(values)
            np.testing.assert_allclose(got.knots_x, xs, rtol=0, atol=0)
            np.testing.assert_allclose(got.knots_z, zs, rtol=1e-12, atol=1e-12)
            assert got.fill == np.quantile(values, 0.5, method="inverted_cdf")
        else:
            reference = SCALERS[method]().fit(values.reshape(-1, 1))
            center = reference.mean_ if method == "standard" else reference.center_
            np.testing.assert_allclose([got.center, got.fill], [center[0]] * 2, rtol=1e-12)
            np.testing.assert_allclose(got.scale, reference.scale_[0], rtol=1e-12)
        assert got.present == pytest.approx(len(values) / len(train), abs=1e-15)
        assert got.indicator == (len(values) < len(train))
    key, mode = transform.feature("key"), transform.feature("mode")
    assert key.fill == pd.Series(_present(train["key"], "key")).mode().min() and key.indicator
    assert mode.fill == train["mode"].mode().min() and not mode.indicator
    assert [f for f in transform.names if transform.feature(f).indicator] == [
        "instrumentalness",
        "popularity",
        "key",
    ]
    assert transform.outputs[-7:] == [
        "popularity",
        "popularity_missing",
        "year",
        "key_sin",
        "key_cos",
        "key_missing",
        "mode",
    ]


def _independent_inputs(transform: FeatureTransform, frame: pd.DataFrame) -> np.ndarray:
    """The inputs computed from the fitted numbers with numpy alone (np.interp for quantiles)."""
    columns = []
    for fitted in transform.features:
        x = frame[fitted.name].to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(x) | ((x < 0) | (x >= 12) if fitted.name == "key" else False)
        x = np.where(missing, fitted.fill, x)
        if fitted.name == "key":
            columns += [np.sin(2 * np.pi * x / 12), np.cos(2 * np.pi * x / 12)]
        elif fitted.name == "mode":
            columns.append(np.where(x == 1, 1.0, -1.0))
        elif fitted.method == "quantile":
            columns.append(np.interp(x, fitted.knots_x, fitted.knots_z))
        else:
            columns.append((x - fitted.center) / fitted.scale)
        if fitted.indicator:
            columns.append(missing.astype(float))
    return np.column_stack(columns)


@pytest.mark.parametrize("method", METHODS)
def test_spark_and_numpy_applications_equal_the_independent_computation(
    spark: SparkSession, tracks: pd.DataFrame, method: str
) -> None:
    transform = _fit(spark, tracks, method).transform
    silver = _silver(spark, tracks)
    spark_inputs = np.array(
        apply_transform(silver, transform, output_col="x")
        .orderBy("track_id")
        .select("x")
        .toPandas()["x"]
        .tolist()
    )
    numpy_inputs = transform.apply(tracks)
    expected = _independent_inputs(transform, tracks)
    assert spark_inputs.shape == numpy_inputs.shape == (len(tracks), len(transform.outputs))
    np.testing.assert_allclose(spark_inputs, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(numpy_inputs, expected, rtol=1e-12, atol=1e-12)
    if method == "standard":  # scikit-learn's own transform, missing values at the train mean
        train = tracks[tracks.split == "train"]
        reference = StandardScaler().fit(train[["tempo", "instrumentalness"]])
        scaled = reference.transform(tracks[["tempo", "instrumentalness"]])
        columns = [transform.outputs.index(c) for c in ("tempo", "instrumentalness")]
        np.testing.assert_allclose(spark_inputs[:, columns], np.nan_to_num(scaled), atol=1e-12)


def test_the_numpy_application_takes_plain_lists_with_none(
    spark: SparkSession, tracks: pd.DataFrame
) -> None:
    transform = _fit(spark, tracks, "quantile").transform
    rows = tracks.head(12)
    as_lists = {
        name: [None if pd.isna(v) else v for v in rows[name].tolist()] for name in transform.names
    }
    np.testing.assert_array_equal(transform.apply(as_lists), transform.apply(rows))


def test_a_sub_vector_picks_inputs_and_without_imputation_leaves_missing_values_null(
    spark: SparkSession, tracks: pd.DataFrame
) -> None:
    transform = _fit(spark, tracks, "standard").transform
    picked = transform.select(["popularity", "key"]).continuous()  # popularity only
    assert picked.outputs == ["popularity"]
    subset = FeatureTransform(
        (picked.features[0], replace(transform.feature("key"), indicator=False))
    )
    silver = apply_transform(_silver(spark, tracks), transform)
    rows = (
        silver.select("track_id", sub_vector(transform, subset, impute=False).alias("x"))
        .orderBy("track_id")
        .select("x")
        .toPandas()["x"]
        .tolist()
    )
    assert all(len(r) == 3 for r in rows)  # popularity, key_sin, key_cos
    filled = silver.select(sub_vector(transform, subset).alias("x")).toPandas()["x"].tolist()
    assert not np.isnan(np.array(filled)).any()
    popularity = [r[0] for r in rows]
    key = tracks["key"].to_numpy(dtype="float64", na_value=np.nan)
    assert [pd.isna(v) for v in popularity] == tracks["popularity"].isna().tolist()
    assert [pd.isna(r[1]) for r in rows] == list(np.isnan(key) | (key < 0))


def test_validation_and_test_values_do_not_move_the_fit(
    spark: SparkSession, tracks: pd.DataFrame
) -> None:
    changed = tracks.copy()
    held_out = changed.split != "train"
    changed.loc[held_out, "tempo"] = 299.0
    changed.loc[held_out, "popularity"] = pd.NA
    changed.loc[held_out, "key"] = 3
    for method in METHODS:
        assert _fit(spark, changed, method).transform == _fit(spark, tracks, method).transform


def test_auto_keeps_features_present_in_enough_train_tracks(
    spark: SparkSession, tracks: pd.DataFrame
) -> None:
    sparse = tracks.copy()
    sparse.loc[sparse.index % 5 < 3, "popularity"] = pd.NA  # 60 % missing
    sparse["year"] = pd.NA
    fitted = _fit(spark, sparse, "standard")
    assert "popularity" not in fitted.transform.names and "year" not in fitted.transform.names
    assert set(fitted.left_out) == {"popularity", "year"} and fitted.left_out["year"] == 0.0
    assert fitted.left_out["popularity"] == pytest.approx(0.4, abs=0.06)
    assert "popularity" in _fit(spark, sparse, "standard", min_present=0.3).transform.names

    listed = fit_transform(
        _silver(spark, sparse).where("split = 'train'"), ["tempo", "popularity"], scaler="robust"
    )
    assert listed.transform.names == ["tempo", "popularity"] and not listed.auto
    with pytest.raises(FeatureNotFittedError, match="year"):
        fit_transform(_silver(spark, sparse).where("split = 'train'"), ["tempo", "year"])
    metadata_only = _silver(spark, sparse).where("split = 'train'").select("popularity", "year")
    with pytest.raises(NoFeatureSelectedError, match="no feature"):
        fit_transform(metadata_only, min_present=0.5)


def test_a_constant_feature_gets_scale_one_like_sklearn(spark: SparkSession) -> None:
    pdf = silver_pandas(n_per_genre=20, seed=1)
    pdf["speechiness"] = 0.25
    silver = silver_frame(spark, pdf)
    for method, scaler in SCALERS.items():
        transform = fit_transform(silver, ["speechiness", "energy"], scaler=method).transform
        assert transform.feature("speechiness").scale == scaler().fit(pdf[["speechiness"]]).scale_
        assert {tuple(r) for r in transform.apply(pdf)[:, :1]} == {(0.0,)}
    quantile = fit_transform(silver, ["speechiness"], scaler="quantile").transform
    assert quantile.feature("speechiness").knots_x == (0.25,)
    np.testing.assert_allclose(quantile.apply(pdf), 0.0, atol=1e-12)


def test_key_is_a_circle_and_its_out_of_range_values_are_missing() -> None:
    key = FeatureTransform.from_records(
        [
            {
                "name": "key",
                "kind": "cyclic",
                "method": "sin-cos",
                "fill": 2.0,
                "indicator": True,
                "present": 0.9,
                "period": 12.0,
            }
        ]
    )
    inputs = key.apply({"key": [11, 0, 1, -1, None, 2]})
    assert math.dist(inputs[0, :2], inputs[1, :2]) == pytest.approx(
        math.dist(inputs[1, :2], inputs[2, :2])
    )
    np.testing.assert_allclose(inputs[3:, :2], [inputs[5, :2]] * 3)  # filled with key 2
    assert inputs[:, 2].tolist() == [0, 0, 0, 1, 1, 0]


def test_the_transform_round_trips_through_gold_normalizer_and_json(
    spark: SparkSession, tracks: pd.DataFrame
) -> None:
    transform = _fit(spark, tracks, "quantile").transform
    table = transform_table(spark, transform, version=4)
    assert table.count() == len(transform.features)
    assert read_transform(table) == transform
    assert FeatureTransform.from_dict(transform.to_dict()) == transform
    assertDataFrameEqual(
        table.select("position", "feature", "inputs").orderBy("position"),
        spark.createDataFrame(
            [(i, f.name, f.outputs) for i, f in enumerate(transform.features)],
            "position int, feature string, inputs array<string>",
        ),
    )


def test_named_errors(spark: SparkSession, tracks: pd.DataFrame) -> None:
    transform = _fit(spark, tracks, "standard").transform
    with pytest.raises(FeatureNotInTransformError, match="bogus"):
        transform.select(["tempo", "bogus"])
    with pytest.raises(MissingFeatureColumnError, match="tempo"):
        apply_transform(_silver(spark, tracks).drop("tempo"), transform)
    with pytest.raises(MissingFeatureColumnError, match="tempo"):
        transform.apply(tracks.drop(columns="tempo"))
