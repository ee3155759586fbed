"""Idempotence: every stage run again on the same input leaves every table's content unchanged.

The whole pipeline is re-run on a copy of the shared ``pipeline_run`` lake
(the original stays as other tests expect it). Training is deterministic, so
the re-train reproduces the registered model bit for bit; registration
recognises it by fingerprint and re-uses version 1, which keeps gold.models,
gold.scored, gold.confusion and gold.evaluation identical too.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from genre_spark.config import Settings
from genre_spark.lake import Lake, content_hash
from genre_spark.lake.catalog import (
    GOLD_CONFUSION,
    GOLD_EVALUATION,
    GOLD_MODELS,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_PREPARE_MANIFEST,
    GOLD_SCORED,
    SILVER_TRACKS,
)
from genre_spark.model.registry import load_model
from genre_spark.pipeline import PipelineResult, run_pipeline

#: Tables whose ``version`` column is lineage, not content: the silver.tracks
#: version the fit read, or (the manifest) the version of each prepare table.
#: A re-run commits identical tables as new versions, so these ids move with
#: them while every value stays the same.
LINEAGE = (GOLD_NORMALIZER, GOLD_OUTLIER_PARAMS, GOLD_PREPARE_MANIFEST)


def content(lake: Lake, name: str) -> str:
    """Lake.content_hash, lineage columns left out (see LINEAGE)."""
    df = lake.read(name)
    return content_hash(df.drop("version") if name in LINEAGE else df)


def test_content_hash_covers_map_columns_whatever_their_key_order(spark: SparkSession) -> None:
    """gold.scored has a map column, which Spark refuses to hash as it is."""
    schema = T.StructType(
        [
            T.StructField("id", T.StringType()),
            T.StructField("p", T.MapType(T.StringType(), T.DoubleType())),
        ]
    )
    one = spark.createDataFrame([("a", {"rock": 0.7, "jazz": 0.3})], schema)
    same = spark.createDataFrame([("a", {"jazz": 0.3, "rock": 0.7})], schema)
    other = spark.createDataFrame([("a", {"jazz": 0.7, "rock": 0.3})], schema)
    assert content_hash(one) == content_hash(same) != content_hash(other)


@pytest.mark.slow
def test_rerunning_every_stage_leaves_every_table_identical(
    pipeline_run: tuple[Settings, Lake, PipelineResult],
    pipeline_copy: tuple[Settings, Lake],
) -> None:
    _, _, first = pipeline_run
    # The copy's own experiment keeps the re-run's artifacts under it; the model
    # registry, where the fingerprints are, is the copied one.
    copy, lake = pipeline_copy
    before = {info.name: (info.version, content(lake, info.name)) for info in lake.tables()}
    assert set(before) >= {GOLD_MODELS, GOLD_SCORED, GOLD_CONFUSION, GOLD_EVALUATION}

    second = run_pipeline(lake, copy)

    after = {info.name: content(lake, info.name) for info in lake.tables()}
    assert after == {name: h for name, (_, h) in before.items()}
    silver = lake.version(SILVER_TRACKS)
    assert silver > before[SILVER_TRACKS][0]  # ingest did commit again (same content)
    for name in LINEAGE:  # the fit ids now name the new silver version
        assert [r[0] for r in lake.read(name).select("version").distinct().collect()] == [silver]
    assert lake.version(GOLD_MODELS) == before[GOLD_MODELS][0]  # not even a new commit
    assert second.state.model_version == first.state.model_version == "1"
    summary = {s.name: s.summary for s in second.stages}
    assert "existing version re-used" in summary["train"]
    versions = MlflowClient(copy.tracking_uri).search_model_versions(
        f"name='{copy.mlflow.model_name}'"
    )
    assert [str(v.version) for v in versions] == ["1"]
    assert second.state.report is not None and second.state.report.exists()
    assert_same_weights(copy, second.state.mlflow_run_id)


def assert_same_weights(settings: Settings, rerun_id: Any) -> None:
    """The re-run's own logged model equals registered version 1, tensor for tensor."""
    import mlflow

    registered = load_model(settings, "1").model.state_dict()
    (model,) = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{rerun_id}'", output_format="list"
    )
    pyfunc = mlflow.pyfunc.load_model(model.model_uri).unwrap_python_model()
    logged = pyfunc.classifier.network.state_dict()
    assert registered.keys() == logged.keys()
    assert all(torch.equal(registered[k], logged[k]) for k in registered)
