"""Registry look-ups read the store of the lake they are given, not the process-wide MLflow URI.

One process often sees several lakes (a notebook, a long-lived driver, this test
session); MLflow's default client follows whichever lake last called
``use_tracking``, so a look-up through it would answer for the wrong lake.
"""

from __future__ import annotations

from pathlib import Path

from genre_spark.config import Settings, load_settings
from genre_spark.model.registry import (
    aliases,
    client,
    newest_version,
    resolve_model,
    set_alias,
    use_tracking,
)


def _lake_with_versions(root: Path, versions: int, champion: str) -> Settings:
    """A lake whose registry holds ``versions`` versions of the model, ``champion`` aliased."""
    settings = load_settings(overrides={"lake": str(root / "lake")}, environ={})
    use_tracking(settings)
    store, name = client(settings), settings.mlflow.model_name
    store.create_registered_model(name)
    source = root / "artifacts"
    source.mkdir()
    for _ in range(versions):
        store.create_model_version(name, source.as_uri())
    set_alias(settings, "champion", champion)
    return settings


def test_each_lake_answers_from_its_own_registry(tmp_path: Path) -> None:
    first = _lake_with_versions(tmp_path / "a", versions=1, champion="1")
    second = _lake_with_versions(tmp_path / "b", versions=3, champion="2")
    # MLflow's process-wide URI now points at the second lake's store.
    assert aliases(first) == {"champion": "1"}
    assert newest_version(first) == "1"
    assert resolve_model(first).version == "1"
    assert aliases(second) == {"champion": "2"}
    assert newest_version(second) == "3"

    set_alias(first, "challenger", "1")  # writes go to the given lake's store too
    assert aliases(first) == {"champion": "1", "challenger": "1"}
    assert aliases(second) == {"champion": "2"}
