"""A real Spark standalone cluster on 127.0.0.1, started from the installed pyspark.

Master and workers are plain child processes (``spark-class``), so the test
owns them and stops them even when it fails (PLATFORM.md: the pip package
has no start-master.sh).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jvm_archive
import pyspark

SPARK_HOME = Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spark_env() -> dict[str, str]:
    jvm_archive.adopt_if_ready()
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    env.pop("SPARK_NO_DAEMONIZE", None)
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


@dataclass(frozen=True)
class Cluster:
    url: str
    ui: str
    logs: Path


def _master_state(ui: str) -> dict[str, Any]:
    """The master's status page as JSON (workers, running and completed applications).

    Empty while the master is not answering yet, and also while it answers with
    HTML: a master that has just been elected leader can serve its HTML page at
    ``/json/`` for a moment (seen once on CI), so callers poll until JSON comes.
    """
    try:
        with urllib.request.urlopen(f"{ui}/json/", timeout=2) as response:
            return dict(json.load(response))
    except (OSError, ValueError):
        return {}


def _master_state_when(
    ui: str,
    ready: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    failing: str,
    gone: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Poll the master's status until ``ready(state)``; RuntimeError(``failing``) at the
    deadline, or at once when ``gone()`` says a process being waited for has exited."""
    deadline = time.monotonic() + timeout_s
    while not ready(state := _master_state(ui)):
        if time.monotonic() > deadline or gone():
            raise RuntimeError(failing)
        time.sleep(0.5)
    return state


def completed_applications(cluster: Cluster) -> list[str]:
    """Names of the applications that ran to completion on this master.

    Waits (up to 30 s) for the master to answer with JSON, so that a moment of
    HTML never reads as "no applications".
    """
    state = _master_state_when(
        cluster.ui, bool, 30, f"the master at {cluster.ui} gave no JSON status for 30 s"
    )
    return [app["name"] for app in state.get("completedapps", [])]


@contextmanager
def standalone_cluster(
    workdir: Path, workers: int = 2, cores: int = 1, memory: str = "2g"
) -> Iterator[Cluster]:
    """Start a master and ``workers`` workers; always stop them on exit."""
    port, ui_port = free_port(), free_port()
    url, ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    logs = workdir / "cluster-logs"
    logs.mkdir(parents=True, exist_ok=True)
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    processes: list[subprocess.Popen[bytes]] = []
    env = spark_env()

    def start(name: str, args: list[str]) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        processes.append(
            subprocess.Popen(
                [spark_class, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )

    try:
        start(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui_port),
            ],
        )
        for i in range(workers):
            start(
                f"worker-{i}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--webui-port",
                    str(free_port()),
                    "--work-dir",
                    str(workdir / f"work-{i}"),
                ],
            )
        _master_state_when(
            ui,
            lambda state: int(state.get("aliveworkers", 0)) >= workers,
            90,
            f"standalone cluster did not start; see logs in {logs}",
            gone=lambda: any(p.poll() is not None for p in processes),
        )
        yield Cluster(url=url, ui=ui, logs=logs)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def delta_submit_args(jars: list[str]) -> list[str]:
    """spark-submit options that load Delta's connector from local jars, as a user would pass them."""
    from genre_spark.lake import connector

    conf = connector.connector_conf(jars)
    return [
        "--jars",
        conf["spark.jars"],
        "--conf",
        f"spark.sql.extensions={conf['spark.sql.extensions']}",
        "--conf",
        f"spark.sql.catalog.spark_catalog={conf['spark.sql.catalog.spark_catalog']}",
    ]


def spark_submit(
    cluster: Cluster,
    script: Path,
    args: list[str],
    cwd: Path,
    timeout: int = 900,
    submit_args: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``spark-submit --master spark://...`` a job script with the venv's Python on every node.

    ``submit_args`` go before the script (``delta_submit_args`` for Delta's connector).
    """
    command = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master",
        cluster.url,
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        f"spark.pyspark.driver.python={sys.executable}",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.shuffle.partitions=4",
        "--conf",
        "spark.task.maxFailures=1",
        "--executor-memory",
        "1g",
        *jvm_archive.executor_conf(),
        *(submit_args or []),
        str(script),
        *args,
    ]
    return subprocess.run(
        command, cwd=cwd, env=spark_env(), capture_output=True, text=True, timeout=timeout
    )
