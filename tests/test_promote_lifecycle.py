"""Acceptance: a worse retrain becomes @challenger, is not promoted without --force, and scoring
keeps using the champion; --force promotes it and says so wherever promotions are recorded."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from pyspark.sql import functions as F
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_MODELS, GOLD_PROMOTIONS, GOLD_SCORED
from genre_spark.model import promote as gate
from genre_spark.model import train as training
from genre_spark.model.registry import aliases, resolve_model

runner = CliRunner()


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [
            *args,
            "--lake",
            settings.lake,
            "--set",
            f"mlflow.experiment={settings.mlflow.experiment}",
        ],
    )
    return result.exit_code, result.output


def _scored_at(lake: Lake) -> dict[str, object]:
    rows = lake.read(GOLD_SCORED).groupBy("model_version").agg(F.max("scored_at").alias("t"))
    return {r["model_version"]: r["t"] for r in rows.collect()}


@pytest.mark.slow
def test_a_worse_retrain_does_not_replace_the_champion(
    pipeline_copy: tuple[Settings, Lake],
) -> None:
    settings, lake = pipeline_copy
    assert aliases(settings) == {"champion": "1"}  # the pipeline promoted its first version
    champion_f1 = gate.val_macro_f1(settings, "1")

    # A crippled retrain: one epoch at a learning rate that barely moves the weights.
    crippled = settings.train.model_copy(update={"epochs": 1, "learning_rate": 1e-6})
    worse = training.run(lake, settings, train=crippled)
    assert worse.version == "2" and not worse.reused
    assert worse.result.metrics["val_macro_f1"] < champion_f1  # the premise: it is worse
    assert aliases(settings) == {"champion": "1", "challenger": "2"}

    code, output = _cli(settings, "promote")
    assert code == 1, output
    assert "version 2 not promoted" in output and "--force" in output
    assert aliases(settings) == {"champion": "1", "challenger": "2"}

    before = _scored_at(lake)
    code, output = _cli(settings, "score")
    assert code == 0, output
    assert "model version 1" in output
    after = _scored_at(lake)
    assert "2" not in after and after["1"] > before["1"]  # the champion scored again, not v2
    assert resolve_model(settings).version == "1"

    code, output = _cli(settings, "promote", "--force")
    assert code == 0 and "promoted to @champion with --force" in output, output
    assert aliases(settings) == {"champion": "2"}
    models = {r["version"]: list(r["aliases"]) for r in lake.read(GOLD_MODELS).collect()}
    assert models == {"1": [], "2": ["champion"]}
    version = MlflowClient().get_model_version(settings.mlflow.model_name, "2")
    assert version.tags[gate.OUTCOME_TAG] == gate.FORCED
    assert "with --force" in version.description
    decisions = {
        (r["version"], r["previous_champion"], r["outcome"])
        for r in lake.read(GOLD_PROMOTIONS).collect()
    }
    assert decisions == {("1", None, "promoted"), ("2", "1", "refused"), ("2", "1", "forced")}

    # The better version passes the gate on its own numbers.
    code, output = _cli(settings, "promote", "--version", "1")
    assert code == 0 and "version 1 promoted to @champion" in output, output
