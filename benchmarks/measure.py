"""What every benchmark measures the same way: wall time, peak RSS, the machine.

The driver of a local Spark application is two processes, this Python
interpreter and the JVM it started, so peak RSS is sampled over both (and any
other child processes) in a background thread, by ``RolePeaks``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import psutil


@dataclass
class Measurement:
    seconds: float = 0.0


@contextmanager
def measured() -> Iterator[Measurement]:
    """Time the block (wall clock); memory is ``RolePeaks``' job."""
    result = Measurement()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start


@dataclass
class RolePeaks:
    """Peak RSS (MB) of a Python driver process, its JVM, and the other processes under it.

    In local mode the JVM is the Spark driver and the executors; "workers" are
    the Python processes under the tree (Spark's Python workers, TorchDistributor
    ranks). ``driver`` is the peak of Python + JVM sampled together: what must
    not grow with the catalog; ``total`` the peak of the whole tree.
    """

    pid: int = field(default_factory=os.getpid)
    python: float = 0.0
    jvm: float = 0.0
    workers: float = 0.0
    driver: float = 0.0
    total: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        with suppress(psutil.Error):
            root = psutil.Process(self.pid)
            python, jvm, workers = 0, 0, 0
            for proc in [root, *root.children(recursive=True)]:
                with suppress(psutil.Error):
                    rss = proc.memory_info().rss
                    if proc.pid == root.pid:
                        python += rss
                    elif "java" in proc.name():
                        jvm += rss
                    else:
                        workers += rss
            mb = 2**20
            self.python = max(self.python, python / mb)
            self.jvm = max(self.jvm, jvm / mb)
            self.workers = max(self.workers, workers / mb)
            self.driver = max(self.driver, (python + jvm) / mb)
            self.total = max(self.total, (python + jvm + workers) / mb)

    def __enter__(self) -> RolePeaks:
        self.sample()

        def loop() -> None:
            while not self._stop.wait(0.2):
                self.sample()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def machine() -> str:
    """One line naming the machine the numbers came from."""
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.node()}: {psutil.cpu_count(logical=True)} cores, {memory:.0f} GiB RAM, "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    )


def header(command: str) -> str:
    """The date / machine / command lines every BENCHMARKS.md section starts with."""
    return (
        f"- date: {dt.date.today().isoformat()}\n- machine: {machine()}\n- command: `{command}`\n"
    )
