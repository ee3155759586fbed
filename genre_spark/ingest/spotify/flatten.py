"""Flatten: bronze.spotify_responses -> bronze.tracks_raw rows, in Spark (pure).

plan ⋈ tracks ⋈ features, the newest response per request, one row per
planned track. Values stay strings as received; a track missing its object or
its features carries the reason in ``reject_reason``, so every planned track
ends in silver or in quarantine, exactly once.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from genre_spark.ingest.spotify.store import NOT_FETCHED, SOURCE_NAME, TRACK_NOT_FOUND
from genre_spark.lake.catalog import raw_row_schema
from genre_spark.schema import FEATURES, INGESTED_AT, REJECT_REASON, SOURCE

#: Feature fields read from either provider's object (Spotify units, as received):
#: the model's features plus key and mode.
FEATURE_FIELDS = (*FEATURES, "key", "mode")

_TRACK_JSON = (
    "name string, artists array<struct<id: string, name: string>>, "
    "album struct<release_date: string>, duration_ms string, popularity string"
)
_FEATURES_JSON = ", ".join(f"{name} string" for name in FEATURE_FIELDS)


def _latest(responses: DataFrame, *kinds: str) -> DataFrame:
    """The newest row per request key among the given kinds."""
    newest = Window.partitionBy("kind", "request_key").orderBy(F.col("fetched_at").desc())
    return (
        responses.where(F.col("kind").isin(*kinds))
        .withColumn("_n", F.row_number().over(newest))
        .where("_n = 1")
        .drop("_n")
    )


def responses_to_raw(responses: DataFrame, plan_id: str) -> DataFrame:
    """bronze.spotify_responses -> bronze.tracks_raw rows for one plan, one row per planned track.

    The reason, when there is one, is the track's first, then the features'.
    ReccoBeats-shaped features have no duration: the track object's is used.
    """
    plan = (
        _latest(responses, "plan")
        .where(F.col("request_key").startswith(f"plan|{plan_id}|"))
        .select(F.col("object_id").alias("track_id"), "genre", "position")
    )
    tracks = _latest(responses, "track").select(
        F.col("object_id").alias("track_id"),
        F.from_json("body", _TRACK_JSON).alias("t"),
        F.col("body").isNotNull().alias("t_found"),
        F.col(REJECT_REASON).alias("t_reason"),
        F.lit(True).alias("t_fetched"),
    )
    features = _latest(responses, "audio_features").select(
        F.col("object_id").alias("track_id"),
        F.from_json("body", _FEATURES_JSON).alias("f"),
        F.col(REJECT_REASON).alias("f_reason"),
        F.lit(True).alias("f_fetched"),
    )
    joined = plan.join(tracks, "track_id", "left").join(features, "track_id", "left")
    reason = F.coalesce(
        F.when(F.col("t_fetched").isNull(), F.lit(NOT_FETCHED)),
        F.col("t_reason"),
        F.when(~F.col("t_found"), F.lit(TRACK_NOT_FOUND)),
        F.when(F.col("f_fetched").isNull(), F.lit(NOT_FETCHED)),
        F.col("f_reason"),
    )
    values = {
        "track_id": F.col("track_id"),
        "title": F.col("t.name"),
        "artist": F.array_join(F.col("t.artists.name"), ", "),
        "genre": F.col("genre"),
        "year": F.substring(F.col("t.album.release_date"), 1, 4),
        "duration_ms": F.coalesce(F.col("f.duration_ms"), F.col("t.duration_ms")),
        "popularity": F.col("t.popularity"),
        SOURCE: F.lit(SOURCE_NAME),
        "source_row": F.col("position").cast("long"),
        REJECT_REASON: reason,
        INGESTED_AT: F.current_timestamp(),
    }
    for name in FEATURE_FIELDS:
        values.setdefault(name, F.col(f"f.{name}"))
    return joined.select(
        *[values[f.name].cast(f.dataType).alias(f.name) for f in raw_row_schema().fields]
    )
