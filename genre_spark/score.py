"""Batch scoring: a registered model over a whole catalogue, into gold.scored.

How it runs (ARCHITECTURE decision 7). The raw feature columns go, as
Arrow batches, to an Arrow UDF (``arrow_udf``, the worker's half in
``model/scoring.py``): the driver resolves the version and locates its
artifact in MLflow (the only place that touches the tracking store), and
each Python worker loads that artifact once per job (``load_artifact``; no
tracking URI, no experiment). There the raw columns, read straight from the
Arrow buffers (no pandas), become the model's inputs through the feature
transform the version was trained with (stored in the registered model from
gold.normalizer at training time: its feature list, scaling, fill values and
missing indicators, so a later ``genre prepare`` with other features cannot
change them), applied by ``FeatureTransform.apply``: the numpy application
the registered pyfunc runs, which tests hold equal to the Spark columns that
built the training inputs (``apply_transform``); Spark's version of it, run
before the UDF, took most of the time scoring spent outside the model
(BENCHMARKS.md, section 8c). The network runs on chunks
of ``score.batch_size`` rows of each Arrow batch. The softmax and the ranking (the label
indices of the top 3, one numpy argsort per chunk) are computed there; the
genre names, the probability map and the top 3 are column expressions over
the model's genre list (label index = position, stored with the model).

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

import logging
import operator
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark import stages
from genre_spark.config import Settings
from genre_spark.errors import GenreError
from genre_spark.features.spark import is_missing
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_SCORED

if TYPE_CHECKING:
    from genre_spark.model.registry import ModelArtifact

log = logging.getLogger(__name__)

TOP_K = 3


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


def scorable(df: DataFrame, transform: FeatureTransform, missing: str = "impute") -> DataFrame:
    """The rows that get a score: a track_id, and (under ``skip``) every feature present."""
    keep = F.col("track_id").isNotNull()
    if missing == "skip":
        keep = keep & ~_any_missing(transform)
    return df.where(keep)


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


def _scores_udf(artifact: ModelArtifact, n_genres: int, batch_size: int) -> Callable[..., Column]:
    """An Arrow UDF: a struct of raw feature columns in, the probabilities ``p`` and top-k ``r<k>`` out.

    Arrow-native end to end (``arrow_udf``, an iterator of Arrow arrays): each
    batch's raw columns are read as numpy views and transformed there
    (``model/scoring.py``), and the result goes back as Arrow arrays over the
    numpy buffers (the probabilities as one ``array<double>`` column: its
    values are the ``[n, genres]`` matrix as it is); no pandas, no per-row
    objects (``pyspark.ml``'s ``predict_batch_udf`` made a pandas DataFrame of
    a struct each way). The forward runs on chunks of ``batch_size`` rows of
    each Arrow batch, as ``predict_batch_udf`` did. The model loads once per worker and job, from
    the artifact the driver located (the closure carries ``artifact``, not the
    settings); a fresh key per UDF keeps a later job from reusing it. The
    ranking is one vectorised numpy argsort per chunk: ranking in the JVM needs
    higher-order functions (a sort of structs per row), which Spark interprets
    row by row (BENCHMARKS.md, section 2). A stable sort of the negated
    probabilities keeps equal probabilities in label order, which is
    ``torch.argmax``'s tie rule.
    """
    from pyspark.sql.pandas.functions import arrow_udf

    ranks = min(TOP_K, n_genres)
    fields = [T.StructField("p", T.ArrayType(T.DoubleType()))]
    fields += [T.StructField(f"r{k}", T.IntegerType()) for k in range(ranks)]
    return_type = T.StructType(fields)
    key = uuid.uuid4()

    def scores(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from genre_spark.model.scoring import batch_scorer

        predict = batch_scorer(key, artifact, n_genres, batch_size, return_type)
        for tracks in batches:
            yield predict(tracks)

    # The kind (an iterator of arrays each way) comes from ``scores``' type hints; pyspark's
    # stubs know a hinted Arrow UDF of a scalar or array result only, not of a struct.
    make: Callable[..., Callable[..., Column]] = arrow_udf
    return make(scores, return_type)


def score(df: DataFrame, model: ModelSpec, settings: Settings) -> DataFrame:
    """gold.scored rows for every scorable row of ``df`` (raw feature columns + track_id).

    Pure: reads nothing, writes nothing. ``model`` names the registered
    version whose weights each worker loads, and carries its transform.
    """
    features = model.features
    require_columns(df, model, "the input")
    rows = scorable(df.select("track_id", *features), model.transform, settings.score.missing)
    n_genres = len(model.genres)
    scores = _scores_udf(model.artifact, n_genres, settings.score.batch_size)
    predicted = rows.select("track_id", scores(F.struct(*features)).alias("_s"))
    labels = F.array(*[F.lit(g) for g in model.genres])
    top = [F.get(labels, F.col(f"_s.r{k}")) for k in range(min(TOP_K, n_genres))]
    return predicted.select(
        "track_id",
        F.lit(model.version).alias("model_version"),
        top[0].alias("predicted_genre"),
        F.map_from_arrays(labels, F.col("_s.p")).alias("probabilities"),
        F.array(*top).alias("top3"),
        F.current_timestamp().alias("scored_at"),
    )


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
        source = io.read(io.source)
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
        version = io.merge(
            score(source, model, settings),
            GOLD_SCORED,
            partitions=[{"model_version": model.version}],
            covered_at=at if counts.kept == 0 else None,
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
