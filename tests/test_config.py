"""Settings: layering order and errors that name the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from genre_spark.config import ConfigError, load_settings


def test_defaults_come_from_base_yaml() -> None:
    settings = load_settings(environ={})
    assert settings.lake == "./lake"
    assert settings.prepare.scaler == "quantile"
    assert settings.features == "auto" and settings.feature_list is None
    assert len(settings.ingest.synthetic.genres) == 10


def test_layers_apply_in_order(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("train: {epochs: 3, batch_size: 64}\nprepare: {scaler: robust}\n")
    env = {"GENRE_TRAIN__EPOCHS": "7", "GENRE_LAKE": "/data/lake"}
    settings = load_settings(config, overrides={"train.batch_size": 32}, environ=env)
    assert settings.train.epochs == 7  # env beats the file
    assert settings.train.batch_size == 32  # CLI beats everything
    assert settings.prepare.scaler == "robust"  # file beats base
    assert settings.lake == "/data/lake"


def test_bad_choice_names_key_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(overrides={"prepare.scaler": "minmax"}, environ={})
    message = str(err.value)
    assert "prepare.scaler" in message and "'standard'" in message and "'quantile'" in message
    assert "minmax" in message


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochz: unknown setting"):
        load_settings(overrides={"train.epochz": 3}, environ={})


def test_out_of_range_and_inconsistent_values() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_settings(environ={"GENRE_TRAIN__EPOCHS": "0"})
    with pytest.raises(ConfigError, match=r"must be 1\.0"):
        load_settings(overrides={"prepare.split.train": 0.9}, environ={})


def test_unknown_feature_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown feature.*bogus.*allowed"):
        load_settings(overrides={"features": ["energy", "bogus"]}, environ={})


def test_feature_subset_keeps_canonical_order() -> None:
    settings = load_settings(
        overrides={"features": ["mode", "year", "valence", "tempo"]}, environ={}
    )
    assert settings.features == settings.feature_list == ["tempo", "valence", "year", "mode"]


def test_missing_config_file_and_bad_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="profile 'moon'"):
        load_settings(environ={"GENRE_PROFILE": "moon"})
