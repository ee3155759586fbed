"""The prepare stage's I/O layer: read silver.tracks once, write the gold tables.

The cores (split, normalize, outliers, baselines, trends) are pure DataFrame
functions; this module wires them to the lake. Every table is one atomic
Delta overwrite, and the stage is idempotent: the same silver version and
settings give the same table contents (only ``fitted_at``/``computed_at``
differ). All reads use the one silver.tracks version recorded in
gold.normalizer, so the tables agree with each other even if ingest commits
meanwhile. gold.prepare_manifest brackets the writes (``running`` before,
``complete`` after), so a run that stops part-way is refused downstream
instead of mixing (see ``manifest``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.prepare import manifest
from genre_spark.prepare.baselines import (
    genre_baselines,
    genre_matches,
    genre_parameters,
    genre_playlists,
)
from genre_spark.prepare.manifest import TABLES
from genre_spark.prepare.normalize import apply_normalizer, fit_normalizer, normalizer_parameters
from genre_spark.prepare.outliers import OutlierResult, flag_outliers
from genre_spark.prepare.split import SPLITS, assign_split
from genre_spark.prepare.trends import trends_by_year
from genre_spark.schema import FEATURES

_FEATURE_COLUMNS = (
    "track_id",
    "genre",
    "split",
    "features",
    "is_outlier",
    "is_core",
    "year",
    "popularity",
)


class EmptyCatalogError(RuntimeError):
    """silver.tracks has no tracks (or none in the train split) to prepare."""


class OutlierCoverageError(RuntimeError):
    """The outlier flags do not cover every track exactly once."""


@dataclass(frozen=True)
class PrepareSummary:
    """What one prepare run read and wrote, for the CLI and the pipeline log."""

    silver_version: int
    tracks: int
    splits: dict[str, int]
    imputed: dict[str, int]
    tracks_without_year: int
    scaler: str
    eps: float
    min_samples: int
    n_outliers: int
    rows: dict[str, int]

    def lines(self) -> list[str]:
        """Human-readable report, one fact per line."""
        split = ", ".join(f"{name} {self.splits[name]:,}" for name in SPLITS)
        lines = [
            f"silver.tracks v{self.silver_version}: {self.tracks:,} tracks ({split})",
            f"normalizer: {self.scaler} scaling fitted on {self.splits['train']:,} train tracks",
        ]
        for feature, count in self.imputed.items():
            if count:
                lines.append(
                    f"imputed {feature} at the train center for {count:,} track(s) without it"
                )
        lines.append(
            f"DBSCAN: eps {self.eps:.4g}, min_samples {self.min_samples}: "
            f"{self.n_outliers:,} outlier(s) of {self.tracks:,} tracks flagged (not removed)"
        )
        if self.tracks_without_year:
            lines.append(f"{self.tracks_without_year:,} track(s) without a year: not in trends")
        lines += [f"{name}: {count:,} rows" for name, count in self.rows.items()]
        return lines


def _counts(tracks: DataFrame, features: list[str]) -> dict[str, int]:
    """Tracks, per split, per missing feature and without a year, in one pass."""
    row = tracks.agg(
        F.count(F.lit(1)).alias("tracks"),
        *[F.count_if(F.col("split") == s).alias(f"split:{s}") for s in SPLITS],
        *[F.count_if(F.col(f).isNull()).alias(f"missing:{f}") for f in features],
        F.count_if(F.col("year").isNull()).alias("no_year"),
    ).first()
    return row.asDict() if row is not None else {}


def _fit(tracks: DataFrame, settings: Settings, version: int) -> DataFrame:
    """Fit on train, check every feature could be fitted, and pin the result (a few rows)."""
    fitted = fit_normalizer(
        tracks.where(F.col("split") == "train"),
        settings.features,
        settings.prepare.scaler,
        version,
    )
    rows = fitted.collect()
    normalizer = tracks.sparkSession.createDataFrame(rows, fitted.schema)
    normalizer_parameters(normalizer, settings.features)
    return normalizer


def _outliers(vectors: DataFrame, settings: Settings) -> OutlierResult:
    cfg = settings.prepare.dbscan
    return flag_outliers(
        vectors.select("track_id", "features"),
        cfg.eps,
        cfg.min_samples,
        k_distance_quantile=cfg.k_distance_quantile,
        sample_size=cfg.sample_size,
        slabs=cfg.slabs,
    )


def outlier_params(result: OutlierResult, features: list[str], version: int) -> DataFrame:
    """The one-row gold.outlier_params for a DBSCAN run over ``version`` of silver.tracks."""
    schema = T.StructType(
        [
            T.StructField("eps", T.DoubleType()),
            T.StructField("min_samples", T.IntegerType()),
            T.StructField("metric", T.StringType()),
            T.StructField("features", T.ArrayType(T.StringType())),
            T.StructField("n_points", T.LongType()),
            T.StructField("n_outliers", T.LongType()),
            T.StructField("version", T.LongType()),
        ]
    )
    row = (
        float(result.eps),
        int(result.min_samples),
        result.metric,
        list(features),
        int(result.n_points),
        int(result.n_outliers),
        version,
    )
    spark = result.flags.sparkSession
    return spark.createDataFrame([row], schema).withColumn("computed_at", F.current_timestamp())


def run(lake: Lake, settings: Settings) -> PrepareSummary:
    """Read silver.tracks, write every gold table of the prepare stage, and say what was done."""
    features = list(settings.features)
    version = lake.version("silver.tracks")
    tracks = assign_split(lake.read("silver.tracks", version), settings.prepare.split).persist()
    try:
        counts = _counts(tracks, features)
        if not counts.get("tracks"):
            raise EmptyCatalogError("silver.tracks is empty: run `genre ingest ...` first")
        if not counts["split:train"]:
            raise EmptyCatalogError(
                "no track falls in the train split; add tracks or change prepare.split"
            )
        train = tracks.where(F.col("split") == "train")

        normalizer = _fit(tracks, settings, version)
        manifest.mark_running(lake)
        written: dict[str, int] = {}

        def write(df: DataFrame, name: str) -> None:
            """Overwrite ``name``; its version goes into the manifest once every table is written."""
            written[name] = lake.write(df, name)

        write(normalizer, "gold.normalizer")

        vectors = apply_normalizer(tracks, normalizer, features)
        result = _outliers(vectors, settings)
        if result.n_points != counts["tracks"]:
            raise OutlierCoverageError(
                f"DBSCAN saw {result.n_points} points for {counts['tracks']} tracks"
            )
        partitions = max(4, settings.spark.shuffle_partitions)
        gold_features = (
            vectors.join(result.flags.select("track_id", "is_outlier", "is_core"), "track_id")
            .select(*_FEATURE_COLUMNS)
            .repartition(partitions, "track_id")
            .sortWithinPartitions("track_id")
        )
        write(gold_features, "gold.features")
        result.flags.unpersist()
        write(outlier_params(result, features, version), "gold.outlier_params")

        write(genre_baselines(train, FEATURES), "gold.genre_baselines")
        with_gaps = apply_normalizer(tracks, normalizer, features, impute=False)
        parameters = genre_parameters(with_gaps.where(F.col("split") == "train"))
        write(genre_matches(with_gaps, parameters, len(features)), "gold.genre_matches")
        playlists = genre_playlists(
            lake.read("gold.genre_matches", written["gold.genre_matches"]),
            tracks,
            settings.prepare.playlist_size,
        )
        write(playlists, "gold.genre_playlists")
        write(trends_by_year(tracks, FEATURES), "gold.trends_by_year")
        manifest.mark_complete(lake, written)
    finally:
        tracks.unpersist()
    rows = {info.name: info.rows for info in lake.tables() if info.name in TABLES}
    return PrepareSummary(
        silver_version=version,
        tracks=counts["tracks"],
        splits={s: counts[f"split:{s}"] for s in SPLITS},
        imputed={f: counts[f"missing:{f}"] for f in features},
        tracks_without_year=counts["no_year"],
        scaler=settings.prepare.scaler,
        eps=float(result.eps),
        min_samples=int(result.min_samples),
        n_outliers=int(result.n_outliers),
        rows={name: rows[name] for name in TABLES},
    )
