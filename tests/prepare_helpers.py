"""Small silver.tracks frames for the prepare-stage tests (numpy, seeded; no ingest needed)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from genre_spark.lake.catalog import SILVER_TRACKS, spec
from genre_spark.schema import FEATURES, FIELD_BY_NAME

GENRES = ("pop", "rock", "jazz", "metal")


def silver_pandas(
    n_per_genre: int = 150, genres: tuple[str, ...] = GENRES, seed: int = 0, prefix: str = "t"
) -> pd.DataFrame:
    """Tracks whose features cluster by genre, every value inside its schema range."""
    rng = np.random.default_rng(seed)
    frames = []
    for g, genre in enumerate(genres):
        n = n_per_genre
        data: dict[str, object] = {
            "track_id": [f"{prefix}{genre}{i:05d}" for i in range(n)],
            "title": [f"{genre} song {i}" for i in range(n)],
            "artist": [f"artist {i % 17}" for i in range(n)],
            "genre": genre,
            "year": rng.integers(1960, 2024, n).astype("int32"),
            "popularity": rng.integers(0, 101, n).astype("int32"),
            "key": rng.integers(0, 12, n).astype("int32"),
            "mode": rng.integers(0, 2, n).astype("int32"),
        }
        for j, feature in enumerate(FEATURES):
            field = FIELD_BY_NAME[feature]
            low, high = field.low, field.high
            if high - low > 10:  # tempo, loudness, duration_ms: a genre-shifted band
                width = min(
                    high - low, {"tempo": 200, "loudness": 40, "duration_ms": 400_000}[feature]
                )
                base = {"tempo": 60, "loudness": -40, "duration_ms": 100_000}[feature]
                mean = base + width * (0.3 + 0.4 * ((g + j) % len(genres)) / len(genres))
                values = rng.normal(mean, width * 0.08, n)
            else:
                mean = 0.2 + 0.6 * ((g * 3 + j) % len(genres)) / max(len(genres) - 1, 1)
                values = rng.normal(mean, 0.1, n)
            data[feature] = np.clip(values, low, high)
        frames.append(pd.DataFrame(data))
    out = pd.concat(frames, ignore_index=True)
    out["source"] = "test"
    out["ingested_at"] = datetime(2026, 1, 1)
    return out[[f.name for f in spec(SILVER_TRACKS).schema.fields]]


def silver_frame(spark: SparkSession, pdf: pd.DataFrame) -> DataFrame:
    """The pandas tracks as a Spark DataFrame with silver.tracks' schema (Arrow turns NaN into null)."""
    return spark.createDataFrame(pdf, schema=spec(SILVER_TRACKS).schema)
