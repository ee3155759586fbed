"""The prepare stage's I/O layer: read silver.tracks once, write the gold tables.

The cores (split, normalize, outliers, baselines, trends) are pure DataFrame
functions; this module wires them to the lake. Every table is one atomic
Delta overwrite through the stage runner (``genre_spark.stages``: each table
checked against its catalogue schema first), and the stage is idempotent: the same silver version and
settings give the same table contents (only ``fitted_at``/``computed_at``
differ). All reads use the one silver.tracks version recorded in
gold.normalizer, so the tables agree with each other even if ingest commits
meanwhile. The runner brackets the writes with gold.prepare_manifest
(``running`` before, ``complete`` after), so a run that stops part-way is
refused downstream instead of mixing (see ``manifest``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.errors import GenreError
from genre_spark.features.spark import (
    FitResult,
    apply_transform,
    fit_transform,
    is_missing,
    sub_vector,
    transform_table,
)
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    GOLD_FEATURES,
    GOLD_GENRE_BASELINES,
    GOLD_GENRE_MATCHES,
    GOLD_GENRE_PLAYLISTS,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_TRENDS_BY_YEAR,
    SILVER_TRACKS,
    spec,
)
from genre_spark.prepare.baselines import (
    genre_baselines,
    genre_matches,
    genre_parameters,
    genre_playlists,
)
from genre_spark.prepare.outliers import OutlierResult, flag_outliers
from genre_spark.prepare.split import SPLITS, assign_split
from genre_spark.prepare.trends import trends_by_year
from genre_spark.schema import FEATURES


class EmptyCatalogError(GenreError):
    """silver.tracks has no tracks (or none in the train split) to prepare."""


class OutlierCoverageError(GenreError):
    """The outlier flags do not cover every track exactly once."""


@dataclass(frozen=True)
class PrepareSummary:
    """What one prepare run read and wrote, for the CLI and the pipeline log."""

    silver_version: int
    tracks: int
    splits: dict[str, int]
    features: list[str]
    inputs: int
    #: Share of train tracks with a value, per candidate feature (auto) or listed feature.
    present: dict[str, float]
    auto: bool
    min_present: float
    indicators: list[str]
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
        how = (
            f"auto: present in at least {self.min_present:.0%} of train tracks"
            if self.auto
            else "as configured"
        )
        lines = [
            f"silver.tracks v{self.silver_version}: {self.tracks:,} tracks ({split})",
            f"features ({how}): {', '.join(self.features)} -> {self.inputs} model inputs",
        ]
        left_out = {f: share for f, share in self.present.items() if f not in self.features}
        if left_out:
            lines.append(
                "left out: "
                + ", ".join(f"{f} ({share:.0%} present)" for f, share in left_out.items())
            )
        lines.append(
            f"transform: {self.scaler} scaling of continuous features fitted on "
            f"{self.splits['train']:,} train tracks"
        )
        if self.indicators:
            lines.append(f"missing-value indicator inputs: {', '.join(self.indicators)}")
        for feature, count in self.imputed.items():
            if count:
                lines.append(
                    f"imputed {feature} at the train fill value for {count:,} track(s) without it"
                )
        lines.append(
            f"DBSCAN: eps {self.eps:.4g}, min_samples {self.min_samples}: "
            f"{self.n_outliers:,} outlier(s) of {self.tracks:,} tracks flagged (not removed)"
        )
        if self.tracks_without_year:
            lines.append(f"{self.tracks_without_year:,} track(s) without a year: not in trends")
        lines += [f"{name}: {count:,} rows" for name, count in self.rows.items()]
        return lines


def _counts(tracks: DataFrame) -> dict[str, int]:
    """Tracks, per split and without a year, in one pass."""
    row = tracks.agg(
        F.count(F.lit(1)).alias("tracks"),
        *[F.count_if(F.col("split") == s).alias(f"split:{s}") for s in SPLITS],
        F.count_if(F.col("year").isNull()).alias("no_year"),
    ).first()
    return row.asDict() if row is not None else {}


def _imputed(tracks: DataFrame, transform: FeatureTransform) -> dict[str, int]:
    """Per chosen feature, how many tracks (any split) get its fill value."""
    row = tracks.agg(*[F.count_if(is_missing(f)).alias(f.name) for f in transform.features]).first()
    return {name: int(row[name]) for name in transform.names} if row is not None else {}


def _fit(tracks: DataFrame, settings: Settings) -> FitResult:
    """Choose and fit the features on the train split (one aggregate; a few numbers come back)."""
    cfg = settings.prepare
    return fit_transform(
        tracks.where(F.col("split") == "train"),
        settings.feature_list,
        scaler=cfg.scaler,
        min_present=cfg.min_present,
        quantiles=cfg.quantiles,
    )


def _outliers(vectors: DataFrame, settings: Settings) -> OutlierResult:
    cfg = settings.prepare.dbscan
    return flag_outliers(
        vectors.select("track_id", "_geometry"),
        cfg.eps,
        cfg.min_samples,
        vector_col="_geometry",
        k_distance_quantile=cfg.k_distance_quantile,
        sample_size=cfg.sample_size,
        slabs=cfg.slabs,
    )


def outlier_params(result: OutlierResult, features: list[str], version: int) -> DataFrame:
    """The one-row gold.outlier_params for a DBSCAN run over ``version`` of silver.tracks."""
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
    return spark.createDataFrame([row], spec(GOLD_OUTLIER_PARAMS).stamped_schema()).withColumn(
        "computed_at", F.current_timestamp()
    )


def run(lake: Lake, settings: Settings) -> PrepareSummary:
    """Read silver.tracks, write every gold table of the prepare stage, and say what was done."""
    with stages.run(lake, stages.PREPARE) as io:
        version = io.version(SILVER_TRACKS)
        tracks = assign_split(io.read(SILVER_TRACKS, version), settings.prepare.split).persist()
        summary = _prepare(io, tracks, version, settings)
    tables = stages.PREPARE.outputs
    rows = {info.name: info.rows for info in lake.tables() if info.name in tables}
    return replace(summary, rows={name: rows[name] for name in tables})


def _prepare(
    io: stages.StageRun, tracks: DataFrame, version: int, settings: Settings
) -> PrepareSummary:
    """The prepare tables from ``tracks`` (silver.tracks at ``version``), each written through ``io``."""
    write = io.write
    vectors: DataFrame | None = None
    try:
        counts = _counts(tracks)
        if not counts.get("tracks"):
            raise EmptyCatalogError("silver.tracks is empty: run `genre ingest ...` first")
        if not counts["split:train"]:
            raise EmptyCatalogError(
                "no track falls in the train split; add tracks or change prepare.split"
            )
        train = tracks.where(F.col("split") == "train")

        fitted = _fit(tracks, settings)
        transform = fitted.transform
        # Distances (DBSCAN) and the genre match live in the continuous features' space.
        geometry = transform.continuous()
        write(transform_table(tracks.sparkSession, transform, version), GOLD_NORMALIZER)

        # Computed once and read by DBSCAN's passes, gold.features and the genre match.
        vectors = apply_transform(tracks, transform).persist()
        with_geometry = vectors.withColumn("_geometry", sub_vector(transform, geometry))
        result = _outliers(with_geometry, settings)
        if result.n_points != counts["tracks"]:
            raise OutlierCoverageError(
                f"DBSCAN saw {result.n_points} points for {counts['tracks']} tracks"
            )
        partitions = max(4, settings.spark.shuffle_partitions)
        gold_features = (
            vectors.join(result.flags.select("track_id", "is_outlier", "is_core"), "track_id")
            .select(*spec(GOLD_FEATURES).schema.fieldNames())
            .repartition(partitions, "track_id")
            .sortWithinPartitions("track_id")
        )
        write(gold_features, GOLD_FEATURES)
        result.flags.unpersist()
        write(outlier_params(result, geometry.outputs, version), GOLD_OUTLIER_PARAMS)

        write(genre_baselines(train, FEATURES), GOLD_GENRE_BASELINES)
        with_gaps = vectors.withColumn("features", sub_vector(transform, geometry, impute=False))
        parameters = genre_parameters(with_gaps.where(F.col("split") == "train"))
        write(genre_matches(with_gaps, parameters, len(geometry.outputs)), GOLD_GENRE_MATCHES)
        playlists = genre_playlists(
            io.read(GOLD_GENRE_MATCHES),
            tracks,
            settings.prepare.playlist_size,
        )
        write(playlists, GOLD_GENRE_PLAYLISTS)
        write(trends_by_year(tracks, FEATURES), GOLD_TRENDS_BY_YEAR)
        imputed = _imputed(tracks, transform)
    finally:
        tracks.unpersist()
        if vectors is not None:
            vectors.unpersist()
    return PrepareSummary(
        silver_version=version,
        tracks=counts["tracks"],
        splits={s: counts[f"split:{s}"] for s in SPLITS},
        features=transform.names,
        inputs=len(transform.outputs),
        present=fitted.present,
        auto=fitted.auto,
        min_present=fitted.min_present,
        indicators=[f.name for f in transform.features if f.indicator],
        imputed=imputed,
        tracks_without_year=counts["no_year"],
        scaler=settings.prepare.scaler,
        eps=float(result.eps),
        min_samples=int(result.min_samples),
        n_outliers=int(result.n_outliers),
        rows={},
    )
