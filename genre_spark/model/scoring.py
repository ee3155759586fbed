"""The Python worker's half of ``genre score``: Arrow batches of raw tracks -> probabilities, ranks.

Why Arrow, not pandas. A batch arrives as one struct column of the raw
feature columns; each is read as a numpy view of its Arrow buffer (a copy
only where a null becomes NaN), and the version's own transform
(``FeatureTransform.apply``, what the registered pyfunc runs; tests hold it
equal to the Spark columns that built the training inputs) makes the
``[n, inputs]`` matrix. Spark's column version of the transform, run before
the UDF, took 2 of the 3 seconds that scoring 300k rows spent outside the
model (BENCHMARKS.md, section 8c). The result leaves as Arrow: the
``[n, genres]`` probability matrix is the values buffer of one
``array<double>`` column, the top-k label indices are int32 columns, all
wrapped around the numpy buffers. No pandas DataFrame, no per-row Python
object, on either side (``pyspark.ml``'s ``predict_batch_udf`` builds a
pandas DataFrame of a struct each way).

The numbers are those of :func:`~genre_spark.model.pyfunc.class_probabilities`
(the one forward pass every scorer runs) on chunks of ``batch_size`` rows of
each Arrow batch, the chunks ``predict_batch_udf`` made, and the ranking is
:func:`~genre_spark.model.pyfunc.ranking` (``torch.argmax``'s tie rule).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from pyspark.sql import types as T

from genre_spark.model.pyfunc import class_probabilities, ranking
from genre_spark.model.registry import ModelArtifact

#: Arrow batch in, Arrow struct array out.
BatchScorer = Callable[[pa.Array], pa.StructArray]


def input_columns(tracks: pa.StructArray) -> dict[str, np.ndarray]:
    """The raw feature columns of a struct batch as numpy (a view where Arrow has no nulls).

    A null becomes NaN (an integer column with one becomes float64), what
    :meth:`~genre_spark.features.transform.FeatureTransform.apply` reads as
    missing; the struct's own slice offset is honoured (``flatten``).
    """
    fields = tracks.flatten()
    return {
        tracks.type.field(i).name: np.asarray(column.to_numpy(zero_copy_only=False))
        for i, column in enumerate(fields)
    }


def result_array(
    probabilities: np.ndarray, order: np.ndarray, kind: pa.StructType
) -> pa.StructArray:
    """The struct ``kind`` (``p``: array<double>, ``r0..``: int32) over the numpy results."""
    n, genres = probabilities.shape
    offsets = pa.array(np.arange(0, n * genres + 1, genres, dtype=np.int32))
    p = pa.ListArray.from_arrays(offsets, pa.array(probabilities.reshape(-1)), type=kind[0].type)
    ranks = [pa.array(np.ascontiguousarray(order[:, k])) for k in range(kind.num_fields - 1)]
    return pa.StructArray.from_arrays([p, *ranks], fields=list(kind))


def _load(
    artifact: ModelArtifact, genres: int, batch_size: int, return_type: T.StructType
) -> BatchScorer:
    import torch
    from pyspark import TaskContext
    from pyspark.sql.pandas.types import to_arrow_type

    from genre_spark.model.registry import load_artifact

    context = TaskContext.get()
    if context is not None:
        # One task per core: torch's default (all cores, or Spark's per-executor
        # OMP_NUM_THREADS) would oversubscribe the CPUs the other tasks use.
        torch.set_num_threads(max(1, context.cpus()))
    loaded = load_artifact(artifact)
    network, transform = loaded.model, loaded.transform
    kind = to_arrow_type(return_type)
    assert isinstance(kind, pa.StructType)

    def predict(tracks: pa.Array) -> pa.StructArray:
        x = transform.apply(input_columns(tracks))
        chunks = [
            class_probabilities(network, x[i : i + batch_size])
            for i in range(0, len(x), batch_size)
        ]
        probabilities = np.concatenate(chunks) if chunks else np.empty((0, genres))
        return result_array(probabilities, ranking(probabilities), kind)

    return predict


def batch_scorer(
    key: uuid.UUID,
    artifact: ModelArtifact,
    genres: int,
    batch_size: int,
    return_type: T.StructType,
) -> BatchScorer:
    """The scorer of ``artifact`` (``genres`` outputs), loaded once per worker
    for the UDF ``key`` names (cached)."""
    from pyspark.ml.model_cache import ModelCache

    scorer = ModelCache.get(key)
    if scorer is None:
        scorer = _load(artifact, genres, batch_size, return_type)
        ModelCache.add(key, scorer)
    return scorer
