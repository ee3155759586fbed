"""spark-submit job for test_cluster_training.py: barrier-mode training several times in a row.

Trains the same small blob table ``runs`` times with ``train.local_mode=false``
(one barrier task per rank on the cluster's executors), then once with local
processes beside the driver as the reference, and writes each run's wall time,
history and metrics as JSON.

    spark-submit tests/cluster_training_job.py OUT.json RUNS WORKDIR
"""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

from blobs import blob_features
from pyspark.sql import SparkSession

from genre_spark.config import load_settings
from genre_spark.model import train
from genre_spark.schema import FEATURES


def main(out: Path, runs: int, workdir: Path) -> None:
    spark = SparkSession.builder.getOrCreate()
    settings = load_settings(
        overrides={
            "lake": str(workdir / "lake"),
            "train": {
                "epochs": 3,
                "patience": 3,
                "min_epoch_steps": 1,  # exactly 3 epochs, whatever the row count
                "batch_size": 64,
                "channels": 4,
                "depth": 1,
                "num_processes": 2,
                "collective_timeout_s": 60,
            },
        },
        environ={},
    )
    folder = workdir / "features"
    blob_features(spark, 900, ["blues", "folk", "metal"], list(FEATURES), files=4).write.parquet(
        str(folder)
    )
    files = sorted(glob.glob(str(folder / "*.parquet")))
    results = []
    for run, local_mode in enumerate([False] * runs + [True]):
        started = time.monotonic()
        result = train.fit(
            spark,
            files,
            settings.train.model_copy(update={"local_mode": local_mode}),
            list(FEATURES),
        )
        seconds = time.monotonic() - started
        print(f"run {run + 1} (local_mode={local_mode}): {seconds:.1f}s", flush=True)
        results.append(
            {
                "local_mode": local_mode,
                "seconds": seconds,
                "history": result.history,
                "metrics": result.metrics,
            }
        )
    out.write_text(json.dumps(results))
    spark.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
