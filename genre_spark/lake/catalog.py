"""The table catalogue: every lake table's name, grain and writer, in one place.

A table named ``layer.name`` lives at ``<lake>/<layer>/<name>``, so any Delta
reader (Spark, DuckDB's ``delta_scan``, Polars' ``read_delta``) finds it by path.

A table's partition columns are declared here too, where a job replaces or
merges one part of it at a time: gold.scored by ``model_version`` (scoring
one version rewrites only that version's files) and bronze.tracks_raw by
``source_key`` (landing one source rewrites only that source's files). The
Delta log keeps partition values out of the data files; every Delta reader
restores them from the log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from genre_spark.errors import UsageError


class UnknownTableError(UsageError):
    """A table name that is not in the catalogue."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    grain: str
    written_by: str
    #: Partition columns a write that creates or overwrites the table lays it out by.
    partition_by: tuple[str, ...] = ()


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "bronze.tracks_raw",
            "one row per source row, values as received",
            "ingest",
            partition_by=("source_key",),
        ),
        TableSpec(
            "bronze.quarantine", "one row per rejected row, with reason", "ingest (validate)"
        ),
        TableSpec(
            "bronze.spotify_responses",
            "one row per fetched Spotify/provider object",
            "ingest spotify",
        ),
        TableSpec("silver.tracks", "one typed, valid row per track_id", "ingest (validate)"),
        TableSpec(
            "gold.features", "one row per track: split, scaled vector, outlier flags", "prepare"
        ),
        TableSpec(
            "gold.normalizer", "one row per feature: the fitted feature transform", "prepare"
        ),
        TableSpec(
            "gold.outlier_params", "one row per DBSCAN run: eps, min_samples, counts", "prepare"
        ),
        TableSpec(
            "gold.genre_baselines",
            "one row per (genre, feature): mean, median, std, quartiles",
            "prepare",
        ),
        TableSpec("gold.genre_matches", "one row per (track, genre): match score", "prepare"),
        TableSpec("gold.genre_playlists", "top-N tracks per genre audience", "prepare"),
        TableSpec(
            "gold.trends_by_year", "one row per (year, genre): counts, means, share", "prepare"
        ),
        TableSpec(
            "gold.prepare_manifest",
            "one row per prepare table: the version its last complete run wrote",
            "prepare",
        ),
        TableSpec("gold.models", "one row per registered model version", "train"),
        # schema: genre_spark.model.promote.PROMOTIONS_SCHEMA
        TableSpec(
            "gold.promotions",
            "one row per promotion decision: candidate, previous champion, scores, outcome",
            "promote",
        ),
        TableSpec("gold.reference_predictions", "one row per (track, reference model)", "train"),
        TableSpec(
            "gold.scored",
            "one row per (track_id, model_version)",
            "score",
            partition_by=("model_version",),
        ),
        TableSpec("gold.confusion", "one row per (model, split, true, predicted)", "evaluate"),
        TableSpec("gold.evaluation", "one row per (model, split, genre or average)", "evaluate"),
        # schema: genre_spark.drift.run.DRIFT_SCHEMA
        TableSpec(
            "gold.drift",
            "one row per (model version, feature or genre, baseline, current) comparison",
            "drift",
        ),
    )
}


def spec(name: str) -> TableSpec:
    """Look a table up, with an error that lists the known names."""
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownTableError(f"unknown table {name!r}; known tables: {sorted(TABLES)}") from None


def table_path(root: str, name: str) -> str:
    """``<root>/<layer>/<name>`` for a catalogue table (URIs such as s3a:// are kept as they are)."""
    layer, table = spec(name).name.split(".", 1)
    if "://" in root:
        return f"{root.rstrip('/')}/{layer}/{table}"
    return os.path.join(os.path.abspath(root), layer, table)
