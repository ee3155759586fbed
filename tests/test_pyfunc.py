"""The champion through MLflow's own loaders equals what ``genre score`` wrote to gold.scored.

One small lake: silver-like tracks with gaps (missing values, key -1), a
quantile-scaled transform, a random CNN promoted to @champion and scored by
``score.run``. Then ``mlflow.pyfunc.spark_udf``, ``mlflow.pyfunc.load_model``
and the ``mlflow models predict`` CLI each read ``models:/genre-cnn@champion``
with raw columns and must give gold.scored's labels exactly and its
probabilities to 1e-5.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from scoring_data import GENRES, catalogue, register_cnn
from subprocesses import job_env

from genre_spark import score
from genre_spark.config import Settings, load_settings
from genre_spark.features.spark import fit_transform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_SCORED, SILVER_TRACKS
from genre_spark.model.promote import promote
from genre_spark.model.pyfunc import PREDICTED, probability_column
from genre_spark.model.registry import CHAMPION, aliases, mark_challenger, use_tracking

N_TRACKS = 120
PROBABILITIES = [probability_column(g) for g in GENRES]


@pytest.fixture(scope="module")
def champion(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, Lake, str]:
    """A lake whose @champion has scored silver.tracks into gold.scored."""
    root = Path(tmp_path_factory.mktemp("pyfunc"))
    settings = load_settings(
        overrides={"lake": str(root / "lake"), "score.batch_size": 32}, environ={}
    )
    lake = Lake(spark, settings.lake, settings.engine)
    silver = catalogue(spark, N_TRACKS, seed=2)
    lake.write(silver.repartition(2), SILVER_TRACKS)
    transform = fit_transform(silver.where("track_id is not null"), scaler="quantile").transform
    version, _ = register_cnn(lake, settings, seed=7, transform=transform)
    mark_challenger(lake, settings, version)
    assert promote(lake, settings).promoted
    assert score.run(lake, settings).model_version == version == aliases(settings)[CHAMPION]
    return settings, lake, version


def _uri(settings: Settings) -> str:
    use_tracking(settings)  # another test module may have pointed MLflow elsewhere
    return f"models:/{settings.mlflow.model_name}@{CHAMPION}"


def _raw(lake: Lake) -> pd.DataFrame:
    """silver.tracks' scorable rows, raw columns as stored (nullable ints arrive as floats)."""
    return lake.read(SILVER_TRACKS).where("track_id is not null").toPandas()


def _assert_equals_gold(lake: Lake, version: str, predictions: pd.DataFrame) -> None:
    """``predictions`` (track_id, predicted_genre, probability_<genre>) against gold.scored."""
    gold = (
        lake.read(GOLD_SCORED)
        .where(F.col("model_version") == version)
        .select("track_id", PREDICTED, "probabilities")
        .toPandas()
        .set_index("track_id")
    )
    got = predictions.set_index("track_id").loc[gold.index]
    assert len(predictions) == len(gold) == N_TRACKS - 1  # every track but the id-less one
    assert got[PREDICTED].tolist() == gold[PREDICTED].tolist()
    expected = np.array([[row[g] for g in GENRES] for row in gold["probabilities"]])
    np.testing.assert_allclose(got[PROBABILITIES].to_numpy(), expected, atol=1e-5, rtol=0)


def test_spark_udf_over_silver_equals_gold_scored(
    spark: SparkSession, champion: tuple[Settings, Lake, str]
) -> None:
    settings, lake, version = champion
    udf = mlflow.pyfunc.spark_udf(spark, _uri(settings), env_manager="local")
    predicted = (
        lake.read(SILVER_TRACKS)
        .where("track_id is not null")
        .select("track_id", udf().alias("p"))  # no columns named: the signature's inputs
        .select("track_id", "p.*")
    )
    assert predicted.columns == ["track_id", PREDICTED, *PROBABILITIES]
    _assert_equals_gold(lake, version, predicted.toPandas())


def test_load_model_predicts_raw_pandas_rows_as_gold_scored(
    champion: tuple[Settings, Lake, str],
) -> None:
    settings, lake, version = champion
    model = mlflow.pyfunc.load_model(_uri(settings))
    raw = _raw(lake)
    features = model.metadata.get_input_schema().input_names()
    assert "key" in features and "popularity" in features  # gaps and key -1 are exercised
    assert model.metadata.get_output_schema().input_names() == [PREDICTED, *PROBABILITIES]
    predictions = model.predict(raw[features])
    _assert_equals_gold(lake, version, predictions.assign(track_id=raw["track_id"]))
    example = model.input_example
    assert list(example.columns) == features
    assert model.predict(example)[PREDICTED].iloc[0] in GENRES


def test_mlflow_models_predict_cli_on_a_csv_gives_gold_genres(
    champion: tuple[Settings, Lake, str], tmp_path: Path
) -> None:
    settings, lake, version = champion
    uri = _uri(settings)
    features = mlflow.pyfunc.load_model(uri).metadata.get_input_schema().input_names()
    rows = _raw(lake).head(25)
    csv, out = tmp_path / "small.csv", tmp_path / "predictions.json"
    rows[features].to_csv(csv, index=False)  # year, key, mode as integers; popularity with gaps
    command = [sys.executable, "-m", "mlflow", "models", "predict", "-m", uri]
    command += ["-i", str(csv), "-o", str(out), "-t", "csv", "--env-manager", "local"]
    done = subprocess.run(
        command,
        env=job_env(MLFLOW_TRACKING_URI=settings.tracking_uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = pd.DataFrame(json.loads(out.read_text())["predictions"])
    gold = lake.read(GOLD_SCORED).where(F.col("model_version") == version).toPandas()
    expected = gold.set_index("track_id").loc[rows["track_id"], PREDICTED]
    assert predictions[PREDICTED].tolist() == expected.tolist()
