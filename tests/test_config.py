"""Settings: layering order and errors that name the key and the allowed values."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path, PurePosixPath

import pytest

from genre_spark.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


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


def test_defaults_are_packaged_and_do_not_depend_on_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The defaults are package data (declared in pyproject, so a wheel has them) and read the
    same from a directory with no conf/ as from the checkout."""
    here = load_settings(environ={})
    packaged = resources.files("genre_spark") / "resources" / "conf"
    assert {p.name for p in packaged.iterdir()} >= {"base.yaml", "local.yaml", "cluster.yaml"}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = declared["package-data"]["genre_spark"]
    # setuptools' globs: '*' stays inside one folder (fnmatch's would cross '/').
    assert any(PurePosixPath("resources/conf/base.yaml").match(p) for p in patterns)
    monkeypatch.chdir(tmp_path)
    elsewhere = load_settings(environ={})
    assert elsewhere == here
    # A value only the packaged cluster profile has: the files were read, not the model's defaults.
    cluster = load_settings(environ={"GENRE_PROFILE": "cluster"})
    assert cluster.lake == "s3a://my-bucket/genre-lake" != Settings().lake


def test_conf_folder_overrides_the_packaged_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packaged base < packaged profile < the user's conf/base.yaml < the user's conf/<profile>.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "base.yaml").write_text(
        "train: {epochs: 5}\nspark: {shuffle_partitions: 3}\n"
    )
    (tmp_path / "conf" / "cluster.yaml").write_text("spark: {shuffle_partitions: 16}\n")
    (tmp_path / "conf" / "mine.yaml").write_text("prepare: {scaler: robust}\n")

    cluster = load_settings(environ={"GENRE_PROFILE": "cluster"})
    assert cluster.train.epochs == 5  # the user's base
    assert cluster.spark.shuffle_partitions == 16  # the user's profile beats the user's base
    assert cluster.train.local_mode is False  # the packaged profile, not overridden
    assert load_settings(environ={}).spark.shuffle_partitions == 3
    assert load_settings(environ={"GENRE_PROFILE": "mine"}).prepare.scaler == "robust"

    monkeypatch.chdir(ROOT)
    moved = load_settings(environ={"GENRE_CONF_DIR": str(tmp_path / "conf")})
    assert moved.train.epochs == 5
