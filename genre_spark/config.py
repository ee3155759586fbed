"""Settings: packaged defaults < ``conf/`` overrides < ``--config FILE`` < ``GENRE_*`` env < CLI.

The defaults and the named profiles (``base.yaml``, ``local.yaml``,
``cluster.yaml``) are package data in ``genre_spark/resources/conf/``, so an
installed wheel has the same defaults as a checkout, whatever the current
directory. A ``conf/`` folder in the current directory (or ``GENRE_CONF_DIR``)
holds the user's overrides: its ``base.yaml`` and ``<profile>.yaml`` are
layered over the packaged ones, in the order packaged base < packaged profile
< user base < user profile (``GENRE_PROFILE``, default ``local``).

One validated object (pydantic) that every stage receives. A bad value fails
at load time with an error naming the key and, where the choices are fixed,
the allowed values. Environment variables use ``__`` for nesting:
``GENRE_LAKE=/data/lake``, ``GENRE_TRAIN__EPOCHS=5``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genre_spark.errors import UsageError
from genre_spark.schema import validate_features

#: The packaged defaults and profiles.
DEFAULTS_DIR = Path(__file__).resolve().parent / "resources" / "conf"
#: The user's overrides, relative to the current directory unless GENRE_CONF_DIR says where.
USER_CONF_DIR = "conf"
ENV_PREFIX = "GENRE_"
#: GENRE_* variables that choose where settings come from, not settings themselves.
LAYER_VARIABLES = frozenset({"GENRE_PROFILE", "GENRE_CONF_DIR"})

DEFAULT_GENRES = (
    "pop",
    "rock",
    "hip-hop",
    "electronic",
    "jazz",
    "classical",
    "country",
    "metal",
    "r&b",
    "latin",
)


class ConfigError(UsageError):
    """A setting that is missing, unknown or out of its allowed values."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkSettings(_Section):
    master: str = "local[*]"
    app_name: str = "genre-spark"
    shuffle_partitions: int = Field(8, ge=1)
    driver_memory: str = "4g"
    conf: dict[str, str] = Field(default_factory=dict)
    delta_jars: str | None = Field(
        None, description="folder of Delta's connector jars; None: jvm/delta/jars (make setup)"
    )


class SyntheticSettings(_Section):
    tracks: int = Field(5500, ge=1, description="rows in, bad rows included")
    genres: list[str] = Field(default_factory=lambda: list(DEFAULT_GENRES), min_length=2)
    seed: int = 42
    bad_fraction: float = Field(0.02, ge=0.0, le=0.5)
    outlier_fraction: float = Field(0.01, ge=0.0, le=0.5)
    partitions: int = Field(4, ge=1)


class SpotifySettings(_Section):
    """Spotify Web API ingest: endpoints, audio-feature provider, rate-limit and retry policy.

    Credentials are deliberately not settings: they come only from the
    environment or a ``.env`` file, so they never land in a config file or a log.
    Base URLs are settings so tests (and proxies) can point the ingester elsewhere.
    """

    genres: list[str] = Field(default_factory=lambda: list(DEFAULT_GENRES), min_length=1)
    per_genre: int = Field(500, ge=1, description="tracks requested per genre")
    playlists: dict[str, list[str]] = Field(
        default_factory=dict, description="genre -> ids of playlists the app's user owns"
    )
    market: str | None = None
    api_base: str = "https://api.spotify.com"
    token_url: str = "https://accounts.spotify.com/api/token"
    provider: Literal["auto", "spotify", "reccobeats"] = "auto"
    provider_base: str = "https://api.reccobeats.com"
    dotenv: str = Field(".env", description="file read for SPOTIPY_CLIENT_ID/SECRET if not in env")
    search_limit: int = Field(10, ge=1, le=10, description="Spotify's maximum since 2026: 10")
    features_batch: int = Field(100, ge=1, le=100, description="ids per Spotify /audio-features")
    provider_batch: int = Field(40, ge=1, le=40, description="ids per provider request")
    checkpoint_batch: int = Field(200, ge=1, description="responses per bronze commit")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(15.0, gt=0)
    max_attempts: int = Field(
        6, ge=1, description="requests sent per call at most (the only retry layer)"
    )
    backoff_s: float = Field(
        1.0, ge=0.0, description="first 5xx/timeout backoff, doubled per retry"
    )
    backoff_max_s: float = Field(60.0, ge=0.0)
    max_retry_after_s: float = Field(
        120.0, ge=0.0, description="longest Retry-After honoured; beyond it: checkpoint and stop"
    )


class IngestSettings(_Section):
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    spotify: SpotifySettings = Field(default_factory=SpotifySettings)


class ValidateSettings(_Section):
    allowed_genres: list[str] | None = Field(
        None, description="labels accepted into silver; None accepts any non-empty label"
    )
    genre_map: str | None = Field(
        "default", description="'default' (packaged map), a YAML path, or 'none' (labels as given)"
    )
    top_genres: int | None = Field(None, ge=1, description="keep the N largest genres; None: all")
    cap_per_genre: int | None = Field(None, ge=1, description="at most this many tracks per genre")
    min_per_genre: int = Field(500, ge=0, description="genres below this are reported as short")


class SplitSettings(_Section):
    train: float = Field(0.7, gt=0.0, lt=1.0)
    validation: float = Field(0.15, gt=0.0, lt=1.0)
    test: float = Field(0.15, gt=0.0, lt=1.0)
    salt: str = "genre-spark"

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSettings:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + test must be 1.0, got {total}")
        return self


class DbscanSettings(_Section):
    eps: float | None = Field(None, gt=0.0, description="None: k-distance heuristic")
    min_samples: int | None = Field(None, ge=1, description="None: 2 x number of features")
    k_distance_quantile: float = Field(0.98, gt=0.0, lt=1.0)
    sample_size: int = Field(20000, ge=100, description="points sampled for the eps heuristic")
    slabs: int = Field(8, ge=1)


class PrepareSettings(_Section):
    split: SplitSettings = Field(default_factory=SplitSettings)
    scaler: Literal["standard", "robust", "quantile"] = Field(
        "quantile", description="continuous features: standard, robust, or quantile-normal"
    )
    quantiles: int = Field(64, ge=2, le=1024, description="knots of the quantile-normal map")
    min_present: float = Field(
        0.5, gt=0.0, le=1.0, description="features: auto keeps those present in this share of train"
    )
    dbscan: DbscanSettings = Field(default_factory=DbscanSettings)
    playlist_size: int = Field(50, ge=1)


ReferenceModel = Literal["logistic_regression", "random_forest", "xgboost"]
REFERENCE_MODELS: tuple[ReferenceModel, ...] = ("logistic_regression", "random_forest", "xgboost")


class ReferenceSettings(_Section):
    """Reference models trained beside the CNN on the same split (``genre references``).

    Logistic regression and random forest are Spark MLlib; XGBoost runs through
    its Spark estimator on ``xgb_num_workers`` executors, boosting until the
    validation loss has not improved for ``xgb_early_stopping`` rounds.
    Defaults are sized to make strong references (more capacity than MLlib's
    own defaults); their validation and test scores are in BENCHMARKS.md,
    section 1. No capacity sweep is recorded.
    """

    models: list[ReferenceModel] = Field(
        default_factory=lambda: list(REFERENCE_MODELS), min_length=1
    )
    lr_max_iter: int = Field(200, ge=1)
    lr_reg_param: float = Field(0.0, ge=0.0)
    rf_trees: int = Field(200, ge=1)
    rf_max_depth: int = Field(16, ge=1, le=30)
    rf_min_instances: int = Field(2, ge=1, description="rows a random-forest leaf needs")
    xgb_rounds: int = Field(1000, ge=1, description="boosting rounds at most")
    xgb_early_stopping: int = Field(50, ge=1, description="rounds without a better validation loss")
    xgb_max_depth: int = Field(6, ge=1, le=20)
    xgb_learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    xgb_subsample: float = Field(0.8, gt=0.0, le=1.0)
    xgb_colsample: float = Field(0.8, gt=0.0, le=1.0)
    xgb_num_workers: int = Field(2, ge=1, description="XGBoost workers (Spark tasks)")
    class_weights: bool = Field(
        True, description="weigh rows by inverse genre frequency, as the CNN's loss does"
    )
    seed: int = 5


class TrainSettings(_Section):
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(128, ge=2, description="rows per step in each process")
    learning_rate: float = Field(3e-3, gt=0.0, description="peak rate of the schedule")
    schedule: Literal["onecycle", "cosine", "plateau"] = Field(
        "onecycle", description="learning rate over the epochs; plateau halves it when stuck"
    )
    weight_decay: float = Field(1e-4, ge=0.0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    embedding: Literal["periodic", "linear"] = Field(
        "periodic", description="per-feature input embedding: periodic (PLR) or linear"
    )
    frequencies: int = Field(16, ge=1, description="periodic embedding: sin/cos pairs per input")
    frequency_scale: float = Field(0.1, gt=0.0, description="periodic embedding: initial sigma")
    channels: int = Field(32, ge=1)
    depth: int = Field(2, ge=1, le=6)
    kernel_size: int = Field(3, ge=1)
    hidden: int = Field(128, ge=2, description="units of the classifier head")
    members: int = Field(3, ge=1, le=16, description="networks averaged (a seed ensemble)")
    patience: int = Field(10, ge=1, description="epochs without a better validation macro-F1")
    min_epoch_steps: int = Field(
        32,
        ge=1,
        description="a training set too small for this many optimizer steps per epoch has its "
        "epochs and patience multiplied until it gets them (see train.epoch_scale)",
    )
    num_processes: int = Field(2, ge=1)
    local_mode: bool = True
    collective_timeout_s: float = Field(
        300.0,
        gt=0.0,
        description="longest a training process waits for the others; a rank that died or hung "
        "fails training after this",
    )
    exclude_outliers: bool = True
    seed: int = 7
    references: ReferenceSettings = Field(default_factory=ReferenceSettings)


class TuneSettings(_Section):
    trials: int = Field(10, ge=1)
    epochs: int = Field(10, ge=1, description="per trial; the best retrains with train.epochs")
    seed: int = 11


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(None, description="None: sqlite under the lake folder")
    experiment: str = "genre-spark"
    model_name: str = "genre-cnn"


class ScoreSettings(_Section):
    batch_size: int = Field(4096, ge=1)
    missing: Literal["impute", "skip"] = Field(
        "impute",
        description="a null feature: impute the train center as training did, or skip the row",
    )


class PromoteSettings(_Section):
    """``genre promote``: the challenger must reach the champion's validation macro-F1 plus this."""

    margin: float = Field(
        0.0, ge=-1.0, le=1.0, description="required lead in validation macro-F1 (negative: leeway)"
    )


class DriftSettings(_Section):
    """``genre drift``: bins of the training snapshot and the thresholds that flag a shift."""

    psi_threshold: float = Field(0.2, gt=0.0, description="PSI above this flags a feature")
    ks_threshold: float = Field(0.1, gt=0.0, le=1.0, description="KS above this flags a feature")
    missing_threshold: float = Field(
        0.1, gt=0.0, le=1.0, description="change in the share of missing values that flags"
    )
    psi_bins: int = Field(10, ge=2, le=100, description="reference-quantile bins for PSI")
    ks_grid: int = Field(
        1000, ge=10, le=10000, description="reference quantiles the KS statistic is read at"
    )
    psi_floor: float = Field(
        1e-4, gt=0.0, lt=0.01, description="share an empty bin counts as (keeps PSI finite)"
    )
    history: int = Field(
        50, ge=1, description="gold.scored versions searched back for the previous scoring run"
    )


class ReportSettings(_Section):
    split: Literal["train", "validation", "test"] = "test"
    sample_size: int = Field(5000, ge=100, description="points in the 2-D outlier projection")


class Settings(_Section):
    lake: str = "./lake"
    engine: Literal["auto", "delta-spark", "delta-rs"] = "auto"
    checkpoint_interval: int = Field(
        10, ge=1, description="commits between two checkpoints of a new table's Delta log"
    )
    reports: str = "./reports"
    features: Literal["auto"] | list[str] = Field(
        "auto", description="auto: every model feature present in prepare.min_present of train"
    )
    spark: SparkSettings = Field(default_factory=SparkSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    validation: ValidateSettings = Field(default_factory=ValidateSettings)
    prepare: PrepareSettings = Field(default_factory=PrepareSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    promote: PromoteSettings = Field(default_factory=PromoteSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: Literal["auto"] | list[str]) -> Literal["auto"] | list[str]:
        # After pydantic's own check, the only str is "auto".
        return value if isinstance(value, str) else list(validate_features(value))

    @property
    def feature_list(self) -> list[str] | None:
        """The configured features, or None for ``auto`` (prepare chooses)."""
        return None if self.features == "auto" else list(self.features)

    @property
    def tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{Path(self.lake).resolve() / 'mlflow.db'}"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[leaf] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX) and key not in LAYER_VARIABLES:
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_path(tree, dotted, yaml.safe_load(raw) if raw else raw)
    return tree


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=5`` -> ("train.epochs", 5); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def _format_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"{key}: {message}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _conf_layers(profile: str, user_dir: Path) -> dict[str, Any]:
    """Packaged base and profile, then the user's ``base.yaml`` and profile from ``user_dir``.

    A profile may exist in either folder; one in neither is an error, except
    ``local`` (the default), which needs no file.
    """
    tree: dict[str, Any] = {}
    profiles = [DEFAULTS_DIR / f"{profile}.yaml", user_dir / f"{profile}.yaml"]
    for path in (DEFAULTS_DIR / "base.yaml", profiles[0], user_dir / "base.yaml", profiles[1]):
        if path.is_file():
            tree = _deep_merge(tree, _read_yaml(path))
    if profile != "local" and not any(p.is_file() for p in profiles):
        packaged = sorted(p.stem for p in DEFAULTS_DIR.glob("*.yaml") if p.stem != "base")
        raise ConfigError(
            f"profile {profile!r} has no file {profiles[1]} (packaged profiles: "
            f"{', '.join(packaged)})"
        )
    return tree


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    profile: str | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Merge every layer, validate once, and return the settings."""
    environ = dict(os.environ if environ is None else environ)
    profile = profile or environ.get("GENRE_PROFILE", "local")
    tree = _conf_layers(profile, Path(environ.get("GENRE_CONF_DIR", USER_CONF_DIR)))
    if config_file:
        tree = _deep_merge(tree, _read_yaml(Path(config_file)))
    tree = _deep_merge(tree, _env_overrides(environ))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(tree, dotted, value)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
