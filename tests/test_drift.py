"""Drift statistics in Spark against numpy and scipy on the same data and the same bins."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession
from scipy.stats import ks_2samp

from genre_spark import stages
from genre_spark.config import DriftSettings, Settings
from genre_spark.drift import stats
from genre_spark.drift.bins import count_bins, profile
from genre_spark.drift.reference import MISSING_TAG, log_reference
from genre_spark.drift.run import compare_feature
from genre_spark.lake import Lake
from genre_spark.lake.catalog import SILVER_TRACKS
from genre_spark.model.registry import client, use_tracking, within_run

FEATURES = ["tempo", "instrumentalness", "key"]


def _catalog(rng: np.random.Generator, n: int, tempo_shift: float, missing: float) -> pd.DataFrame:
    """A continuous feature, one with an atom at 0 (40 %), a discrete one; some values missing."""
    tempo = rng.normal(120 + tempo_shift, 25, n)
    instrumental = np.where(rng.random(n) < 0.4, 0.0, rng.beta(0.5, 2, n))
    key = rng.integers(0, 12, n).astype(float)
    frame = pd.DataFrame({"tempo": tempo, "instrumentalness": instrumental, "key": key})
    for column in FEATURES:
        frame.loc[rng.random(n) < missing, column] = np.nan
    return frame


def _numpy_psi(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray, floor: float) -> float:
    """PSI written from its definition over the values present, on the reference's quantile bins."""

    def shares(values: np.ndarray) -> np.ndarray:
        present = values[~np.isnan(values)]
        cells = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
        return np.maximum(cells / len(present), floor)

    e, a = shares(ref), shares(cur)
    return float(np.sum((a - e) * np.log(a / e)))


def _numpy_grid_ks(ref: np.ndarray, cur: np.ndarray, edges: np.ndarray) -> float:
    """max |F(e-) - G(e-)| over the grid edges, by sorting (the value ``ks`` must equal)."""
    r, c = np.sort(ref[~np.isnan(ref)]), np.sort(cur[~np.isnan(cur)])
    f = np.searchsorted(r, edges, side="left") / len(r)
    g = np.searchsorted(c, edges, side="left") / len(c)
    return float(np.max(np.abs(f - g)))


@pytest.fixture(scope="module")
def binned(spark: SparkSession) -> dict[str, object]:
    rng = np.random.default_rng(3)
    ref = _catalog(rng, 6000, 0.0, 0.0)
    cur = _catalog(rng, 5000, 12.0, 0.05)
    cfg = DriftSettings(ks_grid=500)
    reference = profile(spark.createDataFrame(ref), FEATURES, cfg.psi_bins, cfg.ks_grid)
    edges = {f: (b.psi_edges, b.grid_edges) for f, b in reference.items()}
    current = count_bins(spark.createDataFrame(cur), edges)
    return {"ref": ref, "cur": cur, "reference": reference, "current": current, "cfg": cfg}


@pytest.mark.parametrize("feature", FEATURES)
def test_counts_are_numpys_on_the_same_edges(binned: dict, feature: str) -> None:
    for side in ("reference", "current"):
        values = binned["ref" if side == "reference" else "cur"][feature].to_numpy()
        bins = binned[side][feature]
        present = values[~np.isnan(values)]
        for edges, counts in (
            (bins.psi_edges, bins.psi_counts),
            (bins.grid_edges, bins.grid_counts),
        ):
            cells = np.searchsorted(np.array(edges), present, side="right")
            assert list(counts) == list(np.bincount(cells, minlength=len(edges) + 1))
        assert bins.missing == int(np.isnan(values).sum())
        assert bins.rows == len(values)


@pytest.mark.parametrize("feature", FEATURES)
def test_psi_and_ks_agree_with_numpy_and_scipy(binned: dict, feature: str) -> None:
    cfg: DriftSettings = binned["cfg"]
    ref, cur = binned["ref"][feature].to_numpy(), binned["cur"][feature].to_numpy()
    found = compare_feature(binned["reference"][feature], binned["current"][feature], cfg)

    edges = np.array(found.baseline.psi_edges)
    assert found.psi == pytest.approx(_numpy_psi(ref, cur, edges, cfg.psi_floor), abs=1e-12)
    assert found.ks == pytest.approx(
        _numpy_grid_ks(ref, cur, np.array(found.baseline.grid_edges)), abs=1e-12
    )
    exact = ks_2samp(ref[~np.isnan(ref)], cur[~np.isnan(cur)]).statistic
    assert found.ks <= exact + 1e-12 <= found.ks_upper + 2e-12
    # The grid is fine: the bounds are tight (exact where every value has a cell, as for key).
    assert found.ks_upper - found.ks < (1e-12 if feature == "key" else 0.01)


def test_psi_bins_are_the_references_quantiles(binned: dict) -> None:
    tempo = binned["reference"]["tempo"]
    shares = np.array(tempo.psi_counts) / tempo.rows
    assert len(shares) == 10 and np.all(np.abs(shares - 0.1) < 0.01)


def test_only_the_shifted_feature_is_flagged(binned: dict) -> None:
    cfg: DriftSettings = binned["cfg"]
    flagged = {
        f: compare_feature(binned["reference"][f], binned["current"][f], cfg).drifted
        for f in FEATURES
    }
    # tempo moved by half a standard deviation; 5 % missing values stay below missing_threshold.
    assert flagged == {"tempo": True, "instrumentalness": False, "key": False}


def test_a_jump_in_missing_values_is_flagged(spark: SparkSession, binned: dict) -> None:
    cfg: DriftSettings = binned["cfg"]
    key = binned["reference"]["key"]
    edges = {"key": (key.psi_edges, key.grid_edges)}
    values = binned["ref"][["key"]].copy()
    values.loc[values.index[: len(values) // 4], "key"] = np.nan  # the same values, 25 % gone
    current = count_bins(spark.createDataFrame(values), edges)["key"]
    found = compare_feature(key, current, cfg)
    assert found.drifted and found.missing_shift == pytest.approx(0.25)
    assert found.psi is not None and found.psi < cfg.psi_threshold


def test_ks_bounds_by_hand() -> None:
    # cells (-inf,1) [1,2) [2,inf): reference 2/2/0, current 0/2/2
    assert stats.ks_bounds([2, 2, 0], [0, 2, 2]) == (0.5, 1.0)
    # the same cells known to hold one value each: the upper bound is the exact gap
    assert stats.ks_bounds([2, 2, 0], [0, 2, 2], [False, True, False])[1] == 0.5
    assert list(stats.point_cells([1.0, float(np.nextafter(1.0, 2.0)), 3.0])) == [
        False,
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError, match="no rows"):
        stats.psi([0, 0], [1, 1], 1e-4)


def _log_reference_on(lake: Lake, settings: Settings, features: list[str]) -> tuple[bool, dict]:
    """``log_reference`` inside a training stage run and an MLflow run: (stored, the run's tags)."""
    with stages.run(lake, stages.TRAIN) as io:
        use_tracking(settings)
        with within_run(None, run_name="reference-test") as active:
            stored = log_reference(io, settings, settings.train, features)
    return stored, client(settings).get_run(active.info.run_id).data.tags


@pytest.mark.slow
def test_a_vacuumed_training_snapshot_is_tagged_and_any_other_failure_raised(
    spark: SparkSession, pipeline_copy: tuple[Settings, Lake], engine: str
) -> None:
    """Only missing files (the silver version prepare read, vacuumed) are survived, on both engines."""
    settings, copy = pipeline_copy
    lake = Lake(spark, copy.root, engine)  # type: ignore[arg-type]
    with pytest.raises(AnalysisException, match="no_such_feature"):
        _log_reference_on(lake, settings, ["no_such_feature"])

    lake.write(lake.read(SILVER_TRACKS).localCheckpoint(), SILVER_TRACKS)  # every file rewritten
    assert lake.vacuum(SILVER_TRACKS), "vacuum removed nothing: the old version is still readable"
    stored, tags = _log_reference_on(lake, settings, ["tempo"])
    assert not stored
    assert re.search(r"PATH_NOT_FOUND|FILE_NOT_EXIST", tags[MISSING_TAG]), tags
