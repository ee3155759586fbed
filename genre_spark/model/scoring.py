"""The Python worker's half of ``genre score``: Arrow batches of raw tracks -> gold.scored rows.

Why Arrow, not pandas. A batch holds track_id and the raw feature columns;
each is read as a numpy view of its Arrow buffer (a copy only where a null
becomes NaN), and the version's own transform (``FeatureTransform.apply``,
what the registered pyfunc runs; tests hold it equal to the Spark columns
that built the training inputs) makes the ``[n, inputs]`` matrix. Spark's
column version of the transform, run before the model, took 2 of the 3
seconds that scoring 300k rows spent outside it (BENCHMARKS.md, section 8c).

The whole gold.scored row is built here, as Arrow arrays over the numpy
results: the probability map's values are the ``[n, genres]`` matrix as it
is, its keys and the top 3 are the genre names taken by label index. No
pandas DataFrame, no per-row Python object, and nothing left for the JVM to
compute: the same function runs under Spark's ``mapInArrow`` and, on the
delta-rs engine, over the source table's files directly
(``Lake.merge_mapped``), where no row passes through the JVM at all.

The numbers are those of :func:`~genre_spark.model.pyfunc.class_probabilities`
(the one forward pass every scorer runs) on chunks of ``batch_size`` rows of
each Arrow batch, and the ranking is :func:`~genre_spark.model.pyfunc.ranking`
(``torch.argmax``'s tie rule).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from genre_spark.features.transform import FeatureTransform
from genre_spark.model.pyfunc import class_probabilities, ranking
from genre_spark.model.registry import ModelArtifact

#: gold.scored's ranked genres per row.
TOP_K = 3

#: The network and its transform: raw columns in, ``[n, genres]`` probabilities out.
Probabilities = Callable[[dict[str, np.ndarray]], np.ndarray]


def input_columns(batch: pa.RecordBatch, names: list[str]) -> dict[str, np.ndarray]:
    """The columns ``names`` of a batch as numpy (a view where Arrow has no nulls).

    A null becomes NaN (an integer column with one becomes float64), what
    :meth:`~genre_spark.features.transform.FeatureTransform.apply` reads as
    missing.
    """
    return {name: np.asarray(batch.column(name).to_numpy(zero_copy_only=False)) for name in names}


@dataclass(frozen=True)
class Scorer:
    """gold.scored rows of one model version, batch by batch: what every scoring task runs.

    Picklable (Spark ships it to the workers); the network loads once per
    worker and job, from the artifact the driver located, cached under
    ``key`` (a fresh key per job keeps a later job from reusing a model).
    Rows without a track_id are left out (they cannot be keyed), and with
    ``skip_missing`` so are rows with a missing feature value; the others are
    scored with the transform's fill rule.
    """

    key: uuid.UUID
    artifact: ModelArtifact
    version: str
    genres: tuple[str, ...]
    transform: FeatureTransform
    batch_size: int
    skip_missing: bool
    #: Stamped on every row of the job (Spark's ``current_timestamp()`` is the query's start too).
    scored_at: dt.datetime
    #: gold.scored's Arrow schema, which every batch leaves with.
    schema: pa.Schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        probabilities = self._model()
        for batch in batches:
            yield self.rows(batch, probabilities)

    def rows(self, batch: pa.RecordBatch, probabilities: Probabilities) -> pa.RecordBatch:
        """The gold.scored rows of one batch of track_id + raw feature columns."""
        columns = input_columns(batch, self.transform.names)  # converted once, filtered as numpy
        keep = batch.column("track_id").is_valid().to_numpy(zero_copy_only=False)
        if self.skip_missing:
            keep = keep & ~self.transform.gaps(columns)
        if not keep.all():
            columns = {name: values[keep] for name, values in columns.items()}
        track_ids = batch.column("track_id").filter(pa.array(keep))
        return self._result(track_ids, probabilities(columns))

    def _result(self, track_ids: pa.Array, p: np.ndarray) -> pa.RecordBatch:
        n, k = len(track_ids), len(self.genres)
        names = pa.array(self.genres, pa.string())
        top = ranking(p)[:, : min(TOP_K, k)]
        fields = {f.name: f.type for f in self.schema}
        columns = {
            "track_id": track_ids.cast(pa.string()),
            "model_version": pa.repeat(pa.scalar(self.version, pa.string()), n),
            "predicted_genre": names.take(pa.array(top[:, 0])),
            "probabilities": pa.MapArray.from_arrays(
                pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
                names.take(pa.array(np.tile(np.arange(k, dtype=np.int32), n))),
                pa.array(p.reshape(-1), pa.float64()),
                type=fields["probabilities"],
            ),
            "top3": pa.ListArray.from_arrays(
                pa.array(np.arange(0, n * top.shape[1] + 1, top.shape[1], dtype=np.int32)),
                names.take(pa.array(top.reshape(-1))),
                type=fields["top3"],
            ),
            "scored_at": pa.repeat(pa.scalar(self.scored_at, fields["scored_at"]), n),
        }
        return pa.RecordBatch.from_arrays(
            [columns[f.name] for f in self.schema], schema=self.schema
        )

    def _model(self) -> Probabilities:
        from pyspark.ml.model_cache import ModelCache

        model = ModelCache.get(self.key)
        if model is None:
            model = self._load()
            ModelCache.add(self.key, model)
        return model

    def _load(self) -> Probabilities:
        import torch
        from pyspark import TaskContext

        from genre_spark.model.registry import load_artifact

        context = TaskContext.get()
        if context is not None:
            # One task per core: torch's default (all cores, or Spark's per-executor
            # OMP_NUM_THREADS) would oversubscribe the CPUs the other tasks use.
            torch.set_num_threads(max(1, context.cpus()))
        loaded = load_artifact(self.artifact)
        network, transform, size = loaded.model, loaded.transform, self.batch_size

        def probabilities(columns: dict[str, np.ndarray]) -> np.ndarray:
            x = transform.apply(columns)
            chunks = [class_probabilities(network, x[i : i + size]) for i in range(0, len(x), size)]
            return np.concatenate(chunks) if chunks else np.empty((0, len(self.genres)))

        return probabilities
