"""``genre drift``: a catalogue against a model's training snapshot, and two scoring runs, into gold.drift.

Per feature of the model, over the values present: the population stability
index over the training split's quantile bins, and the two-sample
Kolmogorov–Smirnov statistic read on the fine grid of training quantiles
(``ks``, a lower bound of the exact statistic, with ``ks_upper`` its upper
bound; see ``stats.py``); beside them the share of missing values on each
side. A feature is flagged when its PSI is above ``drift.psi_threshold``, its
KS above ``drift.ks_threshold``, or its share of missing values moved by more
than ``drift.missing_threshold``. (Missing values are kept out of the PSI on
purpose: a missing bin that is empty in training would make the index
depend on the floor an empty bin gets, not on the data.) Predictions:
the predicted genre shares of two scoring runs (``predictions.py``), with
the PSI over genres flagged by the same PSI threshold.

gold.drift is merged on (model_version, kind, name, baseline, current):
running again on the same inputs replaces the same rows, a new catalogue
version or a new scoring run adds rows beside them, so the table is the
history of every comparison made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from genre_spark import stages
from genre_spark.config import DriftSettings, Settings
from genre_spark.drift import predictions, stats
from genre_spark.drift.bins import FeatureBins, count_bins
from genre_spark.drift.reference import Reference, load_reference
from genre_spark.errors import GenreError
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_DRIFT, GOLD_SCORED, spec
from genre_spark.model.registry import ResolvedModel, client, resolve_model

log = logging.getLogger(__name__)

FEATURE = "feature"
PREDICTION = "prediction"
ALL_GENRES = "(all genres)"


class DriftInputError(GenreError):
    """The table to compare lacks a feature column the model was trained on."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature: training split vs the current table."""

    feature: str
    baseline: FeatureBins
    current: FeatureBins
    psi: float | None
    ks: float | None
    ks_upper: float | None
    drifted: bool

    @property
    def missing_shift(self) -> float:
        """Change in the share of rows without a value (current minus training)."""
        return _missing(self.current) - _missing(self.baseline)


@dataclass(frozen=True)
class PredictionShift:
    """Predicted genre shares of two scoring runs."""

    baseline: predictions.ScoringRun
    current: predictions.ScoringRun
    baseline_counts: dict[str, int]
    current_counts: dict[str, int]
    psi: float
    drifted: bool

    @property
    def genres(self) -> list[str]:
        return sorted(set(self.baseline_counts) | set(self.current_counts))

    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        b = np.array([self.baseline_counts.get(g, 0) for g in self.genres], dtype=float)
        c = np.array([self.current_counts.get(g, 0) for g in self.genres], dtype=float)
        return b / b.sum(), c / c.sum()

    @property
    def max_shift(self) -> float:
        b, c = self.shares()
        return float(np.max(np.abs(c - b)))


@dataclass
class DriftResult:
    """What ``run`` compared and found."""

    model: ResolvedModel
    reference: Reference
    table: str
    table_version: int
    features: list[FeatureDrift]
    predictions: PredictionShift | None
    notes: list[str] = field(default_factory=list)
    drift_version: int | None = None

    @property
    def flagged(self) -> list[str]:
        names = [f.feature for f in self.features if f.drifted]
        if self.predictions is not None and self.predictions.drifted:
            names.append("predicted genre shares")
        return names


def _missing(bins: FeatureBins) -> float:
    return bins.missing / bins.rows if bins.rows else 0.0


def compare_feature(
    baseline: FeatureBins, current: FeatureBins, cfg: DriftSettings
) -> FeatureDrift:
    """PSI (value bins) and KS bounds (grid cells) of one feature's present values, and the flag.

    A side with no value at all has no PSI or KS (null); the missing-share
    change flags it then.
    """
    psi: float | None = None
    ks: float | None = None
    upper: float | None = None
    if sum(baseline.psi_counts) and sum(current.psi_counts):
        psi = stats.psi(baseline.psi_counts, current.psi_counts, cfg.psi_floor)
        points = stats.point_cells(baseline.grid_edges)
        ks, upper = stats.ks_bounds(baseline.grid_counts, current.grid_counts, points)
    moved = abs(_missing(current) - _missing(baseline)) > cfg.missing_threshold
    drifted = (
        moved
        or (psi is not None and psi > cfg.psi_threshold)
        or (ks is not None and ks > cfg.ks_threshold)
    )
    return FeatureDrift(baseline.feature, baseline, current, psi, ks, upper, drifted)


def compare_features(
    io: stages.StageRun, version: int, reference: Reference, cfg: DriftSettings
) -> list[FeatureDrift]:
    """Count the run's source (at ``version``) on the reference's edges and compare, per feature."""
    table = io.source
    df = io.read(table, version)
    absent = [f for f in reference.features if f not in df.columns]
    if absent:
        raise DriftInputError(
            f"{table} lacks column(s) {absent} that the model's training snapshot has"
        )
    edges = {f: (b.psi_edges, b.grid_edges) for f, b in reference.features.items()}
    current = count_bins(df, edges)
    return [compare_feature(reference.features[f], current[f], cfg) for f in reference.features]


def compare_runs(
    io: stages.StageRun,
    baseline: predictions.ScoringRun,
    current: predictions.ScoringRun,
    cfg: DriftSettings,
) -> PredictionShift:
    """Genre shares of two scoring runs and their PSI over genres."""
    b = predictions.genre_counts(io, baseline)
    c = predictions.genre_counts(io, current)
    genres = sorted(set(b) | set(c))
    psi = stats.psi([b.get(g, 0) for g in genres], [c.get(g, 0) for g in genres], cfg.psi_floor)
    return PredictionShift(baseline, current, b, c, psi, psi > cfg.psi_threshold)


def _scoring_runs(
    io: stages.StageRun,
    settings: Settings,
    model: ResolvedModel,
    baseline_ref: str | None,
    current_ref: str | None,
    notes: list[str],
) -> tuple[predictions.ScoringRun, predictions.ScoringRun] | None:
    """The two runs to compare, or None with a note saying why there are none."""
    if not io.exists(GOLD_SCORED):
        notes.append("gold.scored not found: run `genre score` to compare predictions")
        return None
    try:
        if current_ref:
            current = predictions.find_run(io, settings, current_ref)
        else:
            found = predictions.newest_run(io, model.version)
            if found is None:
                notes.append(
                    f"model version {model.version} has not scored anything: run `genre score` "
                    "to compare predictions"
                )
                return None
            current = found
        if baseline_ref:
            baseline = predictions.find_run(io, settings, baseline_ref)
        else:
            previous = predictions.previous_run(io, current, settings.drift.history)
            if previous is None:
                notes.append(
                    f"no earlier scoring run of version {current.model_version} in gold.scored's "
                    "history: pass --baseline-scored VERSION[@TABLE_VERSION] to compare predictions"
                )
                return None
            baseline = previous
    except predictions.NoScoringRunError as exc:
        notes.append(str(exc))
        return None
    if baseline == current:
        notes.append(f"baseline and current are the same scoring run ({current.describe()})")
        return None
    return baseline, current


def _row(**values: object) -> tuple[object, ...]:
    """One gold.drift row in schema order (``computed_at`` is added in Spark); absent: null."""
    columns = spec(GOLD_DRIFT).stamped_schema().fieldNames()
    unknown = set(values) - set(columns)
    if unknown:
        raise KeyError(f"not gold.drift columns: {sorted(unknown)}")
    return tuple(values.get(c) for c in columns)


def _feature_row(
    model: str, reference: Reference, current: str, d: FeatureDrift, cfg: DriftSettings
) -> tuple[object, ...]:
    def hist(bins: FeatureBins) -> list[float]:
        total = sum(bins.psi_counts)
        return [c / total for c in bins.psi_counts] if total else [0.0] * len(bins.psi_counts)

    return _row(
        model_version=model,
        kind=FEATURE,
        name=d.feature,
        baseline=reference.describe(),
        current=current,
        baseline_rows=d.baseline.rows,
        current_rows=d.current.rows,
        baseline_missing=_missing(d.baseline),
        current_missing=_missing(d.current),
        psi=d.psi,
        ks=d.ks,
        ks_upper=d.ks_upper,
        bin_edges=list(d.baseline.psi_edges),
        baseline_hist=hist(d.baseline),
        current_hist=hist(d.current),
        psi_threshold=cfg.psi_threshold,
        ks_threshold=cfg.ks_threshold,
        missing_threshold=cfg.missing_threshold,
        drifted=d.drifted,
    )


def _prediction_rows(
    model: str, shift: PredictionShift, cfg: DriftSettings
) -> list[tuple[object, ...]]:
    """One row per genre (its shares and PSI term), and one for all genres (flagged or not)."""
    b, c = shift.shares()
    terms = stats.psi_terms(
        [shift.baseline_counts.get(g, 0) for g in shift.genres],
        [shift.current_counts.get(g, 0) for g in shift.genres],
        cfg.psi_floor,
    )
    common = {
        "model_version": model,
        "kind": PREDICTION,
        "baseline": shift.baseline.describe(),
        "current": shift.current.describe(),
        "baseline_rows": sum(shift.baseline_counts.values()),
        "current_rows": sum(shift.current_counts.values()),
        "psi_threshold": cfg.psi_threshold,
    }
    rows = [
        _row(
            **common,
            name=g,
            baseline_share=float(b[i]),
            current_share=float(c[i]),
            psi=float(terms[i]),
        )
        for i, g in enumerate(shift.genres)
    ]
    overall = _row(
        **common,
        name=ALL_GENRES,
        psi=shift.psi,
        baseline_hist=[float(x) for x in b],
        current_hist=[float(x) for x in c],
        drifted=shift.drifted,
    )
    return [*rows, overall]


def write(io: stages.StageRun, result: DriftResult, cfg: DriftSettings) -> int:
    """Merge the comparison's rows into gold.drift (a few dozen rows, built on the driver)."""
    from pyspark.sql import functions as F

    model = result.model.version
    current = f"{result.table} v{result.table_version}"
    rows = [_feature_row(model, result.reference, current, d, cfg) for d in result.features]
    if result.predictions is not None:
        rows += _prediction_rows(model, result.predictions, cfg)
    schema = spec(GOLD_DRIFT).stamped_schema()
    df = io.lake.spark.createDataFrame(rows, schema).withColumn(
        "computed_at", F.current_timestamp()
    )
    return io.merge(df, GOLD_DRIFT)


def run(
    lake: Lake,
    settings: Settings,
    against: str | None = None,
    table: str | None = None,
    baseline_scored: str | None = None,
    current_scored: str | None = None,
) -> DriftResult:
    """``table`` (default silver.tracks) against the training snapshot of model ``against``.

    ``against`` defaults to the champion. Writes gold.drift and returns what
    was found; the predicted-genre comparison is left out, with a note, when
    there are not two scoring runs.
    """
    cfg = settings.drift
    model = resolve_model(settings, against)
    run_id = client(settings).get_model_version(settings.mlflow.model_name, model.version).run_id
    reference = load_reference(settings, run_id or "", model.version)
    notes = [f"compared with {model.describe()}"] if model.fallback else []
    with stages.run(lake, stages.DRIFT, source=table) as io:
        version = io.version(io.source)
        features = compare_features(io, version, reference, cfg)
        runs = _scoring_runs(io, settings, model, baseline_scored, current_scored, notes)
        shift = compare_runs(io, *runs, cfg) if runs else None
        result = DriftResult(model, reference, io.source, version, features, shift, notes)
        result.drift_version = write(io, result, cfg)
    for note in notes:
        log.info(note)
    return result
