"""Content hash of every table in a lake, to compare two pipeline runs (a refactor's before/after).

    PYTHONPATH=$PWD python benchmarks/table_hashes.py /tmp/lake_a > a.txt

One line per catalogue table: name, rows and an order-independent hash of its
rows with the timestamp-typed columns (wall-clock times) left out, then the
column names. Timestamps are the only columns two runs over the same input
are allowed to differ in; a table that differs elsewhere is named by ``diff``.
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.lake import TABLES, Lake


def table_hash(lake: Lake, name: str) -> str:
    df = lake.read(name)
    kept = sorted(f.name for f in df.schema.fields if not isinstance(f.dataType, T.TimestampType))
    types = {f.name: f.dataType for f in df.schema.fields}
    columns = [
        F.array_sort(F.map_entries(F.col(f"`{c}`")))
        if isinstance(types[c], T.MapType)
        else F.col(f"`{c}`")
        for c in kept
    ]
    row_hash = F.xxhash64(*columns).cast("decimal(38,0)")
    result = df.agg(F.count(F.lit(1)).alias("n"), F.sum(row_hash).alias("h")).first()
    return f"{result['n']} {result['h'] or 0} {','.join(kept)}"


def main(root: str) -> None:
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.memory", "2g")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    lake = Lake(spark, root, "delta-rs")
    for name in TABLES:
        if lake.exists(name):
            print(name, table_hash(lake, name), flush=True)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
