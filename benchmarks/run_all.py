"""`make bench`: every benchmark at the sizes recorded in BENCHMARKS.md, printing the Markdown tables.

    python benchmarks/run_all.py                          # accuracy, then speed at 100k and 1M
    python benchmarks/run_all.py --sizes 100000 --skip accuracy
    python benchmarks/run_all.py --only score,dbscan --sizes 100000,1000000

Accuracy (benchmarks/accuracy.py) runs first, then the speed items
(benchmarks/speed.py) smallest size first, so the important numbers come
out even if a long 1M item is stopped. Numbers vary from run to run and
machine to machine; the ratios against the references, measured in the
same run, are the point.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(name: str, *args: str) -> None:
    """Run one benchmark script; its tables go straight to our stdout."""
    print(f"## {name}\n", flush=True)
    subprocess.run([sys.executable, str(HERE / name), *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000", help="speed sizes, comma-separated")
    parser.add_argument("--only", default="score,train,dbscan,ingest,pipeline", help="speed items")
    parser.add_argument("--dbscan-rows", default="200000", help="DBSCAN rows checked vs sklearn")
    parser.add_argument("--trials", default="20", help="tune trials per data set")
    parser.add_argument("--tune-epochs", default="12", help="epochs per tune trial")
    parser.add_argument("--dataset", default="all", help="tidytuesday | top2000 | all")
    parser.add_argument("--skip", default="", help="accuracy and/or speed, comma-separated")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if "accuracy" not in skip:
        run(
            "accuracy.py",
            *(
                "--dataset",
                args.dataset,
                "--trials",
                args.trials,
                "--tune-epochs",
                args.tune_epochs,
            ),
        )
    if "speed" not in skip:
        run(
            "speed.py",
            *("--sizes", args.sizes, "--only", args.only, "--dbscan-rows", args.dbscan_rows),
        )


if __name__ == "__main__":
    main()
