"""The training snapshot a model is compared with: its train split, binned once at training time.

What is stored, and why there. When ``genre train`` (or ``tune``'s retrain)
fits a model, the rows it learned from (gold.features' train split, without
the outliers when ``train.exclude_outliers``) are joined with their raw
values in the silver.tracks version that prepare read (gold.outlier_params
records it) and binned (``bins.profile``: PSI bins and the KS grid at the
split's quantiles, counts per cell, missing values). The result, a few
thousand numbers, is logged as ``drift_reference.json`` in the model's MLflow
run. It stays correct for the life of the model version whatever happens to
the lake afterwards: a later ingest or prepare rewrites silver and gold, and
``genre vacuum`` deletes the files of old table versions, so a table version
recorded at training time could not be read back later, while the run's
artifact travels with the model (also to another tracking server).
Raw values (Spotify units), not the scaled vectors: drift is about the
catalogue, whatever transform a model version applies.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import DriftSettings, Settings, TrainSettings
from genre_spark.drift.bins import FeatureBins, profile
from genre_spark.errors import GenreError
from genre_spark.java_errors import is_missing_file, java_chain
from genre_spark.lake import TableNotFoundError
from genre_spark.lake.catalog import GOLD_FEATURES, GOLD_OUTLIER_PARAMS, SILVER_TRACKS

log = logging.getLogger(__name__)

ARTIFACT = "drift_reference.json"
#: Run tag set when no reference could be stored (the reason).
MISSING_TAG = "drift_reference_missing"
FORMAT = 1


class NoReferenceError(GenreError):
    """The model version's run carries no training snapshot to compare with."""


@dataclass(frozen=True)
class Reference:
    """A model version's training snapshot: per-feature bins, and where the rows came from."""

    features: dict[str, FeatureBins]
    snapshot: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "snapshot": self.snapshot,
            "features": {f: b.to_json() for f, b in self.features.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reference:
        return cls(
            {f: FeatureBins.from_json(f, b) for f, b in data["features"].items()},
            dict(data.get("snapshot", {})),
        )

    def describe(self) -> str:
        s = self.snapshot
        return f"train split ({s.get('rows', '?')} tracks, silver.tracks v{s.get('silver_version', '?')})"


def training_rows(io: stages.StageRun, train: TrainSettings) -> tuple[DataFrame, dict[str, Any]]:
    """Raw silver rows of the tracks training learns from, and the versions they came from.

    ``io`` is the training stage's run: these are among its inputs.
    """
    params = io.read(GOLD_OUTLIER_PARAMS).select("version").first()
    assert params is not None, "gold.outlier_params has no row"
    silver_version = int(params["version"])
    features_version = io.version(GOLD_FEATURES)
    chosen = io.read(GOLD_FEATURES, features_version).where(F.col("split") == "train")
    if train.exclude_outliers:
        chosen = chosen.where(~F.coalesce(F.col("is_outlier"), F.lit(False)))
    silver = io.read(SILVER_TRACKS, silver_version)
    rows = silver.join(chosen.select("track_id"), on="track_id", how="left_semi")
    snapshot = {
        "silver_version": silver_version,
        "features_version": features_version,
        "split": "train",
        "exclude_outliers": train.exclude_outliers,
    }
    return rows, snapshot


def build(
    io: stages.StageRun, train: TrainSettings, features: Sequence[str], cfg: DriftSettings
) -> Reference:
    """Bin the training rows on their own quantiles (two small Spark jobs)."""
    rows, snapshot = training_rows(io, train)
    bins = profile(rows, features, cfg.psi_bins, cfg.ks_grid)
    snapshot["rows"] = next(iter(bins.values())).rows if bins else 0
    return Reference(bins, snapshot)


def log_reference(
    io: stages.StageRun, settings: Settings, train: TrainSettings, features: Sequence[str]
) -> bool:
    """Store the training snapshot in the active MLflow run; returns whether it was stored.

    Does not fail training when the rows cannot be read back because their
    files are gone (silver.tracks' version that prepare read was vacuumed
    after a new ingest; ``java_errors.is_missing_file``) or their tables were
    never written (a lake with gold.features alone): the run gets
    a ``drift_reference_missing`` tag with the reason, a warning is logged,
    and ``genre drift`` later says that this version has no reference. Any
    other failure is raised: it would fail the next stage too.
    """
    import mlflow

    try:
        reference = build(io, train, features, settings.drift)
    except Exception as exc:
        if not _rows_are_gone(exc):  # a bug is not a missing snapshot
            raise
        reason = f"{type(exc).__name__}: {_first_line(exc)}"
        log.warning("no drift reference stored for this training run: %s", reason)
        mlflow.set_tag(MISSING_TAG, reason[:500])
        return False
    mlflow.log_dict(reference.to_json(), ARTIFACT)
    return True


def _rows_are_gone(exc: BaseException) -> bool:
    """The training rows' files were vacuumed, or their tables never written (gold.features alone)."""
    return isinstance(exc, TableNotFoundError) or is_missing_file(exc)


def _first_line(exc: BaseException) -> str:
    """The Java cause's first line where there is one (Py4J's own says only which call failed)."""
    chain = java_chain(exc)
    text = (chain[0][1] if chain else str(exc)).strip()
    return text.splitlines()[0] if text else ""


def load_reference(settings: Settings, run_id: str, version: str) -> Reference:
    """The training snapshot stored in ``run_id`` (the run that registered ``version``)."""
    import mlflow

    from genre_spark.model.registry import client

    uri = settings.tracking_uri
    try:
        with tempfile.TemporaryDirectory(prefix="genre-drift-") as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp, tracking_uri=uri
            )
            data = json.loads(Path(path).read_text())
    except Exception:
        tags = client(settings).get_run(run_id).data.tags if run_id else {}
        why = tags.get(MISSING_TAG, "it was registered before drift references existed")
        raise NoReferenceError(
            f"model version {version} has no training snapshot ({why}); retrain to get one"
        ) from None
    return Reference.from_json(data)
