"""The table catalogue: every lake table's one definition (name, schema, keys, writer), in one place.

A table named ``layer.name`` lives at ``<lake>/<layer>/<name>``, so any Delta
reader (Spark, DuckDB's ``delta_scan``, Polars' ``read_delta``) finds it by path.
Code names a table by its constant here (``catalog.GOLD_SCORED``) and reads its
columns from ``spec(name).schema``, so ``grep`` finds each table name and each
table schema once. The track's own column list stays in ``genre_spark.schema``
(the track model); silver's and bronze's schemas are built from it.

A table's partition columns are declared here too, where a job replaces or
merges one part of it at a time: gold.scored by ``model_version`` (scoring
one version rewrites only that version's files) and bronze.tracks_raw by
``source_key`` (landing one source rewrites only that source's files). The
Delta log keeps partition values out of the data files; every Delta reader
restores them from the log.

``time_columns`` are a table's wall-clock columns: a re-run is the same data
at a later time, so content comparisons (``lake.content_hash``) leave them out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyspark.sql import types as T

from genre_spark.errors import UsageError
from genre_spark.schema import (
    FEATURES,
    INGESTED_AT,
    REJECT_REASON,
    SOURCE,
    SOURCE_KEY,
    TRACK_COLUMNS,
    TRACK_FIELDS,
)

BRONZE_TRACKS_RAW = "bronze.tracks_raw"
BRONZE_QUARANTINE = "bronze.quarantine"
BRONZE_SPOTIFY_RESPONSES = "bronze.spotify_responses"
SILVER_TRACKS = "silver.tracks"
GOLD_FEATURES = "gold.features"
GOLD_NORMALIZER = "gold.normalizer"
GOLD_OUTLIER_PARAMS = "gold.outlier_params"
GOLD_GENRE_BASELINES = "gold.genre_baselines"
GOLD_GENRE_MATCHES = "gold.genre_matches"
GOLD_GENRE_PLAYLISTS = "gold.genre_playlists"
GOLD_TRENDS_BY_YEAR = "gold.trends_by_year"
GOLD_PREPARE_MANIFEST = "gold.prepare_manifest"
GOLD_MODELS = "gold.models"
GOLD_PROMOTIONS = "gold.promotions"
GOLD_REFERENCE_PREDICTIONS = "gold.reference_predictions"
GOLD_SCORED = "gold.scored"
GOLD_CONFUSION = "gold.confusion"
GOLD_EVALUATION = "gold.evaluation"
GOLD_DRIFT = "gold.drift"


class UnknownTableError(UsageError):
    """A table name that is not in the catalogue."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    grain: str
    #: The stage that writes the table (named in "run ... first" errors).
    written_by: str
    #: Every column, in order: the one definition of the table's schema.
    schema: T.StructType
    #: Columns that identify a row: unique in the table, the keys a merge matches on.
    keys: tuple[str, ...] = ()
    #: Partition columns a write that creates or overwrites the table lays it out by.
    partition_by: tuple[str, ...] = ()
    #: Wall-clock columns (stamped when the row was written).
    time_columns: tuple[str, ...] = ()

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    def stamped_schema(self) -> T.StructType:
        """The schema without its time columns: the rows a stage builds before stamping them."""
        return T.StructType([f for f in self.schema.fields if f.name not in self.time_columns])


def _fields(*columns: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(name, dtype) for name, dtype in columns])


_S, _L, _I, _D, _B, _TS = (
    T.StringType(),
    T.LongType(),
    T.IntegerType(),
    T.DoubleType(),
    T.BooleanType(),
    T.TimestampType(),
)
_STRINGS, _DOUBLES = T.ArrayType(_S), T.ArrayType(_D)


def raw_row_schema() -> T.StructType:
    """A bronze.tracks_raw row as a source adapter delivers it: canonical names, values as received.

    Keeping bronze as strings means one validation step types and checks every
    source the same way, and a value that fails to parse is still kept to be
    quarantined with its reason. Landing adds the partition column ``source_key``.
    """
    return T.StructType(
        [T.StructField(name, _S) for name in TRACK_COLUMNS]
        + [
            T.StructField(SOURCE, _S),
            T.StructField("source_row", _L),
            T.StructField(REJECT_REASON, _S),
            T.StructField(INGESTED_AT, _TS),
        ]
    )


def _track_schema() -> T.StructType:
    """silver.tracks: the typed canonical fields plus lineage."""
    return T.StructType(
        [T.StructField(f.name, f.dtype, nullable=not f.required) for f in TRACK_FIELDS]
        + [
            T.StructField(SOURCE, _S, nullable=False),
            T.StructField(INGESTED_AT, _TS, nullable=False),
        ]
    )


def _responses_schema() -> T.StructType:
    """bronze.spotify_responses: one row per fetched object (or tombstone), keyed by request."""
    return T.StructType(
        [
            T.StructField("request_key", _S, nullable=False),
            T.StructField("kind", _S, nullable=False),
            *_fields(
                ("object_id", _S),
                ("genre", _S),
                ("position", _L),
                ("provider", _S),
                ("status", _I),
                ("body", _S),
                (REJECT_REASON, _S),
                ("fetched_at", _TS),
            ).fields,
        ]
    )


_SPECS: tuple[TableSpec, ...] = (
    TableSpec(
        BRONZE_TRACKS_RAW,
        "one row per source row, values as received",
        "ingest",
        T.StructType([*raw_row_schema().fields, T.StructField(SOURCE_KEY, _S)]),
        keys=(SOURCE, "source_row"),
        partition_by=(SOURCE_KEY,),
        time_columns=(INGESTED_AT,),
    ),
    TableSpec(
        BRONZE_QUARANTINE,
        "one row per rejected row, with reason",
        "ingest (validate)",
        # The rejected row as JSON (``record``), with why and from where.
        _fields(
            ("track_id", _S),
            (SOURCE, _S),
            ("source_row", _L),
            ("reason", _S),
            ("record", _S),
            ("quarantined_at", _TS),
        ),
        time_columns=("quarantined_at",),
    ),
    TableSpec(
        BRONZE_SPOTIFY_RESPONSES,
        "one row per fetched Spotify/provider object",
        "ingest spotify",
        _responses_schema(),
        keys=("request_key",),
        time_columns=("fetched_at",),
    ),
    TableSpec(
        SILVER_TRACKS,
        "one typed, valid row per track_id",
        "ingest (validate)",
        _track_schema(),
        keys=("track_id",),
        time_columns=(INGESTED_AT,),
    ),
    TableSpec(
        GOLD_FEATURES,
        "one row per track: split, scaled vector, outlier flags",
        "prepare",
        _fields(
            ("track_id", _S),
            ("genre", _S),
            ("split", _S),
            ("features", _DOUBLES),
            ("is_outlier", _B),
            ("is_core", _B),
            ("year", _I),
            ("popularity", _I),
        ),
        keys=("track_id",),
    ),
    TableSpec(
        GOLD_NORMALIZER,
        "one row per feature: the fitted feature transform",
        "prepare",
        _fields(
            ("position", _I),
            ("feature", _S),
            ("kind", _S),
            ("method", _S),
            ("fill", _D),
            ("indicator", _B),
            ("present", _D),
            ("center", _D),
            ("scale", _D),
            ("period", _D),
            ("knots_x", _DOUBLES),
            ("knots_z", _DOUBLES),
            ("inputs", _STRINGS),
            ("version", _L),
            ("fitted_at", _TS),
        ),
        keys=("feature",),
        time_columns=("fitted_at",),
    ),
    TableSpec(
        GOLD_OUTLIER_PARAMS,
        "one row per DBSCAN run: eps, min_samples, counts",
        "prepare",
        _fields(
            ("eps", _D),
            ("min_samples", _I),
            ("metric", _S),
            ("features", _STRINGS),
            ("n_points", _L),
            ("n_outliers", _L),
            ("version", _L),
            ("computed_at", _TS),
        ),
        keys=("version",),
        time_columns=("computed_at",),
    ),
    TableSpec(
        GOLD_GENRE_BASELINES,
        "one row per (genre, feature): mean, median, std, quartiles",
        "prepare",
        _fields(
            ("genre", _S),
            ("feature", _S),
            ("count", _L),
            *[(c, _D) for c in ("mean", "std", "min", "q25", "median", "q75", "max")],
        ),
        keys=("genre", "feature"),
    ),
    TableSpec(
        GOLD_GENRE_MATCHES,
        "one row per (track, genre): match score",
        "prepare",
        _fields(
            ("track_id", _S),
            ("genre", _S),
            ("label", _S),
            ("match", _D),
            ("log_likelihood", _D),
        ),
        keys=("track_id", "genre"),
    ),
    TableSpec(
        GOLD_GENRE_PLAYLISTS,
        "top-N tracks per genre audience",
        "prepare",
        _fields(
            ("genre", _S),
            ("rank", _I),
            ("track_id", _S),
            ("title", _S),
            ("artist", _S),
            ("label", _S),
            ("match", _D),
        ),
        keys=("genre", "rank"),
    ),
    TableSpec(
        GOLD_TRENDS_BY_YEAR,
        "one row per (year, genre): counts, means, share",
        "prepare",
        _fields(
            ("year", _I),
            ("genre", _S),
            ("tracks", _L),
            ("share", _D),
            ("mean_popularity", _D),
            *[(f"mean_{f}", _D) for f in FEATURES],
        ),
        keys=("year", "genre"),
    ),
    TableSpec(
        GOLD_PREPARE_MANIFEST,
        "one row per prepare table: the version its last complete run wrote",
        "prepare",
        _fields(("table", _S), ("version", _L), ("state", _S), ("prepared_at", _TS)),
        keys=("table",),
        time_columns=("prepared_at",),
    ),
    TableSpec(
        GOLD_MODELS,
        "one row per registered model version",
        "train",
        _fields(
            ("version", _S),
            ("created_at", _TS),
            ("params", _S),
            ("val_accuracy", _D),
            ("val_macro_f1", _D),
            ("mlflow_run_id", _S),
            ("genres", _STRINGS),
            ("features", _STRINGS),
            ("kind", _S),
            # Registry aliases on the version (``champion``, ``challenger``), kept in
            # sync by ``registry.sync_aliases`` whenever one moves.
            ("aliases", _STRINGS),
        ),
        keys=("version",),
        time_columns=("created_at",),
    ),
    TableSpec(
        GOLD_PROMOTIONS,
        "one row per promotion decision: candidate, previous champion, scores, outcome",
        "promote",
        _fields(
            ("version", _S),  # the candidate
            ("previous_champion", _S),  # null: there was none
            ("candidate_val_macro_f1", _D),
            ("champion_val_macro_f1", _D),
            ("margin", _D),
            ("outcome", _S),  # promoted | forced | refused | unchanged
            ("reason", _S),
            ("decided_at", _TS),
        ),
        time_columns=("decided_at",),
    ),
    TableSpec(
        GOLD_REFERENCE_PREDICTIONS,
        "one row per (track, reference model)",
        "train",
        _fields(("track_id", _S), ("model", _S), ("split", _S), ("genre", _S), ("predicted", _S)),
        keys=("track_id", "model"),
    ),
    TableSpec(
        GOLD_SCORED,
        "one row per (track_id, model_version)",
        "score",
        _fields(
            ("track_id", _S),
            ("model_version", _S),
            ("predicted_genre", _S),
            ("probabilities", T.MapType(_S, _D)),
            ("top3", _STRINGS),
            ("scored_at", _TS),
        ),
        keys=("track_id", "model_version"),
        partition_by=("model_version",),
        time_columns=("scored_at",),
    ),
    TableSpec(
        GOLD_CONFUSION,
        "one row per (model, split, true, predicted)",
        "evaluate",
        _fields(("model", _S), ("split", _S), ("genre", _S), ("predicted", _S), ("count", _L)),
        keys=("model", "split", "genre", "predicted"),
    ),
    TableSpec(
        GOLD_EVALUATION,
        "one row per (model, split, genre or average)",
        "evaluate",
        _fields(
            ("model", _S),
            ("split", _S),
            ("genre", _S),
            ("precision", _D),
            ("recall", _D),
            ("f1", _D),
            ("support", _L),
            ("accuracy", _D),
        ),
        keys=("model", "split", "genre"),
    ),
    TableSpec(
        GOLD_DRIFT,
        "one row per (model version, feature or genre, baseline, current) comparison",
        "drift",
        _fields(
            ("model_version", _S),
            ("kind", _S),  # feature | prediction
            ("name", _S),  # a feature, a genre, or "(all genres)"
            ("baseline", _S),  # what is compared with: training split or a run
            ("current", _S),  # the table version or scoring run compared
            ("baseline_rows", _L),
            ("current_rows", _L),
            ("baseline_missing", _D),  # share of rows without a value
            ("current_missing", _D),
            ("baseline_share", _D),  # predictions: the genre's share
            ("current_share", _D),
            ("psi", _D),
            ("ks", _D),
            ("ks_upper", _D),
            ("bin_edges", _DOUBLES),  # PSI bins' inner edges
            ("baseline_hist", _DOUBLES),  # value shares per PSI bin
            ("current_hist", _DOUBLES),
            ("psi_threshold", _D),
            ("ks_threshold", _D),
            ("missing_threshold", _D),
            ("drifted", _B),
            ("computed_at", _TS),
        ),
        keys=("model_version", "kind", "name", "baseline", "current"),
        time_columns=("computed_at",),
    ),
)

TABLES: dict[str, TableSpec] = {s.name: s for s in _SPECS}
#: Every table's wall-clock columns, for comparisons across tables (``content_hash``).
TIME_COLUMNS: frozenset[str] = frozenset(c for s in _SPECS for c in s.time_columns)


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
