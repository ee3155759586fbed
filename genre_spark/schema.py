"""The canonical track schema and the one feature list, each feature with its kind.

Every stage (ingest, validate, prepare, train, score, report) reads its column
names and types from here, so a feature is named once in the whole project;
the catalogue (``genre_spark.lake.catalog``) builds bronze's and silver's table
schemas from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pyspark.sql import types as T

#: Spotify's audio features, in Spotify's units (0–1 scores, dB, BPM, ms): what
#: every source delivers, what genre baselines and trends describe.
FEATURES: tuple[str, ...] = (
    "tempo",
    "energy",
    "danceability",
    "loudness",
    "liveness",
    "valence",
    "duration_ms",
    "acousticness",
    "speechiness",
    "instrumentalness",
)


@dataclass(frozen=True)
class Field:
    """One canonical column: its Spark type, whether silver requires it, and its valid range."""

    name: str
    dtype: T.DataType
    required: bool = False
    low: float | None = None
    high: float | None = None


#: The canonical track, in column order. Ranges are Spotify's documented ones
#: (loudness and tempo are given generous physical bounds).
TRACK_FIELDS: tuple[Field, ...] = (
    Field("track_id", T.StringType(), required=True),
    Field("title", T.StringType()),
    Field("artist", T.StringType()),
    Field("genre", T.StringType(), required=True),
    Field("year", T.IntegerType(), low=1900, high=2100),
    Field("tempo", T.DoubleType(), required=True, low=0.0, high=300.0),
    Field("energy", T.DoubleType(), required=True, low=0.0, high=1.0),
    Field("danceability", T.DoubleType(), required=True, low=0.0, high=1.0),
    Field("loudness", T.DoubleType(), required=True, low=-80.0, high=10.0),
    Field("liveness", T.DoubleType(), required=True, low=0.0, high=1.0),
    Field("valence", T.DoubleType(), required=True, low=0.0, high=1.0),
    Field("duration_ms", T.DoubleType(), required=True, low=1_000.0, high=7_200_000.0),
    Field("acousticness", T.DoubleType(), required=True, low=0.0, high=1.0),
    Field("speechiness", T.DoubleType(), required=True, low=0.0, high=1.0),
    Field("instrumentalness", T.DoubleType(), low=0.0, high=1.0),
    Field("key", T.IntegerType(), low=-1, high=11),
    Field("mode", T.IntegerType(), low=0, high=1),
    Field("popularity", T.IntegerType(), low=0, high=100),
)

#: Lineage columns every bronze and silver row carries.
SOURCE = "source"
#: bronze.tracks_raw's partition column: ``source`` made safe for a folder name
#: (``ingest.land.source_key``); a source's rows are one partition.
SOURCE_KEY = "source_key"
INGESTED_AT = "ingested_at"
#: Set in bronze by a source adapter that already knows a row is bad (a
#: malformed CSV line, a track the provider has no features for); validation
#: quarantines such rows with this reason.
REJECT_REASON = "reject_reason"

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in TRACK_FIELDS}
TRACK_COLUMNS: tuple[str, ...] = tuple(f.name for f in TRACK_FIELDS)


class Kind(StrEnum):
    """How a model feature's values are turned into inputs (see ``genre_spark.features``).

    ``continuous``: a number on a scale (scaled by the configured scaler);
    ``cyclic``: a position on a circle of ``period`` values, such as the pitch
    class ``key`` where B (11) and C (0) are neighbours (sin and cos inputs);
    ``binary``: 0 or 1, such as ``mode`` (minor/major).
    """

    CONTINUOUS = "continuous"
    CYCLIC = "cyclic"
    BINARY = "binary"


@dataclass(frozen=True)
class ModelFeature:
    """A canonical field the model can learn from, with its kind (and a cyclic one's period)."""

    name: str
    kind: Kind
    period: float | None = None


#: Every feature the model can learn from, in the order of its inputs: the audio
#: features, then the metadata Spotify and most exports carry. Which of them a
#: catalog gets is decided by ``features`` (``auto``: the ones present in enough
#: train tracks; see ``genre_spark.prepare.transform``).
MODEL_FEATURES: tuple[ModelFeature, ...] = (
    *(ModelFeature(name, Kind.CONTINUOUS) for name in FEATURES),
    ModelFeature("popularity", Kind.CONTINUOUS),
    ModelFeature("year", Kind.CONTINUOUS),
    ModelFeature("key", Kind.CYCLIC, period=12.0),
    ModelFeature("mode", Kind.BINARY),
)
MODEL_FEATURE_BY_NAME: dict[str, ModelFeature] = {f.name: f for f in MODEL_FEATURES}
MODEL_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in MODEL_FEATURES)


def validate_features(features: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Check a configured feature list against MODEL_FEATURES, keeping MODEL_FEATURES' order."""
    unknown = [f for f in features if f not in MODEL_FEATURE_BY_NAME]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; allowed: {list(MODEL_FEATURE_NAMES)}")
    return tuple(f for f in MODEL_FEATURE_NAMES if f in set(features))
