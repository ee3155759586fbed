"""A test job's cold start with and without the suite's class archive (tests/jvm_archive.py).

    python benchmarks/jvm_start.py [--runs 3] [--tracks 1500]

The test suite starts about thirty JVMs of its own beside its shared session
(subprocess jobs, spark-submit drivers and executors, the standalone master
and workers). tests/jvm_archive.py dumps the classes one Spark job loads into
a class-data-sharing archive, and later JVMs map it. This script dumps the
archive the same way (timed: it is what a test run pays, in the background),
then alternates a typical subprocess job, ``genre ingest synthetic`` of
``--tracks`` tracks into a fresh lake on ``local[2]`` and delta-rs (the tests'
job environment, ``subprocesses.job_env``), with the archive and without it
(the reference), and prints each run's wall time and the medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import header, measured  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import jvm_archive  # noqa: E402 - tests/ is put on the path just above
from subprocesses import job_env  # noqa: E402


def ingest(folder: Path, tracks: int, java_options: str) -> float:
    """Seconds for one ``genre ingest synthetic`` process into a fresh lake."""
    lake = folder / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    env = job_env(**{jvm_archive.DRIVER_OPTS: java_options})
    command = [sys.executable, "-m", "genre_spark.cli", "ingest", "synthetic", "--lake", str(lake)]
    command += ["--set", f"ingest.synthetic.tracks={tracks}"]
    with measured() as took:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"the job failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return took.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind, alternating")
    parser.add_argument("--tracks", type=int, default=1500)
    args = parser.parse_args()
    print(header(f"python benchmarks/jvm_start.py --runs {args.runs} --tracks {args.tracks}"))
    from genre_spark.lake import connector

    with tempfile.TemporaryDirectory(prefix="jvm-start-") as tmp:
        folder = Path(tmp)
        with measured() as dump:
            jvm_archive.start_dump(folder, connector.delta_jars())
            options = jvm_archive.wait(timeout_s=900)
        if options is None:
            raise SystemExit(f"the dump failed: {(folder / 'dump.log').read_text()[-3000:]}")
        size = (folder / "spark-classes.jsa").stat().st_size / 2**20
        print(f"dump: {dump.seconds:.1f} s, archive {size:.0f} MB")
        timed: dict[str, list[float]] = {"archive": [], "plain": []}
        for run in range(1, args.runs + 1):
            timed["archive"].append(ingest(folder, args.tracks, options))
            timed["plain"].append(ingest(folder, args.tracks, ""))
            print(
                f"run {run}: archive {timed['archive'][-1]:.1f} s, plain {timed['plain'][-1]:.1f} s"
            )
        with_archive, plain = (statistics.median(timed[k]) for k in ("archive", "plain"))
        print(
            f"median: archive {with_archive:.1f} s, plain (reference) {plain:.1f} s, "
            f"saved {plain - with_archive:.1f} s per job ({1 - with_archive / plain:.0%})"
        )
        jvm_archive.stop()


if __name__ == "__main__":
    main()
