"""Model versions: MLflow's Model Registry, mirrored in ``gold.models`` for SQL users.

A registered version is a version of ``settings.mlflow.model_name`` in the
MLflow Model Registry (``"1"``, ``"2"``, ...). Its artifact is a
self-contained MLflow pyfunc (``genre_spark.model.pyfunc``): the network's
weights, the genre list (label index = position) and the fitted feature
transform (per feature its kind, scaling, fill value and missing indicator,
from gold.normalizer at training time) as artifacts, with a signature from
raw track columns to genres. A model therefore scores new rows exactly as
its training inputs were built, whatever a later ``genre prepare`` writes.
``load_model(settings, version)`` reads those same artifacts (through
``mlflow.pyfunc.load_model``). MLflow's tracking state is the driver's: the
driver resolves a version and locates its artifact (``model_artifact``), and a
Python worker (``genre score``'s scorer, ``model/scoring.py``) loads just that
artifact (``load_artifact``), never setting a tracking URI or creating an
experiment. The MLmodel ``metadata`` holds the training
parameters (and the genres and features, for people reading the MLflow UI).

Where MLflow keeps things. With no ``mlflow.tracking_uri`` configured, the
tracking store is SQLite at ``<lake>/mlflow.db``; with a local store
(SQLite, files) artifacts go to ``<lake>/mlartifacts`` (set explicitly when
the experiment is created: MLflow's own default is a folder relative to the
current directory). A tracking server (http(s)://, Databricks) keeps its own
artifact location.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pyspark.sql import DataFrame

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.errors import GenreError
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_MODELS, spec

if TYPE_CHECKING:
    from genre_spark.model.cnn import GenreCNN
    from genre_spark.model.pyfunc import GenreClassifier

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model"
KIND = "cnn"
#: Model-version tag: the fingerprint of what was registered (see ``model_fingerprint``).
FINGERPRINT_TAG = "genre_spark.fingerprint"
#: Run tag: the existing version an identical re-train re-used.
REUSED_TAG = "reused_version"


@dataclass(frozen=True)
class Registration:
    """What ``register_model`` did: the version, and whether it was an existing identical one."""

    version: str
    reused: bool


class ModelNotFoundError(GenreError):
    """No registered model, or no such version of it."""


class LegacyModelError(GenreError):
    """A version registered by an older genre-spark: not a self-contained pyfunc, so not scorable."""


@dataclass(frozen=True)
class LoadedModel:
    """A registered version ready to predict: its classifier (eval mode, CPU) and its run."""

    version: str
    classifier: GenreClassifier
    run_id: str
    params: dict[str, Any]

    @property
    def model(self) -> torch.nn.Module:
        """The network (reads transformed input vectors)."""
        return self.classifier.network

    @property
    def genres(self) -> list[str]:
        return list(self.classifier.genres)

    @property
    def features(self) -> list[str]:
        """The raw columns the model reads."""
        return self.classifier.transform.names

    @property
    def transform(self) -> FeatureTransform:
        """The feature transform the model's training inputs were built with."""
        return self.classifier.transform


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _remote_store(settings: Settings) -> bool:
    """A tracking server (or Databricks) that decides where artifacts go."""
    uri = settings.tracking_uri
    return uri.startswith(("http://", "https://", "databricks"))


def artifact_location(settings: Settings) -> str | None:
    """``<lake>/mlartifacts`` for a local store (SQLite, files); None lets a server choose.

    MLflow's own default for a local store is a folder relative to the
    current directory, which would scatter artifacts wherever a command ran.
    """
    if _remote_store(settings):
        return None
    if "://" in settings.lake:  # MLflow calls Hadoop's s3a:// plain s3://
        return f"{settings.lake.rstrip('/')}/mlartifacts".replace("s3a://", "s3://", 1)
    return Path(settings.lake).resolve().joinpath("mlartifacts").as_uri()


def use_tracking(settings: Settings) -> str:
    """Point MLflow at the settings' store and experiment (created if new); returns its id."""
    import mlflow

    _quiet_mlflow()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not settings.mlflow.tracking_uri and "://" not in settings.lake:
        Path(settings.lake).resolve().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow.experiment)
    if experiment is None:
        experiment_id = mlflow.create_experiment(
            settings.mlflow.experiment, artifact_location=artifact_location(settings)
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_history(history: list[dict[str, Any]]) -> None:
    """Per-epoch metrics into the active run as ``epoch_<name>`` curves, epoch as the step.

    The ``epoch_`` prefix keeps the curves apart from the final values
    (``val_macro_f1`` of the kept epoch) that a run reports once. ``epochs``
    (the planned total) is a param of the run, not a curve.
    """
    import mlflow

    for row in history:
        step = int(row["epoch"])
        mlflow.log_metrics(
            {f"epoch_{k}": float(v) for k, v in row.items() if k not in ("epoch", "epochs")},
            step=step,
        )


def _flat_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}


@contextmanager
def within_run(run_id: str | None = None, **start_kwargs: Any) -> Iterator[Any]:
    """The active run when it is the one named, else a new run (nested under an active one).

    Lets a caller that already opened a run (training, a tuning trial) hand
    it to :func:`register_model` without MLflow's "run already active" error.
    """
    import mlflow

    active = mlflow.active_run()
    if active is not None and run_id is not None and active.info.run_id == run_id:
        yield active
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None, **start_kwargs) as run:
        yield run


def log_model_run(
    model: GenreCNN,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    genres: list[str],
    transform: FeatureTransform,
    history: list[dict[str, Any]] | None = None,
) -> str:
    """Params, final metrics, per-epoch curves and the model (a pyfunc) into the active run.

    ``transform`` (what the training inputs were built with) goes into the
    model's artifacts beside its weights and genres, so the model scores raw
    rows exactly as it was trained; the chosen features are also run params.
    Returns the logged model's URI (what :func:`register_model` registers).
    """
    import mlflow

    from genre_spark.model.pyfunc import log_pyfunc

    mlflow.log_params(_flat_params(params))
    mlflow.log_params({"features": ",".join(transform.names), "inputs": len(transform.outputs)})
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    log_history(history or [])
    info = log_pyfunc(
        model.eval(),
        name=ARTIFACT_NAME,
        genres=genres,
        transform=transform,
        metadata={"params": params, "genres": list(genres), "features": transform.names},
    )
    uri: str = info.model_uri  # mlflow.pyfunc.log_model is unannotated; it returns a ModelInfo
    return uri


def register_model(
    lake: Lake,
    settings: Settings,
    model: GenreCNN,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    genres: list[str],
    transform: FeatureTransform,
    history: list[dict[str, Any]] | None = None,
    run_id: str | None = None,
) -> Registration:
    """Log ``model`` to MLflow, register a new version, mirror it into gold.models.

    Idempotent: when a version with the same fingerprint (weights, params,
    genres, transform) is already registered, the run is logged but that
    version is returned with ``reused`` set (and tagged on the run as
    ``reused_version``) instead of registering a duplicate; gold.models is left
    unchanged.

    ``run_id`` continues an existing run (training or tuning opened it);
    without it the active run is used, or a new one started. ``metrics``
    must hold ``val_accuracy`` and ``val_macro_f1`` (what gold.models shows
    next to the version).
    """
    import mlflow

    missing = {"val_accuracy", "val_macro_f1"} - set(metrics)
    if missing:
        raise ValueError(f"metrics must include {sorted(missing)}")
    use_tracking(settings)
    fingerprint = model_fingerprint(model, params, genres, transform)
    with within_run(run_id) as run:
        uri = log_model_run(
            model,
            params=params,
            metrics=metrics,
            genres=genres,
            transform=transform,
            history=history,
        )
        existing = version_with_fingerprint(settings, fingerprint)
        if existing is not None:
            mlflow.set_tag(REUSED_TAG, existing)
            return Registration(existing, reused=True)
        name = settings.mlflow.model_name
        version = str(mlflow.register_model(uri, name).version)
        client(settings).set_model_version_tag(name, version, FINGERPRINT_TAG, fingerprint)
        mlflow.set_tag("registered_version", version)
        _mirror(lake, version, params, metrics, run.info.run_id, genres, transform.names)
    return Registration(version, reused=False)


def model_fingerprint(
    model: torch.nn.Module, params: dict[str, Any], genres: list[str], transform: FeatureTransform
) -> str:
    """What makes two registrations the same model: weights, params, genres and feature transform.

    Training is deterministic (seeded init, per-rank shuffles, files sorted by
    partition), so re-training on the same gold.features gives the same
    fingerprint; registering it again would only add a duplicate version and
    make every downstream table (scored, confusion, evaluation) change name.
    """
    digest = hashlib.sha256(
        json.dumps(
            {"params": params, "genres": list(genres), "transform": transform.to_dict()},
            sort_keys=True,
            default=str,
        ).encode()
    )
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def version_with_fingerprint(settings: Settings, fingerprint: str) -> str | None:
    """The registered version carrying ``fingerprint``, if any (the oldest one)."""
    name = settings.mlflow.model_name
    try:
        versions = client(settings).search_model_versions(f"name='{name}'")
    except Exception:  # no registered model of that name yet
        return None
    same = [int(v.version) for v in versions if v.tags.get(FINGERPRINT_TAG) == fingerprint]
    return str(min(same)) if same else None


def _mirror(
    lake: Lake,
    version: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    run_id: str,
    genres: list[str],
    features: list[str],
) -> None:
    row: tuple[Any, ...] = (
        version,
        datetime.now(UTC).replace(tzinfo=None),
        json.dumps(params, sort_keys=True),
        float(metrics["val_accuracy"]),
        float(metrics["val_macro_f1"]),
        run_id,
        list(genres),
        list(features),
        KIND,
        [],
    )
    with stages.run(lake, stages.REGISTRY) as io:
        io.merge(lake.spark.createDataFrame([row], spec(GOLD_MODELS).schema), GOLD_MODELS)


def list_versions(lake: Lake) -> DataFrame:
    """gold.models: one row per registered version."""
    with stages.run(lake, stages.REGISTRY) as io:
        return io.read(GOLD_MODELS)


def resolve_version(settings: Settings, version: str | None = None) -> str:
    """A concrete version string for any reference :func:`resolve_model` accepts."""
    return resolve_model(settings, version).version


@dataclass(frozen=True)
class ModelArtifact:
    """A registered version located on the driver: where its pyfunc's files are, readable anywhere.

    ``uri`` is the version's artifact location itself (``file://``, ``s3://``,
    or a tracking server's artifact proxy as ``http(s)://``), not a
    ``models:/`` reference: reading it needs no tracking store, so a Python
    worker loads the weights without setting a tracking URI or touching the
    registry.
    """

    name: str
    version: str
    uri: str
    run_id: str


def model_artifact(settings: Settings, version: str | None = None) -> ModelArtifact:
    """Resolve ``version`` (see :func:`resolve_model`) and locate its artifact: the driver's half."""
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    resolved = resolve_version(settings, version)
    name = settings.mlflow.model_name
    store = client(settings)
    uri = store.get_model_version_download_uri(name, resolved)
    if uri.startswith("mlflow-artifacts:"):  # relative to the server: made absolute here
        uri = MlflowArtifactsRepository.resolve_uri(uri, settings.tracking_uri)
    run_id = store.get_model_version(name, resolved).run_id or ""
    return ModelArtifact(name=name, version=resolved, uri=uri, run_id=run_id)


def load_artifact(artifact: ModelArtifact) -> LoadedModel:
    """Load a located version's pyfunc (the worker's half; it reads ``artifact.uri`` alone).

    Reads the files every MLflow user's loader reads, through
    ``mlflow.pyfunc.load_model``; a version registered before versions were
    pyfuncs is a :class:`LegacyModelError`.
    """
    import mlflow
    from mlflow.models import Model

    from genre_spark.model.pyfunc import GenrePyfunc

    name, version = artifact.name, artifact.version
    # MLflow draws a progress bar per download: in every scoring worker of every
    # job, a screen of "Downloading artifacts" lines. A user's own setting wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="genre-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=artifact.uri, dst_path=tmp)
        description = Model.load(os.path.join(local, "MLmodel"))
        _require_pyfunc(description, name, version)
        python_model = mlflow.pyfunc.load_model(local).unwrap_python_model()
    if not isinstance(python_model, GenrePyfunc):
        raise _legacy(name, version, f"a {type(python_model).__name__} pyfunc")
    return LoadedModel(
        version=version,
        classifier=python_model.classifier,
        run_id=artifact.run_id,
        params=dict((description.metadata or {}).get("params", {})),
    )


def load_model(settings: Settings, version: str | None = None) -> LoadedModel:
    """Load a registered version (``version``: see :func:`resolve_model`) on the driver."""
    return load_artifact(model_artifact(settings, version))


def _require_pyfunc(description: Any, name: str, version: str) -> None:
    """A ``PythonModel`` pyfunc, or the flavour the older genre-spark registered it as."""
    from genre_spark.model.pyfunc import PYTHON_MODEL_LOADER

    loader = description.flavors.get("python_function", {}).get("loader_module")
    if loader != PYTHON_MODEL_LOADER:
        flavour = ", ".join(f for f in description.flavors if f != "python_function")
        raise _legacy(name, version, f"an MLflow '{flavour or loader}' model")


def _legacy(name: str, version: str, what: str) -> LegacyModelError:
    return LegacyModelError(
        f"model {name!r} version {version} is {what} registered by an older genre-spark, not "
        "a self-contained pyfunc with its feature transform, so it cannot score; "
        "train it again with `genre train`"
    )


# --- aliases and the one way to name a model -----------------------------------------

#: The version that scores, evaluates and reports by default (moved by ``genre promote``).
CHAMPION = "champion"
#: The newest trained or tuned version that is not the champion: the candidate to promote.
CHALLENGER = "challenger"
#: References meaning "the highest version number" (the one definition of latest).
NEWEST = ("latest", "newest")


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: the version, and how it was chosen (for messages)."""

    version: str
    #: "version 3", "@champion", "@challenger", "the newest version", or the fallback's reason.
    chosen_by: str
    #: True when no champion existed and the newest version was taken instead.
    fallback: bool = False

    def describe(self) -> str:
        return f"version {self.version} ({self.chosen_by})"


def client(settings: Settings) -> Any:
    """An MLflow client of ``settings``' store.

    Never ``MlflowClient()``: that reads the process-wide URI, which is the
    store of whichever lake last called ``use_tracking`` (another lake's
    registry in a notebook, a test session or a long-lived driver).
    """
    from mlflow import MlflowClient

    uri = settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def newest_version(settings: Settings) -> str:
    """The highest registered version number: what "latest" means everywhere in the project.

    Registry versions only grow, so the highest number is also the most
    recently registered one; gold.models' ``created_at`` is a mirror, not a source.
    """
    name = settings.mlflow.model_name
    try:
        found = client(settings).search_model_versions(f"name='{name}'")
    except Exception:  # the registered model does not exist yet
        found = []
    versions = [int(v.version) for v in found]
    if not versions:
        raise ModelNotFoundError(
            f"no registered versions of model {name!r} at {settings.tracking_uri}; "
            "run `genre train` first"
        )
    return str(max(versions))


def aliases(settings: Settings) -> dict[str, str]:
    """``{alias: version}`` of the registered model (empty when it has none, or does not exist)."""
    try:
        model = client(settings).get_registered_model(settings.mlflow.model_name)
    except Exception:
        return {}
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def _alias_version(settings: Settings, alias: str) -> str | None:
    return aliases(settings).get(alias)


def resolve_model(settings: Settings, ref: str | None = None) -> ResolvedModel:
    """The one resolution of a model reference, used by every command.

    ``ref``: ``None`` (or ``"@champion"``/``"champion"``) is the champion, falling
    back to the newest version when no champion has been promoted yet (with
    ``fallback`` set, so callers say so); ``"@challenger"`` the challenger;
    ``"latest"``/``"newest"`` the highest version number; ``"3"`` version 3.
    """
    use_tracking(settings)
    name = settings.mlflow.model_name
    text = (ref or f"@{CHAMPION}").strip()
    alias = text.removeprefix("@")
    if text.isdigit():
        try:
            return ResolvedModel(
                str(client(settings).get_model_version(name, text).version), f"version {text}"
            )
        except Exception:
            raise ModelNotFoundError(
                f"model {name!r} has no version {text!r} at {settings.tracking_uri}"
            ) from None
    if alias in NEWEST:
        return ResolvedModel(newest_version(settings), "the newest version")
    if alias not in (CHAMPION, CHALLENGER):
        raise ModelNotFoundError(
            f"unknown model reference {ref!r}: use a version number, @{CHAMPION}, "
            f"@{CHALLENGER} or latest"
        )
    version = _alias_version(settings, alias)
    if version is not None:
        return ResolvedModel(version, f"@{alias}")
    if alias == CHALLENGER:
        raise ModelNotFoundError(
            f"model {name!r} has no @{CHALLENGER}: `genre train` or `genre tune` registers one"
        )
    newest = newest_version(settings)
    log.info("model %r has no @%s yet: using the newest version %s", name, CHAMPION, newest)
    return ResolvedModel(
        newest,
        f"no @{CHAMPION} yet, so the newest version; `genre promote` sets one",
        fallback=True,
    )


def set_alias(settings: Settings, alias: str, version: str | None) -> None:
    """Point ``alias`` at ``version``, or remove it (``None``)."""
    store, name = client(settings), settings.mlflow.model_name
    if version is None:
        if alias in aliases(settings):
            store.delete_registered_model_alias(name, alias)
    else:
        store.set_registered_model_alias(name, alias, version)


def sync_aliases(lake: Lake, settings: Settings) -> None:
    """Rewrite gold.models' ``aliases`` column from the registry (one commit; a few rows)."""
    from pyspark.sql import functions as F

    with stages.run(lake, stages.REGISTRY) as io:
        if not io.exists(GOLD_MODELS):
            return
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(aliases(settings).items()):
            by_version.setdefault(version, []).append(alias)
        pairs = [
            F.lit(x) for v, names in by_version.items() for x in (v, F.array(*map(F.lit, names)))
        ]
        table = F.create_map(*pairs) if pairs else F.create_map().cast("map<string,array<string>>")
        none = F.array().cast("array<string>")
        models = io.read(GOLD_MODELS).withColumn(
            "aliases", F.coalesce(F.element_at(table, F.col("version")), none)
        )
        io.write(models.select(*spec(GOLD_MODELS).schema.fieldNames()), GOLD_MODELS)


def mark_challenger(lake: Lake, settings: Settings, version: str) -> bool:
    """A newly trained or tuned version becomes @challenger (unless it is the champion).

    An identical re-train re-uses the champion's version: that stays the
    champion and nothing moves. Returns whether the alias was set.
    """
    use_tracking(settings)
    if _alias_version(settings, CHAMPION) == version:
        return False
    set_alias(settings, CHALLENGER, version)
    sync_aliases(lake, settings)
    return True
