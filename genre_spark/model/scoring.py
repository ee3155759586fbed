"""The Python worker's half of ``genre score``: Arrow batches of input vectors -> probabilities, ranks.

Why Arrow, not pandas. A batch arrives as one ``array<double>`` column of
the model's input vectors; its values buffer *is* the ``[n, inputs]`` matrix,
so reading it is a view, not a conversion. The result leaves the same way:
the ``[n, genres]`` probability matrix is the values buffer of one
``array<double>`` column, the top-k label indices are int32 columns, all
wrapped around the numpy buffers. No pandas DataFrame, no per-row Python
object, on either side (``pyspark.ml``'s ``predict_batch_udf`` builds a
pandas DataFrame of a struct each way; that cost about as much as the
model: BENCHMARKS.md, section 8c).

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
import pyarrow.compute as pc
from pyspark.sql import types as T

from genre_spark.model.pyfunc import class_probabilities, ranking
from genre_spark.model.registry import ModelArtifact

#: Arrow batch in, Arrow struct array out.
BatchScorer = Callable[[pa.Array], pa.StructArray]


def input_matrix(vectors: pa.Array, width: int) -> np.ndarray:
    """``[n, width]`` float64 over an ``array<double>`` column's values (a view when it can be).

    A null vector, or one of another length, is an error: the transform
    builds every vector whole (a missing value is imputed before it gets
    here), so either would mean rows scored against the wrong inputs.
    """
    if vectors.null_count:
        raise ValueError(f"{vectors.null_count} input vector(s) are null")
    lengths = pc.list_value_length(vectors)
    if len(vectors) and pc.min_max(lengths).as_py() != {"min": width, "max": width}:
        raise ValueError(f"input vectors must all have {width} values, got {pc.unique(lengths)}")
    values = vectors.flatten()  # honours a sliced array's offset
    return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(len(vectors), width)


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
    artifact: ModelArtifact, width: int, genres: int, batch_size: int, return_type: T.StructType
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
    network = load_artifact(artifact).model
    kind = to_arrow_type(return_type)
    assert isinstance(kind, pa.StructType)

    def predict(vectors: pa.Array) -> pa.StructArray:
        x = input_matrix(vectors, width)
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
    width: int,
    genres: int,
    batch_size: int,
    return_type: T.StructType,
) -> BatchScorer:
    """The scorer of ``artifact`` (``width`` inputs, ``genres`` outputs), loaded once per worker
    for the UDF ``key`` names (cached)."""
    from pyspark.ml.model_cache import ModelCache

    scorer = ModelCache.get(key)
    if scorer is None:
        scorer = _load(artifact, width, genres, batch_size, return_type)
        ModelCache.add(key, scorer)
    return scorer
