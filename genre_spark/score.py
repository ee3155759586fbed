"""Batch scoring: a registered model over a whole catalogue, into gold.scored.

How it runs (ARCHITECTURE decision 7). The driver resolves the version
and locates its artifact in MLflow (the only place that touches the
tracking store); the scoring itself is one Python function over Arrow
batches of track_id and the raw feature columns (``Scorer``, the worker's
half in ``model/scoring.py``), and each Python worker loads the artifact
once per job (``load_artifact``; no tracking URI, no experiment). There the
raw columns, read straight from the Arrow buffers (no pandas), become the
model's inputs through the feature transform the version was trained with
(stored in the registered model from gold.normalizer at training time: its
feature list, scaling, fill values and missing indicators, so a later
``genre prepare`` with other features cannot change them), applied by
``FeatureTransform.apply``: the numpy application the registered pyfunc
runs, which tests hold equal to the Spark columns that built the training
inputs (``apply_transform``). The network runs on chunks of
``score.batch_size`` rows of each batch; the softmax, the ranking (one numpy
argsort per chunk) and the whole output row (genre names, probability map,
top 3) are built there as Arrow arrays, so Spark evaluates no expression per
row.

Where the function runs. ``score`` (the pure core) is Spark's
``mapInArrow`` over a DataFrame. ``run`` hands the function to the lake
(``merge_mapped``): when the merge replaces the version's whole partition
(below), the delta-rs engine runs it over silver's Parquet files in Spark
tasks that read them with pyarrow and write gold.scored's files themselves,
so no row crosses into the JVM and back (three crossings before: into the
UDF, out of it, into the writer's worker; BENCHMARKS.md, section 8d); the
delta-spark engine, and any merge that keeps earlier rows, run it under
``mapInArrow`` and merge as before. The same function either way, so the
same rows.

Output rows (gold.scored): track_id, model_version, predicted_genre,
probabilities (map genre -> softmax probability), top3 (genres by falling
probability, ties to the lower label index, as ``torch.argmax``), scored_at.
They are merged on (track_id, model_version): scoring again with the same
model replaces its rows (idempotent); another version adds rows beside them.
gold.scored is partitioned by model_version, so the merge reads and rewrites
that version's partition alone: its cost does not grow with the versions kept.
The pass that counts the input (and refuses a repeated track_id) also counts
the version's earlier rows this run does not score; when there are none (the
usual re-score of the same table) the merge writes the new rows as the
partition's replacement, checked against the table version counted at,
instead of joining them with the old ones: the same rows, without the join.

Missing values (``score.missing``). A row with a null track_id cannot be
keyed and is skipped. A row with a missing feature value is, by default
(``impute``), scored with the transform's rule (the train fill value, and the
missing indicator where the model has one), the same rule that built the
training inputs, so a track is scored exactly as it would have been trained
on; with ``skip`` such rows are left out. Either way the counts are returned
and printed, never silent.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import uuid
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.errors import GenreError
from genre_spark.features.spark import is_missing
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_SCORED, spec
from genre_spark.lake.engine import ArrowMap, arrow_schema
from genre_spark.model.scoring import Scorer

if TYPE_CHECKING:
    from genre_spark.model.registry import ModelArtifact

log = logging.getLogger(__name__)


class ScoreInputError(GenreError):
    """The table to score lacks a column or has a track_id more than once."""


@dataclass(frozen=True)
class ModelSpec:
    """What the driver needs to know about a model to plan scoring; workers load the weights."""

    version: str
    genres: tuple[str, ...]
    #: The transform the model was trained with (its features and their fitted numbers).
    transform: FeatureTransform
    #: Where the version's pyfunc is, resolved on the driver: what each worker loads.
    artifact: ModelArtifact

    @property
    def features(self) -> list[str]:
        """The raw columns the model reads."""
        return self.transform.names


@dataclass(frozen=True)
class InputCounts:
    """One pass over the input: how many rows, and how many lack a key or a feature.

    ``kept``: of the rows the model version already has in gold.scored, how
    many the run leaves as they are (their track_id gets no score this time).
    """

    rows: int
    distinct_track_ids: int
    null_track_id: int
    missing_feature: int
    kept: int = 0


@dataclass(frozen=True)
class ScoreResult:
    """What ``run`` did: the model version, the source, the counts and gold.scored's new version."""

    model_version: str
    source: str
    scored: int
    skipped_null_track_id: int
    missing_feature: int
    missing_rule: str
    table_version: int

    def summary(self) -> str:
        rule = "imputed" if self.missing_rule == "impute" else "skipped"
        return (
            f"scored {self.scored} tracks of {self.source} with model version "
            f"{self.model_version} into {GOLD_SCORED} (version {self.table_version}); "
            f"rows with a missing feature value: {self.missing_feature} ({rule}); "
            f"rows without track_id skipped: {self.skipped_null_track_id}"
        )


def require_columns(df: DataFrame, model: ModelSpec, source: str) -> None:
    """track_id and every raw feature the model reads must be columns of ``df``."""
    absent = [c for c in ["track_id", *model.features] if c not in df.columns]
    if absent:
        raise ScoreInputError(f"{source} lacks column(s) {absent} that model {model.version} needs")


def _any_missing(transform: FeatureTransform) -> Column:
    return reduce(operator.or_, [is_missing(f) for f in transform.features], F.lit(False))


def input_counts(
    df: DataFrame,
    transform: FeatureTransform,
    missing: str = "impute",
    previous: DataFrame | None = None,
) -> InputCounts:
    """Count rows, distinct ids and missing values in one aggregate job (small result).

    ``previous``: the track_ids a version already has in gold.scored. The
    same job then counts those the run does not score (``kept``), so the
    refusal of a repeated track_id and the knowledge that a merge replaces
    every earlier row of the version cost one pass, not two. One group per
    track_id: the input's rows of it (a repeat is a group of two), and whether
    the version has it already.
    """
    has_id = F.col("track_id").isNotNull()
    gaps = _any_missing(transform)
    scored = has_id & ~gaps if missing == "skip" else has_id
    flags = {"_n": F.lit(1), "_g": (has_id & gaps).cast("long"), "_s": scored.cast("long")}
    rows = df.select("track_id", *[v.alias(k) for k, v in flags.items()], F.lit(0).alias("_t"))
    if previous is not None:
        zeros = [F.lit(0).alias(k) for k in flags]
        rows = rows.unionByName(previous.select("track_id", *zeros, F.lit(1).alias("_t")))
    per_id = rows.groupBy("track_id").agg(
        *[F.sum(k).alias(k) for k in flags], F.max("_t").alias("_t")
    )
    row = per_id.agg(
        F.sum("_n").alias("rows"),
        F.count(F.when(has_id & (F.col("_n") > 0), 1)).alias("ids"),
        F.sum(F.when(~has_id, F.col("_n"))).alias("no_id"),
        F.sum("_g").alias("gaps"),
        F.count(F.when((F.col("_t") == 1) & (F.col("_s") == 0), 1)).alias("kept"),
    ).first()
    assert row is not None  # a global aggregate has exactly one row
    return InputCounts(
        row["rows"] or 0, row["ids"], row["no_id"] or 0, row["gaps"] or 0, row["kept"]
    )


def mapping(model: ModelSpec, settings: Settings) -> ArrowMap:
    """gold.scored rows from track_id + the model's raw feature columns, batch by batch.

    The function is :class:`~genre_spark.model.scoring.Scorer`, run in the
    Python workers over Arrow batches (``mapInArrow``, or the source's files
    directly on delta-rs): transform, forward, softmax, ranking and the whole
    output row there, nothing left for Spark's expressions. The model loads
    once per worker and job from the artifact the driver located (the
    closure carries ``artifact``, not the settings); a fresh key per mapping
    keeps a later job from reusing it. The ranking is one vectorised numpy
    argsort per chunk: ranking in the JVM needs higher-order functions (a sort
    of structs per row), which Spark interprets row by row (BENCHMARKS.md,
    section 2). A stable sort of the negated probabilities keeps equal
    probabilities in label order, which is ``torch.argmax``'s tie rule.
    """
    table = spec(GOLD_SCORED).schema
    scorer = Scorer(
        key=uuid.uuid4(),
        artifact=model.artifact,
        version=model.version,
        genres=model.genres,
        transform=model.transform,
        batch_size=settings.score.batch_size,
        skip_missing=settings.score.missing == "skip",
        scored_at=dt.datetime.now(dt.UTC),
        schema=arrow_schema(table),
    )
    return ArrowMap(("track_id", *model.features), scorer, table)


def score(df: DataFrame, model: ModelSpec, settings: Settings) -> DataFrame:
    """gold.scored rows for every scorable row of ``df`` (raw feature columns + track_id).

    Pure: reads nothing, writes nothing. ``model`` names the registered
    version whose weights each worker loads, and carries its transform.
    """
    require_columns(df, model, "the input")
    return mapping(model, settings).over(df)


def model_spec(settings: Settings, version: str | None = None) -> ModelSpec:
    """Resolve and locate ``version`` on the driver, so every worker loads the same artifact."""
    from genre_spark.model.registry import load_artifact, model_artifact

    artifact = model_artifact(settings, version)
    loaded = load_artifact(artifact)
    return ModelSpec(loaded.version, tuple(loaded.genres), loaded.transform, artifact)


def run(
    lake: Lake,
    settings: Settings,
    model_version: str | None = None,
    table: str | None = None,
) -> ScoreResult:
    """Score ``table`` with a registered model and merge the rows into gold.scored.

    ``table`` is any lake table with track_id and the model's raw feature
    columns (the score stage's source: silver.tracks by default; a catalogue
    the model never saw works the same way). Fails before writing if a
    track_id occurs twice.
    """
    model = model_spec(settings, model_version)
    with stages.run(lake, stages.SCORE, source=table) as io:
        read_at = io.version(io.source)
        source = io.read(io.source, read_at)
        require_columns(source, model, io.source)
        # The version's rows already in gold.scored, at the version the merge is checked against.
        at = io.version(GOLD_SCORED) if io.exists(GOLD_SCORED) else None
        previous = None
        if at is not None:
            rows = io.read(GOLD_SCORED, at).where(F.col("model_version") == model.version)
            previous = rows.select("track_id")
        counts = input_counts(source, model.transform, settings.score.missing, previous)
        if counts.distinct_track_ids != counts.rows - counts.null_track_id:
            raise ScoreInputError(
                f"{io.source} has {counts.rows - counts.null_track_id - counts.distinct_track_ids} "
                "repeated track_id row(s); gold.scored keeps one row per (track_id, "
                "model_version), so deduplicate the table first"
            )
        # gold.scored is partitioned by model_version: the merge reads and rewrites
        # this version's files only, every other version's stay as they are. When
        # the run scores every track the version has (re-scoring the same table),
        # no earlier row is kept: the merge is then a replace of the partition,
        # with no join of the new rows against the old.
        version = io.merge_mapped(
            mapping(model, settings),
            GOLD_SCORED,
            partitions=[{"model_version": model.version}],
            covered_at=at if counts.kept == 0 else None,
            source_version=read_at,
        )
    skipped = counts.missing_feature if settings.score.missing == "skip" else 0
    result = ScoreResult(
        model_version=model.version,
        source=io.source,
        scored=counts.rows - counts.null_track_id - skipped,
        skipped_null_track_id=counts.null_track_id,
        missing_feature=counts.missing_feature,
        missing_rule=settings.score.missing,
        table_version=version,
    )
    log.info(result.summary())
    return result
