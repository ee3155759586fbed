"""Test jobs as real processes: start one in its own session, wait for its markers, SIGKILL all of it.

A job is a Python driver, its JVM and PySpark's worker daemon (which moves
into a process group of its own, still in the driver's session): killing the
session kills every one of them. Tests wait for marker files the job writes
(``cli_harness.py``) instead of sleeping, so a kill lands at an exact point.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jvm_archive
import psutil
from conftest import TEST_ENGINE

TESTS = Path(__file__).resolve().parent
HARNESS = TESTS / "cli_harness.py"
#: Generous: a subprocess starts its own JVM on a shared 2-core machine.
START_TIMEOUT_S = 300
#: Settings for a job's own Spark session: small, beside the test session's,
#: on the engine the test session uses (``engine: auto`` would take delta-spark
#: wherever its jars are, whatever engine the test wrote its lake with).
JOB_ENV = {
    "GENRE_ENGINE": TEST_ENGINE,
    "GENRE_SPARK__MASTER": "local[2]",
    "GENRE_SPARK__DRIVER_MEMORY": "1g",
    "GENRE_SPARK__SHUFFLE_PARTITIONS": "4",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "PYTHONUNBUFFERED": "1",
}


def job_env(**extra: str) -> dict[str, str]:
    """This interpreter's environment and path (the worktree first), plus JOB_ENV and ``extra``."""
    jvm_archive.adopt_if_ready()
    path = os.pathsep.join([str(TESTS.parent), *sys.path])
    return {**os.environ, "PYTHONPATH": path, "PYSPARK_PYTHON": sys.executable, **JOB_ENV, **extra}


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdout and stderr into ``log``."""
    with log.open("wb") as fh:
        return subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env or job_env()
        )


def start_harness(
    spec: dict[str, Any], folder: Path, prefix: list[str] | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """Run ``cli_harness.py`` on ``spec`` (written to ``folder``); its log is ``folder/job.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps(spec))
    argv = [*(prefix or []), sys.executable, str(HARNESS), str(spec_file)]
    return start(argv, folder / "job.log", job_env(**env))


def session_pids(sid: int) -> list[int]:
    """Every live process of a session: the driver, its JVM and the worker daemon's group."""
    pids = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                pids.append(pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return pids


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session until none is left (fails the test if one survives)."""
    for _ in range(50):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    assert not session_pids(sid), "processes of the killed job survived"


def wait_for(marker: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The JSON in ``marker`` once the job wrote it; fails if the job ends first or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not marker.exists():
        assert proc.poll() is None, (
            f"job ended ({proc.returncode}) before {marker.name}:\n"
            + (log.read_text(errors="replace")[-5000:])
        )
        assert time.monotonic() < deadline, f"no {marker.name} after {START_TIMEOUT_S} s"
        time.sleep(0.1)
    return json.loads(marker.read_text())


def kill_at(marker: Path, proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """Wait until the job reaches ``marker``, then SIGKILL its whole session; the marker's JSON."""
    try:
        seen = wait_for(marker, proc, log)
    finally:
        kill_session(proc.pid)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, log.read_text(errors="replace")[-5000:]
    return seen


def finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Wait for the job to end by itself; its log (the whole session is killed if it hangs)."""
    try:
        proc.wait(timeout=START_TIMEOUT_S)
    finally:
        kill_session(proc.pid)
    return log.read_text(errors="replace")


def without_file_permission_override() -> list[str]:
    """A command prefix under which root, too, is refused a file without read permission.

    Root reads any file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH; the
    prefix drops both (util-linux ``setpriv``) so a chmod 000 file is as
    unreadable to the job as it is to any user. Empty when not root.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root without setpriv (util-linux): cannot drop CAP_DAC_OVERRIDE"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, "--inh-caps", caps, "--bounding-set", caps]
