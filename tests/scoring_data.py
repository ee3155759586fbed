"""A small scored catalogue's ingredients: silver-like tracks with gaps, a registered random CNN.

Shared by the scoring tests (``genre score``) and the pyfunc tests (the same
model through MLflow's loaders), which compare against each other's output.
"""

from __future__ import annotations

import numpy as np
import torch
from pyspark.sql import DataFrame, SparkSession

from genre_spark.config import Settings
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.model.cnn import GenreCNN
from genre_spark.model.registry import register_model
from genre_spark.schema import FEATURES

GENRES = ["folk", "jazz", "metal", "pop"]
METADATA = ("popularity", "year", "key", "mode")


def catalogue(spark: SparkSession, n: int, seed: int) -> DataFrame:
    """Silver-like rows in Spotify units; some lack instrumentalness or popularity, some have
    key -1 (no key detected), one lacks its id."""
    rng = np.random.default_rng(seed)
    scale = {"tempo": 200.0, "loudness": -60.0, "duration_ms": 400_000.0}
    rows = []
    for i in range(n):
        values: dict[str, object] = {f: float(rng.random() * scale.get(f, 1.0)) for f in FEATURES}
        values |= {
            "popularity": None if i % 5 < 2 else int(rng.integers(0, 101)),
            "year": int(rng.integers(1960, 2025)),
            "key": -1 if i % 11 == 0 else int(rng.integers(0, 12)),
            "mode": int(rng.integers(0, 2)),
        }
        if i % 17 == 0:
            values["instrumentalness"] = None
        rows.append((f"t{seed}-{i:04d}" if i != 5 else None, *values.values()))
    ddl = ", ".join(
        ["track_id string", *(f"{f} double" for f in FEATURES), *(f"{f} int" for f in METADATA)]
    )
    return spark.createDataFrame(rows, ddl)


def register_cnn(
    lake: Lake, settings: Settings, seed: int, transform: FeatureTransform
) -> tuple[str, GenreCNN]:
    torch.manual_seed(seed)
    model = GenreCNN(
        len(transform.outputs),
        len(GENRES),
        channels=4,
        depth=1,
        kernel_size=3,
        dropout=0.0,
        members=2,
    )
    version = register_model(
        lake,
        settings,
        model,
        params={"seed": seed},
        metrics={"val_accuracy": 0.5, "val_macro_f1": 0.4},
        genres=GENRES,
        transform=transform,
    ).version
    return version, model.eval()
