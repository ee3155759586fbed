"""Per-rank shards of gold.features: each training process reads its own files.

The driver computes only the snapshot's file list (``lake.files``, Delta log
metadata) and hands it to the training function; rank ``r`` of ``w`` reads
``files[r::w]`` with pyarrow, so no process, the driver included, ever holds
the whole table (ARCHITECTURE decision 6). Splitting by file, not by row
group, keeps the rule obvious and the shards disjoint by construction; the
price is that a table with fewer files than ranks cannot be trained on, which
:func:`shard_files` says clearly (rewrite the table with more files, e.g.
``repartition``, or use fewer processes).

Labels: a genre's index is its position in the sorted list of distinct
training genres, gathered from every rank (:func:`genre_index`), and stored
with the model so scoring never recomputes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genre_spark.errors import GenreError, MissingColumnError
from genre_spark.lake.engine import arrow_file

COLUMNS = ("genre", "split", "features", "is_outlier")


class NotEnoughFilesError(GenreError):
    """gold.features has fewer Parquet files than training processes."""


class FeatureShapeError(GenreError):
    """A feature vector whose length differs from the configured feature list."""


@dataclass
class Shard:
    """One rank's rows of one split: scaled features and genre labels (as strings)."""

    x: np.ndarray  # float32 [n, n_features]
    genres: np.ndarray  # object [n]

    def __len__(self) -> int:
        return len(self.genres)


def shard_files(files: list[str], rank: int, world_size: int) -> list[str]:
    """Rank ``rank``'s share of ``files``: every ``world_size``-th file starting at ``rank``.

    >>> shard_files(["a", "b", "c", "d", "e"], 1, 2)
    ['b', 'd']
    """
    if len(files) < world_size:
        raise NotEnoughFilesError(
            f"gold.features has {len(files)} data file(s) but training uses {world_size} "
            "processes, and each process reads whole files; rewrite gold.features with at "
            "least that many files or lower train.num_processes"
        )
    return sorted(files)[rank::world_size]


def _hive_values(path: str) -> dict[str, str]:
    """``key=value`` folder names in a file's path: Delta partition columns are not in the file."""
    return dict(p.split("=", 1) for p in path.replace("\\", "/").split("/") if "=" in p)


def _read_file(path: str) -> pa.Table:
    """The columns training needs from one file, partition columns restored from its path."""
    filesystem, where = arrow_file(path)
    present = set(pq.read_schema(where, filesystem=filesystem).names)
    table = pq.read_table(
        where, columns=[c for c in COLUMNS if c in present], filesystem=filesystem
    )
    for column, value in _hive_values(path).items():
        if column in COLUMNS and column not in present:
            table = table.append_column(column, pa.array([value] * table.num_rows))
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise MissingColumnError(f"{path}: gold.features file lacks column(s) {missing}")
    return table


def read_shard(
    files: list[str], split: str, n_features: int, exclude_outliers: bool = False
) -> Shard:
    """Rows of ``split`` in ``files``, optionally without DBSCAN outliers."""
    tables = [_read_file(f) for f in files]
    if not tables:
        return Shard(np.zeros((0, n_features), np.float32), np.array([], dtype=object))
    table = pa.concat_tables(tables, promote_options="default")
    keep = pc.equal(table["split"], split)
    if exclude_outliers:
        keep = pc.and_(keep, pc.invert(pc.fill_null(table["is_outlier"], False)))
    table = table.filter(keep)
    vectors = table["features"].combine_chunks()
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != n_features or lengths.max() != n_features):
        raise FeatureShapeError(
            f"gold.features vectors must have {n_features} values (the transform's inputs); "
            f"found lengths {sorted(set(lengths.tolist()))}"
        )
    x = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return Shard(x.reshape(-1, n_features), table["genre"].to_numpy(zero_copy_only=False))


def genre_index(genres: list[str]) -> dict[str, int]:
    """Label index = position in the sorted distinct training genres."""
    return {g: i for i, g in enumerate(sorted(set(genres)))}


def encode(shard: Shard, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Features and integer labels; rows of genres unknown to ``index`` are dropped."""
    labels = np.array([index.get(g, -1) for g in shard.genres], dtype=np.int64)
    known = labels >= 0
    return shard.x[known], labels[known]


def balanced_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency class weights, ``total / (n_classes * count)`` (1.0 each when balanced).

    Computed from the all-reduced per-genre counts, so every rank uses the
    same weights. A genre with no training rows gets weight 0 (it never
    appears as a target).
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights
