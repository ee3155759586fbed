"""Training processes that fail fast and loud: bounded waits, a clean exit, and a named culprit.

What goes wrong without this module (issue 18, seen on the standalone
cluster): a rank's process dies or hangs and nobody says so. A collective
whose peer is gone waits for gloo's default 30 minutes; a rank that dies
*after* handing back its result (a crash in interpreter teardown) leaves its
peer's torchrun agent waiting 300 s in the agent's exit barrier, while
pyspark's torchrun wrapper exits 0 whatever torchrun returned, so the job
still "succeeds" five minutes late; and a failure on one rank surfaces on the
driver as "TorchDistributor failed during training", naming no rank.

In each rank (:func:`run_rank` wraps the training function):

- the process group waits at most ``train.collective_timeout_s`` for a peer
  (:func:`init_process_group`), and the process ends without destroying it
  (:func:`run_rank` says why: destroying a gloo group races its threads);
- the rank reports its state (running, done, failed with the error) and each
  log line to the driver's :class:`RankMonitor`, a c10d ``TCPStore`` the
  driver serves: plain key-value sets, reachable from executors on other
  hosts just as TorchDistributor's own log server is;
- a local step that may fail on one rank only (reading its files) goes
  through :func:`agree`, so every rank makes the same collective calls and
  all of them raise together instead of some waiting for the others.

On the driver (:func:`run_ranks`): a failure becomes a
:class:`RankFailedError` naming the rank that caused it and that rank's last
log line; a run that returns is checked to have had every rank finish; and in
barrier mode a job still running ``collective_timeout_s`` after every rank
reported its result is cancelled and reported, instead of waiting out
torchrun's exit barrier.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from genre_spark.errors import GenreError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from genre_spark.config import TrainSettings

T = TypeVar("T")

RUNNING, DONE, FAILED = "running", "done", "failed"
#: A rank its launcher stopped (SIGTERM: torchrun ends every rank once one has failed).
TERMINATED = "terminated"
#: gloo's words for a collective that lost its peer, where the error does not say "gloo".
_PEER_LOST = ("pair closure", "closed by peer", "connection reset by peer", "timed out waiting")
#: Longest error text a rank reports (gloo messages carry C++ traces).
_ERROR_CHARS = 300
#: gloo's "[file.cc:123] " prefix and " This is typically caused by ..." advice.
_GLOO_NOISE = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*| This is typically caused by.*$")


class RankFailedError(GenreError):
    """A training process failed, died or hung; the message names it and its last log line."""


class PeerFailedError(GenreError):
    """Raised on the other ranks when a step failed on one rank, so that all ranks stop together."""


def describe(exc: BaseException) -> str:
    """One line for an exception: its type and the first line of its message.

    Drops what gloo adds around the point: its source location and its advice.

    >>> describe(RuntimeError("[/x/gloo/pair.cc:537] Read error: Connection reset by peer. "
    ...                       "This is typically caused by a remote worker hanging."))
    'RuntimeError: Read error: Connection reset by peer.'
    """
    lines = str(exc).strip().splitlines()
    first = _GLOO_NOISE.sub("", lines[0]).strip() if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text[:_ERROR_CHARS]


def is_consequence(exc: BaseException) -> bool:
    """An error a rank gets *because* another rank failed: a collective that lost its peer."""
    import torch.distributed as dist

    text = str(exc).lower()
    return (
        isinstance(exc, PeerFailedError | dist.DistError)
        or "gloo" in text
        or any(words in text for words in _PEER_LOST)
    )


# --- inside each rank ----------------------------------------------------------------------


def init_process_group(device: torch.device, timeout_s: float) -> None:
    """gloo on CPU (NCCL on GPU); a collective or store wait gives up after ``timeout_s``.

    The group is also kept referenced here until the process ends: see
    :func:`run_rank` for why a rank never destroys its gloo group.
    """
    import torch.distributed as dist

    global _group
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    _group = dist.group.WORLD


def destroy_process_group() -> None:
    """Leave the process group (every rank calls it, after its last collective).

    torch forgets the group; its C++ object, held by :func:`init_process_group`,
    lives on until the process exits (see :func:`run_rank`).
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def agree(step: Callable[[], T]) -> T:
    """Run a local step on every rank; if it failed on any rank, raise on all of them.

    One all-gather whatever happens, so the ranks keep making the same
    collective calls: the failing rank re-raises its own error, the others
    raise :class:`PeerFailedError` naming it, and nobody waits for a peer
    that has already left.
    """
    import torch.distributed as dist

    try:
        value, error = step(), None
    except Exception as exc:
        value, error = None, exc
    outcomes: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, None if error is None else describe(error))
    if error is not None:
        raise error
    failed = [(rank, text) for rank, text in enumerate(outcomes) if text is not None]
    if failed:
        rank, text = failed[0]
        raise PeerFailedError(f"rank {rank} failed: {text}")
    return value  # type: ignore[return-value]  # no error on any rank: step() returned it


class _Reporter:
    """One rank's line to the driver's monitor (a TCPStore client)."""

    def __init__(self, address: str, rank: int, timeout_s: float) -> None:
        import torch.distributed as dist

        host, port = address.rsplit(":", 1)
        try:
            self._store = dist.TCPStore(
                host, int(port), is_master=False, timeout=timedelta(seconds=timeout_s)
            )
        except Exception as exc:
            raise RankFailedError(
                f"rank {rank} cannot reach the driver's training monitor at {address}: "
                f"{describe(exc)}"
            ) from exc
        self._rank = rank

    def set(self, **fields: str) -> None:
        for name, value in fields.items():
            self._store.set(f"{self._rank}/{name}", value)

    def failed(self, exc: BaseException) -> None:
        """Record the error and its order among failures (the first is usually the cause)."""
        order = self._store.add("failures", 1)
        kind = "consequence" if is_consequence(exc) else "own"
        self.set(error=describe(exc), kind=kind, order=str(order), state=FAILED)


_reporter: _Reporter | None = None
#: The rank's process group, never freed before the process exits (see run_rank).
_group: Any = None


def log(line: str) -> None:
    """Record ``line`` as this rank's latest log line (shown if the rank fails)."""
    if _reporter is not None:
        _reporter.set(line=line)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM: this rank is being stopped (torchrun's, once a peer failed). Say so, then die of it.

    Without this a rank that torchrun stops before its own collective has
    failed looks like one that was killed, and the driver could not tell the
    cause from the consequence (both silent).
    """
    if _reporter is not None:
        with suppress(Exception):
            _reporter.set(state=TERMINATED)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _leave() -> None:
    """The rank process's last act (atexit): exit now, skipping interpreter teardown.

    The exit status stays honest: 1 when the script ended with an uncaught
    exception (Python has set ``sys.last_value``), else 0.
    """
    failed = hasattr(sys, "last_value")
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(1 if failed else 0)


def run_rank(train_fn: Callable[[dict[str, Any]], T], cfg: dict[str, Any]) -> T:
    """What TorchDistributor runs in every process: ``train_fn(cfg)``, its fate reported.

    The process then ends with ``os._exit`` once TorchDistributor's script has
    written the result, and its gloo group is never destroyed. In torch 2.13,
    destroying a gloo group runs ``~ProcessGroupGloo``, which joins the
    group's worker threads while the freeing thread holds the GIL; a worker
    still releasing a finished collective whose tensor has a Python object
    needs the GIL for that, so the two wait for each other. Seen with gdb in
    a barrier-mode rank (main thread: DDP dealloc -> ``~Reducer`` ->
    ``~ProcessGroupGloo`` -> ``thread::join``; worker: ``~AsyncBroadcastWork``
    -> ``decref_pyobject`` -> ``gil_scoped_acquire``), and reproduced every
    time by ``tests/test_distributed.py``. Before, the group (pinned by
    ``torch.distributed.nn``'s ``group=group.WORLD`` default arguments, which
    DDP imports lazily) was destroyed only in interpreter teardown, racing
    the same threads, where rank 1 died with "terminate called without an
    active exception" after writing its result; its torchrun agent then
    never reached the exit barrier, and rank 0's agent waited 300 s for it.
    """
    global _reporter
    rank = int(os.environ["RANK"])
    atexit.register(_leave)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    _reporter = _Reporter(cfg["monitor"], rank, cfg["collective_timeout_s"])
    _reporter.set(state=RUNNING, line=f"started: pid {os.getpid()} on {socket.gethostname()}")
    try:
        result = train_fn(cfg)
    except BaseException as exc:
        with suppress(Exception):
            _reporter.failed(exc)
        raise
    _reporter.set(state=DONE)
    return result


# --- on the driver -------------------------------------------------------------------------


@dataclass(frozen=True)
class RankReport:
    """What one rank last told the monitor."""

    rank: int
    state: str | None
    line: str | None
    error: str | None
    kind: str | None
    order: int | None

    def summary(self) -> str:
        """Why this rank stopped, in a few words (follows "rank N")."""
        if self.state == FAILED and self.kind == "own":
            return f"raised {self.error}"
        if self.state == FAILED:
            return f"stopped when a peer failed ({self.error})"
        if self.state == RUNNING:
            return "stopped without reporting an error (killed, crashed or hung)"
        if self.state == TERMINATED:
            return "was stopped by SIGTERM (torchrun stops every rank once one has failed)"
        if self.state == DONE:
            return "finished"
        return "never started"


def blame(reports: list[RankReport]) -> RankReport | None:
    """The rank that most likely caused a failure.

    First a rank that raised its own error (the earliest), then one that went
    silent (killed or hung: its peers' errors are the consequence), then one
    stopped by SIGTERM (torchrun's, after a peer died; or someone else's, when
    its peers then failed in a collective), then the earliest that failed in a
    collective; ``None`` when every rank finished.
    """
    own = [r for r in reports if r.state == FAILED and r.kind == "own"]
    silent = [r for r in reports if r.state not in (FAILED, DONE, TERMINATED)]
    failed = [r for r in reports if r.state == FAILED]
    stopped = [r for r in reports if r.state == TERMINATED]
    for group in (own, silent, stopped, failed):
        if group:
            return min(group, key=lambda r: (r.order or 0, r.rank))
    return None


class RankMonitor:
    """The driver's side: a TCPStore server that every rank reports to."""

    def __init__(self, world: int, host: str, timeout_s: float) -> None:
        import torch.distributed as dist

        self.world = world
        self._store = dist.TCPStore(
            host,
            0,
            is_master=True,
            wait_for_workers=False,
            timeout=timedelta(seconds=timeout_s),
        )
        self.address = f"{host}:{self._store.port}"
        self.stalled_after: float | None = None

    def _get(self, key: str) -> str | None:
        return self._store.get(key).decode() if self._store.check([key]) else None

    def reports(self) -> list[RankReport]:
        """Every rank's latest state, line and error."""
        out = []
        for rank in range(self.world):
            order = self._get(f"{rank}/order")
            out.append(
                RankReport(
                    rank=rank,
                    state=self._get(f"{rank}/state"),
                    line=self._get(f"{rank}/line"),
                    error=self._get(f"{rank}/error"),
                    kind=self._get(f"{rank}/kind"),
                    order=int(order) if order else None,
                )
            )
        return out

    def failure(self) -> RankFailedError | None:
        """The error to raise for a failed run, or ``None`` if no rank explains it."""
        reports = self.reports()
        if self.stalled_after is not None:
            lines = "; ".join(f"rank {r.rank}: {r.line!r}" for r in reports)
            return RankFailedError(
                f"every training process reported its result, but the training job was still "
                f"running {self.stalled_after:.0f}s later (a process hung or died on exit), so "
                f"it was cancelled; last log lines: {lines}"
            )
        culprit = blame(reports)
        if culprit is None:
            return None
        others = "; ".join(f"rank {r.rank} {r.summary()}" for r in reports if r is not culprit)
        return RankFailedError(
            f"training failed: rank {culprit.rank} of {self.world} {culprit.summary()}; "
            f"its last log line: {culprit.line!r}" + (f" (then {others})" if others else "")
        )

    def require_finished(self) -> None:
        """Raise unless every rank reported that it finished."""
        unfinished = [r for r in self.reports() if r.state != DONE]
        if unfinished:
            first = unfinished[0]
            raise RankFailedError(
                f"training returned a result, but rank {first.rank} of {self.world} "
                f"{first.summary()}; its last log line: {first.line!r}"
            )

    @contextmanager
    def watching(self, cancel: Callable[[], None], grace_s: float) -> Iterator[None]:
        """Call ``cancel`` once if the run outlives every rank's report of success by ``grace_s``."""
        stop = threading.Event()

        def watch() -> None:
            all_done_at: float | None = None
            while not stop.wait(0.5):
                if all(r.state == DONE for r in self.reports()):
                    all_done_at = all_done_at or time.monotonic()
                    if time.monotonic() - all_done_at > grace_s:
                        self.stalled_after = grace_s
                        cancel()
                        return

        watcher = threading.Thread(target=watch, name="rank-monitor", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()

    def close(self) -> None:
        """Stop serving (joins the store's server thread)."""
        del self._store


def _monitor_host(spark: SparkSession, local_mode: bool) -> str:
    """Where the ranks reach the driver: loopback for local processes, else Spark's driver host."""
    if local_mode:
        return "127.0.0.1"
    return spark.sparkContext.getConf().get("spark.driver.host", "127.0.0.1")


def run_ranks(
    spark: SparkSession,
    train: TrainSettings,
    train_fn: Callable[[dict[str, Any]], T],
    cfg: dict[str, Any],
) -> T:
    """``train_fn(cfg)`` on ``train.num_processes`` TorchDistributor processes; rank 0's result.

    Raises :class:`RankFailedError` naming the failed rank and its last log
    line when a process fails, dies or hangs.
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    sc = spark.sparkContext
    timeout = train.collective_timeout_s
    monitor = RankMonitor(train.num_processes, _monitor_host(spark, train.local_mode), timeout)
    tag = f"genre-train-{os.getpid()}-{time.monotonic_ns()}"
    sc.addJobTag(tag)
    try:
        distributor = TorchDistributor(
            num_processes=train.num_processes, local_mode=train.local_mode, use_gpu=False
        )
        # Local processes answer to one torchrun agent (no exit barrier to wait in) and run
        # no Spark job; barrier tasks are cancelled if they outlive their results.
        watch = (
            nullcontext()
            if train.local_mode
            else monitor.watching(lambda: sc.cancelJobsWithTag(tag), grace_s=timeout)
        )
        with watch:
            try:
                result = distributor.run(run_rank, train_fn, {**cfg, "monitor": monitor.address})
            except Exception as exc:
                failure = monitor.failure()
                if failure is None:
                    raise
                raise failure from exc
        monitor.require_finished()
        # TorchDistributor.run returns rank 0's train_fn(cfg) but is typed Optional[Any].
        return cast(T, result)
    finally:
        sc.removeJobTag(tag)
        monitor.close()
