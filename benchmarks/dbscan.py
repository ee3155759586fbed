"""Exact DBSCAN at scale: wall time and peak driver memory, and equality with scikit-learn.

Generates a standardized 10-dimensional blob mixture in Spark (10 correlated
blobs of different spreads plus 1 % uniform outliers, as the synthetic catalog
has genres and outliers), runs ``flag_outliers`` on it with the default eps
heuristic, and, with ``--sklearn-rows N``, runs scikit-learn's DBSCAN on the
first N rows (collected here for the reference; the library never collects)
with the same eps and min_samples and checks the flags are equal.

    .venv/bin/python benchmarks/dbscan.py --rows 200000 --sklearn-rows 200000
    .venv/bin/python benchmarks/dbscan.py --rows 1000000

Peak RSS is sampled every 0.2 s for this Python process (the driver's Python
side), its JVM child (driver and, in local mode, executors) and the Python
workers the JVM starts (where the per-slab KD-trees live).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from measure import RolePeaks, header, measured  # benchmarks/ is on sys.path when run as a script
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from sklearn.cluster import DBSCAN

from genre_spark.config import load_settings
from genre_spark.prepare.outliers import OutlierResult, flag_outliers
from genre_spark.session import get_spark

BLOBS = 10
OUTLIER_SHARE = 0.01


def blob_mixture(spark: SparkSession, rows: int, dim: int, partitions: int, seed: int) -> DataFrame:
    """``track_id``, ``features`` (standardized array<double>): blobs with correlated spread."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.5, size=(BLOBS, dim))
    spreads = rng.uniform(0.3, 0.8, size=BLOBS)
    mixing = np.eye(dim) + rng.normal(scale=0.3, size=(dim, dim))

    def pick(values: np.ndarray, blob: Column) -> Column:
        return F.element_at(F.array(*[F.lit(float(v)) for v in values]), blob + 1)

    base = spark.range(rows, numPartitions=partitions).select(
        F.format_string("b%09d", "id").alias("track_id"),
        F.floor(F.rand(seed) * BLOBS).cast("int").alias("blob"),
        (F.rand(seed + 1) < OUTLIER_SHARE).alias("stray"),
        *[F.randn(seed + 2 + k).alias(f"z{k}") for k in range(dim)],
        *[(F.rand(seed + 2 + dim + k) * 12 - 6).alias(f"u{k}") for k in range(dim)],
    )
    raw = base.select(
        "track_id",
        *[
            F.when(F.col("stray"), F.col(f"u{j}"))
            .otherwise(
                pick(centres[:, j], F.col("blob"))
                + pick(spreads, F.col("blob"))
                * sum(F.col(f"z{k}") * float(mixing[j, k]) for k in range(dim))
            )
            .alias(f"x{j}")
            for j in range(dim)
        ],
    )
    stats = raw.agg(
        *[F.mean(f"x{j}").alias(f"m{j}") for j in range(dim)],
        *[F.stddev_pop(f"x{j}").alias(f"s{j}") for j in range(dim)],
    ).first()
    scaled = [(F.col(f"x{j}") - stats[f"m{j}"]) / stats[f"s{j}"] for j in range(dim)]
    return raw.select("track_id", F.array(*scaled).alias("features"))


def sklearn_check(sample: DataFrame, result: OutlierResult) -> tuple[int, float, bool]:
    """scikit-learn on ``sample`` (collected) vs ``result``, computed by Spark on the same rows."""
    points = sample.orderBy("track_id").toPandas()
    flags = result.flags.orderBy("track_id").toPandas()
    x = np.stack(points["features"].to_numpy())
    start = time.perf_counter()
    model = DBSCAN(eps=result.eps, min_samples=result.min_samples).fit(x)
    seconds = time.perf_counter() - start
    core = np.zeros(len(x), dtype=bool)
    core[model.core_sample_indices_] = True
    equal = bool(
        flags["track_id"].tolist() == points["track_id"].tolist()
        and (flags["is_outlier"].to_numpy() == (model.labels_ == -1)).all()
        and (flags["is_core"].to_numpy() == core).all()
    )
    return len(x), seconds, equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--sklearn-rows", type=int, default=0, help="0: no scikit-learn check")
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--slabs", type=int, default=8)
    parser.add_argument("--eps", type=float, default=None, help="default: k-distance heuristic")
    parser.add_argument("--min-samples", type=int, default=None, help="default: 2 x dim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[*]")
    args = parser.parse_args()

    settings = load_settings(overrides={"spark.master": args.master}, environ={})
    spark = get_spark(settings)
    data = blob_mixture(spark, args.rows, args.dim, args.partitions, args.seed).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    data.count()

    with RolePeaks() as peaks, measured() as run:
        result = flag_outliers(data, args.eps, args.min_samples, slabs=args.slabs, seed=args.seed)
    if args.sklearn_rows:
        sample = data
        if args.sklearn_rows < args.rows:
            sample = data.orderBy("track_id").limit(args.sklearn_rows)
            result = flag_outliers(sample, result.eps, result.min_samples, slabs=args.slabs)
        checked, sk_seconds, equal = sklearn_check(sample, result)
        # A time ratio only where both sides clustered the same rows.
        ratio = f"{run.seconds / sk_seconds:.2f}" if checked == args.rows else "-"
        sk = f"{checked} | {sk_seconds:.1f} | {'yes' if equal else 'NO'} | {ratio}"
    else:
        sk = "- | - | - | -"

    command = "benchmarks/dbscan.py " + " ".join(sys.argv[1:])
    print(header(command))
    print(
        "| rows | dim | eps | min_samples | outliers | spark s | peak RSS MB (py+JVM+workers) "
        "| driver py MB | JVM MB | workers MB | sklearn rows | sklearn s | equal "
        "| spark s / sklearn s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result.n_points} | {args.dim} | {result.eps:.4f} | {result.min_samples} "
        f"| {result.n_outliers} | {run.seconds:.1f} | {peaks.total:.0f} "
        f"| {peaks.python:.0f} | {peaks.jvm:.0f} | {peaks.workers:.0f} | {sk} |"
    )
    spark.stop()


if __name__ == "__main__":
    main()
