"""Speed at scale, each number beside its reference measured in the same run.

    python benchmarks/speed.py                                  # every item, recorded sizes
    python benchmarks/speed.py --only score,dbscan --sizes 100000

Items, in the order they run (the cheap, important ones first):

* ``score``: benchmarks/score_speed.py (the scoring Arrow scorer vs in-process torch);
* ``train``: benchmarks/train_speed.py speed (TorchDistributor vs a plain torch loop),
  --train-epochs epochs on both sides;
* ``dbscan``: benchmarks/dbscan.py at --dbscan-rows with scikit-learn on the
  same rows (200k by default; scikit-learn's memory grows
  with the eps-neighbourhoods, several GB at 200k), then alone at each larger size;
* ``ingest``: benchmarks/ingest_speed.py (Spark ingest vs pandas + write_deltalake);
* ``pipeline``: ``genre pipeline --tracks N`` in a subprocess, wall time and
  the peak RSS of its process tree split into driver (Python + JVM) and the
  Python processes under it (Spark workers, TorchDistributor ranks), with the
  settings in PIPELINE_SETTINGS.

Each item runs in its own subprocess (its own Spark application), so one
item's JVM heap or cached data never weighs on the next. Every item prints
its Markdown table; this script prints them one after the other.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from measure import RolePeaks, header, measured  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
GENRE = str(Path(sys.executable).with_name("genre"))
SIZES = (100_000, 1_000_000)
#: Modest model settings on purpose (the references and training would otherwise
#: dominate the wall time on 2 cores); these are what the recorded run used. The
#: driver heap is capped at 2 GB, half the default, at every size: in local mode
#: the executors share that JVM, so a pipeline that brought the catalog to the
#: driver would fail at 1M tracks instead of merely using more memory.
PIPELINE_SETTINGS = (
    "spark.driver_memory=2g",
    "train.epochs=3",
    "train.references.lr_max_iter=20",
    "train.references.rf_trees=20",
    "train.references.rf_max_depth=8",
    "train.references.xgb_rounds=30",
)
STAGE_DONE = re.compile(r"done in ([0-9.]+)s")
STAGE_START = re.compile(r"^(\w+) \.\.\.", re.MULTILINE)


def script(name: str, *args: str) -> str:
    """Run a sibling benchmark script; its stdout (the Markdown table) is returned."""
    done = subprocess.run(
        [PYTHON, str(HERE / name), *args], check=True, stdout=subprocess.PIPE, text=True
    )
    return done.stdout


def echoed(proc: subprocess.Popen[str]) -> str:
    """The process's output, also echoed line by line to stderr: a 1M run's progress is visible."""
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
        lines.append(line)
    proc.wait()
    return "".join(lines)


def pipeline(tracks: int, workdir: Path) -> str:
    """``genre pipeline --tracks N`` in a subprocess, its process tree's peak RSS by role."""
    lake = workdir / f"pipeline-{tracks}"
    args = [GENRE, "pipeline", "--tracks", str(tracks), "--lake", str(lake / "lake")]
    args += ["--set", f"reports={lake / 'reports'}"]
    for setting in PIPELINE_SETTINGS:
        args += ["--set", setting]
    with measured() as wall:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with RolePeaks(pid=proc.pid) as peaks:
            output = echoed(proc)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, args, output)
    stages = dict(zip(STAGE_START.findall(output), STAGE_DONE.findall(output), strict=False))
    command = "genre pipeline --tracks N --set " + " --set ".join(PIPELINE_SETTINGS)
    return (
        header(command)
        + "\n| tracks | wall s | "
        + " | ".join(f"{s} s" for s in stages)
        + " | driver peak MB (python + JVM) | python MB | JVM MB | workers peak MB |\n"
        + "|---:|---:|"
        + "---:|" * len(stages)
        + "---:|---:|---:|---:|\n"
        + f"| {tracks:,} | {wall.seconds:.0f} | "
        + " | ".join(f"{float(v):.0f}" for v in stages.values())
        + f" | {peaks.driver:,.0f} | {peaks.python:,.0f} | {peaks.jvm:,.0f} | {peaks.workers:,.0f} |\n"
    )


def items(args: argparse.Namespace, workdir: Path) -> list[tuple[str, Callable[[], str]]]:
    """(name, thunk) in run order: every item at the small size, then every item at the large."""
    plan: list[tuple[str, Callable[[], str]]] = []
    epochs = str(args.train_epochs)
    for n in args.sizes:
        plan.append(("score", lambda n=n: script("score_speed.py", "--tracks", str(n))))
        plan.append(
            (
                "train",
                lambda n=n: script("train_speed.py", "speed", "--rows", str(n), "--epochs", epochs),
            )
        )
        if n == min(args.sizes):
            rows = str(args.dbscan_rows)
            plan.append(
                ("dbscan", lambda r=rows: script("dbscan.py", "--rows", r, "--sklearn-rows", r))
            )
        else:
            plan.append(("dbscan", lambda n=n: script("dbscan.py", "--rows", str(n))))
        plan.append(("ingest", lambda n=n: script("ingest_speed.py", "--tracks", str(n))))
        plan.append(("pipeline", lambda n=n: pipeline(n, workdir)))
    return [(name, thunk) for name, thunk in plan if name in args.only]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES)
    )
    parser.add_argument("--train-epochs", type=int, default=3, help="both sides of train speed")
    parser.add_argument("--dbscan-rows", type=int, default=200_000, help="rows checked vs sklearn")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=["score", "train", "dbscan", "ingest", "pipeline"],
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="genre-speed-"))
    try:
        for name, thunk in items(args, workdir):
            print(f"### {name}\n\n{thunk()}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
