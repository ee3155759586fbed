"""Ingest speed: Spark into Delta (land + refresh_silver) against pandas + deltalake.write_deltalake.

    python benchmarks/ingest_speed.py --tracks 100000
    python benchmarks/ingest_speed.py --tracks 1000000

Both sides start from the same rows that already exist: the synthetic
catalogue is generated once in Spark and written to a Parquet file BEFORE any
clock starts (its generation time is printed on its own, not in the ratio).

Spark side, in a fresh lake, timed in two parts, i.e. what every ``genre
ingest`` does after its source has produced rows: ``land`` (read the rows,
append them to bronze.tracks_raw as strings, one commit) and
``refresh_silver`` (genre map, typing, range and required checks, dedup by
track_id, conflicting genres to quarantine, then bronze.quarantine and
silver.tracks, each one Delta commit, counts read back).

Reference, in this process: the same Parquet file read into pandas (also
before the clock), then timed: write the raw rows to a Delta table with
``write_deltalake`` (land), type every canonical column
(``pd.to_numeric(errors="coerce")``), quarantine rows with an unknown genre
label, a missing required field, an unparseable or out-of-range value, or a
track_id under two genres, keep one row per track_id (later copies to
quarantine, as Spark does), and write quarantine and silver with
``write_deltalake``. The reference builds no quarantine ``record`` JSON and
reads no counts back: it does a little less work. "same counts" says whether
both sides put the same number of rows in silver and in quarantine.
The ratio is Spark rows/s / pandas rows/s.

Then, in the same lake (holding the N-row source), ``land`` of a second,
``--small``-row source (10,000): bronze.tracks_raw is partitioned by source,
so this replaces one small partition; the goal is <= 0.2x the time of
landing the N-row source.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import write_deltalake
from measure import RolePeaks, header, measured  # benchmarks/ is on sys.path when run as a script
from pyspark.sql import types as T

from genre_spark.config import load_settings
from genre_spark.ingest.genres import UNKNOWN_LABELS
from genre_spark.ingest.land import land, refresh_silver
from genre_spark.ingest.synthetic import SOURCE_NAME, generate
from genre_spark.lake import Lake
from genre_spark.schema import TRACK_FIELDS
from genre_spark.session import get_spark


def pandas_ingest(raw: pd.DataFrame, out: Path) -> tuple[int, int]:
    """Land, type, check, dedup and write ``raw`` with pandas + delta-rs; (silver, quarantined)."""
    write_deltalake(str(out / "bronze"), raw, mode="overwrite")
    typed = raw.copy()
    label = raw["genre"].str.strip().str.lower()
    bad = (raw["reject_reason"].notna() | label.isin(UNKNOWN_LABELS)).to_numpy()
    for field in TRACK_FIELDS:
        column = raw[field.name]
        if isinstance(field.dtype, T.StringType):
            value = column
        else:
            value = pd.to_numeric(column, errors="coerce")
            bad |= (column.notna() & value.isna()).to_numpy()
            if field.low is not None:
                bad |= ((value < field.low) | (value > field.high)).fillna(False).to_numpy()
            if isinstance(field.dtype, T.IntegerType):
                value = value.astype("Int32")
        if field.required:
            bad |= value.isna().to_numpy()
        typed[field.name] = value
    kept = typed[~bad]
    genres_per_id = kept.groupby("track_id")["genre"].transform("nunique")
    conflict = np.zeros(len(typed), dtype=bool)
    conflict[np.flatnonzero(~bad)[(genres_per_id > 1).to_numpy()]] = True
    clean = ~bad & ~conflict
    duplicate = np.zeros(len(typed), dtype=bool)
    duplicate[np.flatnonzero(clean)[typed[clean].duplicated("track_id").to_numpy()]] = True
    quarantine = typed[~clean | duplicate]
    silver = typed[clean & ~duplicate]
    write_deltalake(str(out / "quarantine"), quarantine.astype(str), mode="overwrite")
    write_deltalake(str(out / "silver"), silver.drop(columns=["reject_reason"]), mode="overwrite")
    return len(silver), len(quarantine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--workdir", default=None, help="default: a temporary folder, removed")
    parser.add_argument("--small", type=int, default=10_000, help="rows of the second source")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ingest-bench-"))
    settings = load_settings(
        overrides={
            "lake": str(workdir / "lake"),
            "spark.master": args.master,
            "ingest.synthetic.tracks": args.tracks,
        }
    )
    spark = get_spark(settings)
    try:
        lake = Lake(spark, settings.lake, settings.engine)
        generated = str(workdir / "generated.parquet")
        with measured() as generation:
            generate(spark, settings.ingest.synthetic).write.parquet(generated)
        with RolePeaks() as peaks, measured() as landing:
            land(lake, spark.read.parquet(generated), SOURCE_NAME)
        with RolePeaks() as silver_peaks, measured() as silvering:
            summary = refresh_silver(lake, settings)
        small = spark.read.parquet(generated).limit(args.small).cache()
        small.count()  # the small source's rows exist before the clock, like the large one's
        with measured() as small_landing:
            land(lake, small, "benchmark:small")
        raw = pd.read_parquet(generated)
        with RolePeaks() as reference_peaks, measured() as reference:
            ref_silver, ref_quarantined = pandas_ingest(raw, workdir / "pandas")
    finally:
        spark.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    spark_s = landing.seconds + silvering.seconds
    rows = summary.rows_in
    print(header("python benchmarks/ingest_speed.py " + " ".join(sys.argv[1:])))
    same = (summary.silver_rows, summary.quarantined) == (ref_silver, ref_quarantined)
    print(
        "| rows in | generation s (not timed) | spark land s | spark validate+silver s "
        "| spark rows/s | silver / quarantined | pandas+write_deltalake s | pandas rows/s "
        "| same counts | spark / pandas | spark driver py+JVM MB | pandas process MB |"
    )
    print("|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|")
    print(
        f"| {rows:,} | {generation.seconds:.1f} | {landing.seconds:.1f} | {silvering.seconds:.1f} "
        f"| {rows / spark_s:,.0f} | {summary.silver_rows:,} / {summary.quarantined:,} "
        f"| {reference.seconds:.1f} | {rows / reference.seconds:,.0f} "
        f"| {'yes' if same else f'no (pandas {ref_silver:,} / {ref_quarantined:,})'} "
        f"| {reference.seconds / spark_s:.2f} "
        f"| {max(peaks.driver, silver_peaks.driver):,.0f} | {reference_peaks.python:,.0f} |"
    )
    print()
    print("| land N-row source s | land small source s (beside it) | small / N |")
    print("|---:|---:|---:|")
    print(
        f"| {landing.seconds:.1f} ({rows:,} rows) | {small_landing.seconds:.1f} ({args.small:,} rows) "
        f"| {small_landing.seconds / landing.seconds:.2f} |"
    )


if __name__ == "__main__":
    main()
