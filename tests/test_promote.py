"""Champion/challenger: the one model resolution, the promotion gate, and how decisions are recorded.

Versions are registered directly (small untrained CNNs with chosen validation
scores), so the gate is checked on known numbers without training; the
end-to-end path (train, promote, worse retrain, score) is in test_promote_lifecycle.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pyspark.sql import SparkSession

from genre_spark.config import load_settings
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_MODELS, GOLD_PROMOTIONS
from genre_spark.model import promote as gate
from genre_spark.model.cnn import GenreCNN
from genre_spark.model.registry import (
    ModelNotFoundError,
    aliases,
    client,
    mark_challenger,
    register_model,
    resolve_model,
)
from genre_spark.schema import FEATURES


def _register(lake: Lake, settings: Any, seed: int, f1: float) -> str:
    torch.manual_seed(seed)
    model = GenreCNN(n_features=10, n_genres=3, channels=4, depth=1, kernel_size=3, dropout=0.0)
    version = register_model(
        lake,
        settings,
        model.eval(),
        params={"seed": seed},
        metrics={"val_accuracy": f1, "val_macro_f1": f1},
        genres=["jazz", "pop", "rock"],
        transform=FeatureTransform.standard({f: (0.0, 1.0) for f in FEATURES}),
    ).version
    mark_challenger(lake, settings, version)
    return version


def _gold_aliases(lake: Lake) -> dict[str, list[str]]:
    return {r["version"]: sorted(r["aliases"]) for r in lake.read(GOLD_MODELS).collect()}


@pytest.fixture(scope="module")
def registry(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = load_settings(
        overrides={"lake": str(tmp_path_factory.mktemp("promote") / "lake")}, environ={}
    )
    return {"settings": settings, "lake": Lake(spark, settings.lake)}


@pytest.fixture(scope="module")
def with_champion(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A lake of its own whose registry has a champion, no challenger and no training snapshot.

    Built here rather than left behind by the lifecycle test, so the tests
    that need it pass in any order.
    """
    settings = load_settings(
        overrides={"lake": str(tmp_path_factory.mktemp("champion") / "lake")}, environ={}
    )
    lake = Lake(spark, settings.lake)
    _register(lake, settings, 1, 0.70)
    assert gate.promote(lake, settings).outcome == gate.PROMOTED
    return {"settings": settings, "lake": lake}


@pytest.mark.parametrize(
    ("candidate", "champion", "margin", "force", "outcome"),
    [
        (0.70, 0.70, 0.0, False, gate.PROMOTED),  # "at least" the champion's
        (0.69, 0.70, 0.0, False, gate.REFUSED),
        (0.69, 0.70, 0.0, True, gate.FORCED),
        (0.72, 0.70, 0.05, False, gate.REFUSED),  # better, but not by the margin
        (0.69, 0.70, -0.02, False, gate.PROMOTED),  # a negative margin allows leeway
        (None, 0.70, 0.0, False, gate.REFUSED),  # unknown score: never promoted silently
    ],
)
def test_the_gate(
    candidate: float | None, champion: float, margin: float, force: bool, outcome: str
) -> None:
    assert gate.decide(candidate, champion, margin, force)[0] == outcome


def test_lifecycle_on_the_registry(registry: dict[str, Any]) -> None:
    settings, lake = registry["settings"], registry["lake"]
    with pytest.raises(ModelNotFoundError, match="run `genre train` first"):
        resolve_model(settings)

    first = _register(lake, settings, 1, 0.70)
    # No champion yet: the newest version, and the caller is told so.
    chosen = resolve_model(settings)
    assert (chosen.version, chosen.fallback) == (first, True)
    assert "no @champion" in chosen.chosen_by
    assert resolve_model(settings, "@challenger").version == first

    decision = gate.promote(lake, settings)
    assert (decision.outcome, decision.previous_champion) == (gate.PROMOTED, None)
    assert aliases(settings) == {"champion": first}
    assert resolve_model(settings).fallback is False
    with pytest.raises(ModelNotFoundError, match="no @challenger"):
        resolve_model(settings, "@challenger")

    worse = _register(lake, settings, 2, 0.60)
    better = _register(lake, settings, 3, 0.75)  # the challenger moves to the newest
    assert aliases(settings) == {"champion": first, "challenger": better}
    assert _gold_aliases(lake) == {first: ["champion"], worse: [], better: ["challenger"]}
    assert resolve_model(settings, "latest").version == better
    assert resolve_model(settings, worse).version == worse

    refused = gate.promote(lake, settings, worse)
    assert refused.outcome == gate.REFUSED and refused.champion_f1 == pytest.approx(0.70)
    assert aliases(settings)["champion"] == first
    gate.promote(lake, settings, worse)  # the same refusal again: its row is replaced
    assert gate.promote(lake, settings, margin=0.1).outcome == gate.REFUSED  # 0.75 < 0.70 + 0.1

    promoted = gate.promote(lake, settings)
    assert promoted.outcome == gate.PROMOTED
    assert aliases(settings) == {"champion": better}  # the challenger became the champion
    assert resolve_model(settings).version == better

    forced = gate.promote(lake, settings, worse, force=True)
    assert forced.outcome == gate.FORCED and forced.previous_champion == better
    assert _gold_aliases(lake) == {first: [], worse: ["champion"], better: []}
    tags = client(settings).get_model_version(settings.mlflow.model_name, worse).tags
    assert tags[gate.OUTCOME_TAG] == gate.FORCED and "below" in tags[gate.REASON_TAG]
    assert gate.promote(lake, settings, worse).outcome == gate.UNCHANGED

    rows = sorted(
        (r["version"], r["previous_champion"], r["outcome"])
        for r in lake.read(GOLD_PROMOTIONS).collect()
    )
    assert rows == sorted(
        [
            (first, None, gate.PROMOTED),
            (worse, first, gate.REFUSED),
            (better, first, gate.REFUSED),
            (better, first, gate.PROMOTED),
            (worse, better, gate.FORCED),
        ]
    )


def test_unknown_references_are_clear_errors(with_champion: dict[str, Any]) -> None:
    settings = with_champion["settings"]
    with pytest.raises(ModelNotFoundError, match="unknown model reference 'best'"):
        resolve_model(settings, "best")
    with pytest.raises(ModelNotFoundError, match="has no version '99'"):
        resolve_model(settings, "99")


def test_cli_says_what_is_missing(with_champion: dict[str, Any]) -> None:
    """A champion, no challenger, no training snapshot in any run: each command says what is missing."""
    from typer.testing import CliRunner

    from genre_spark.cli import app

    settings = with_champion["settings"]
    runner = CliRunner()
    promoted = runner.invoke(app, ["promote", "--lake", settings.lake])
    assert promoted.exit_code == 1 and "no @challenger" in promoted.output, promoted.output
    drifted = runner.invoke(app, ["drift", "--lake", settings.lake])
    assert drifted.exit_code == 1, drifted.output
    assert "has no training snapshot" in drifted.output and "Traceback" not in drifted.output
    unknown = runner.invoke(app, ["score", "--model-version", "best", "--lake", settings.lake])
    assert unknown.exit_code == 1 and "unknown model reference 'best'" in unknown.output
