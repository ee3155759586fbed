"""Distributed training fails fast and loud: a killed or hung rank is named, nothing is registered.

Faults are real: the rank's own process (the torchrun worker, found among this
test's descendants by the RANK its agent gave it) is sent SIGKILL or SIGSTOP
while it trains, in local mode and in barrier mode on local[2].
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from blobs import blob_features
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import f1_score

from genre_spark.config import Settings, load_settings
from genre_spark.features.spark import transform_table
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_FEATURES, GOLD_MODELS, GOLD_NORMALIZER
from genre_spark.model import distributed, train
from genre_spark.model.data import read_shard
from genre_spark.model.registry import load_model
from genre_spark.schema import FEATURES

GENRES = ["blues", "folk", "metal"]
ROOT = Path(__file__).resolve().parent.parent
#: Short in tests, so that a hung rank fails its peers quickly (the default is 300 s).
TIMEOUT_S = 30.0
#: Long enough that a rank killed at epoch 2 dies mid-training.
EPOCHS = 40


def _settings(root: Path, **train_overrides: Any) -> Settings:
    return load_settings(
        overrides={
            "lake": str(root / "lake"),
            "train": {
                "epochs": EPOCHS,
                "patience": EPOCHS,
                "min_epoch_steps": 1,  # the epochs given, however few rows a rank has
                "batch_size": 64,
                "channels": 4,
                "depth": 1,
                "num_processes": 2,
                "collective_timeout_s": TIMEOUT_S,
                **train_overrides,
            },
        },
        environ={},
    )


def _write_inputs(lake: Lake, features: Any) -> None:
    """gold.features and the identity transform it was (notionally) built with."""
    lake.write(features, GOLD_FEATURES)
    transform = FeatureTransform.standard({f: (0.0, 1.0) for f in FEATURES})
    lake.write(transform_table(lake.spark, transform, version=0), GOLD_NORMALIZER)


def _rank_process(rank: int) -> psutil.Process:
    """The torchrun worker that runs ``rank``: a descendant whose agent set LOCAL_RANK and RANK."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for proc in psutil.Process().children(recursive=True):
            try:
                env = proc.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("RANK") == str(rank) and "LOCAL_RANK" in env:
                return proc
        time.sleep(0.2)
    raise AssertionError(f"no training process for rank {rank}")


class Fault:
    """Sends ``sig`` to rank ``rank``'s process when rank 0 reports epoch ``epoch`` (an on_epoch hook)."""

    def __init__(self, rank: int, sig: signal.Signals, epoch: int = 2) -> None:
        self.rank, self.sig, self.epoch = rank, sig, epoch
        self.sent_at: float | None = None
        self.process: psutil.Process | None = None

    def __call__(self, row: dict[str, Any]) -> None:
        if self.sent_at is None and row["epoch"] >= self.epoch:
            self.process = _rank_process(self.rank)
            self.process.send_signal(self.sig)
            self.sent_at = time.monotonic()


def _assert_nothing_registered(settings: Settings, lake: Lake) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    assert client.search_model_versions(f"name = '{settings.mlflow.model_name}'") == []
    assert not lake.exists(GOLD_MODELS)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] * len(runs) and runs


@pytest.fixture(scope="module")
def blobs(spark: SparkSession) -> Any:
    return blob_features(spark, 900, GENRES, list(FEATURES), files=4).cache()


@pytest.mark.parametrize("local_mode", [True, False], ids=["local", "barrier"])
def test_killed_rank_fails_training_with_its_name_and_last_line(
    spark: SparkSession, tmp_path: Path, blobs: Any, local_mode: bool
) -> None:
    settings = _settings(tmp_path, local_mode=local_mode)
    lake = Lake(spark, settings.lake)
    _write_inputs(lake, blobs)
    kill = Fault(rank=1, sig=signal.SIGKILL)

    with pytest.raises(distributed.RankFailedError) as failed:
        train.run(lake, settings, on_epoch=kill)
    failed_after = time.monotonic() - (kill.sent_at or 0.0)

    assert kill.sent_at is not None, "training ended before the fault was injected"
    message = str(failed.value)
    assert re.search(
        r"^training failed: rank 1 of 2 stopped without reporting an error "
        r"\(killed, crashed or hung\); its last log line: 'epoch \d+/40 ",
        message,
    ), message
    assert "\n" not in message
    assert failed_after < TIMEOUT_S, f"failed {failed_after:.0f}s after the kill"
    _assert_nothing_registered(settings, lake)


def test_a_rank_stopped_by_sigterm_says_so_and_is_not_taken_for_a_killed_one(
    spark: SparkSession, tmp_path: Path, blobs: Any
) -> None:
    """SIGTERM is how torchrun stops the other ranks once one has died: the stopped rank reports
    it, so it is never confused with the killed one (both silent before). Sent from outside
    here, it is the cause, and its peer's collective error the consequence."""
    settings = _settings(tmp_path, local_mode=True)
    lake = Lake(spark, settings.lake)
    _write_inputs(lake, blobs)

    with pytest.raises(distributed.RankFailedError) as failed:
        train.run(lake, settings, on_epoch=Fault(rank=1, sig=signal.SIGTERM))

    message = str(failed.value)
    assert message.startswith(
        "training failed: rank 1 of 2 was stopped by SIGTERM (torchrun stops every rank"
    ), message
    _assert_nothing_registered(settings, lake)


def _train_then_die_on_exit(cfg: dict[str, Any]) -> train.TrainResult:
    """train_rank, then rank 1's process aborts at exit, after its result is written.

    What the standalone cluster showed ("terminate called without an active
    exception" after training): torchrun's agent for the other rank then
    waits 300 s in its exit barrier while the job still looks healthy.
    """
    import atexit

    result = train.train_rank(cfg)
    if os.environ["RANK"] == "1":
        atexit.register(os.abort)
    return result


def test_rank_dying_on_exit_is_reported_not_waited_for(
    spark: SparkSession, tmp_path: Path, blobs: Any
) -> None:
    """Barrier mode: every rank reports its result, one dies on exit; the job is cancelled and named."""
    from pyspark import cloudpickle

    settings = _settings(tmp_path, local_mode=False, epochs=2, patience=2)
    lake = Lake(spark, settings.lake)
    _write_inputs(lake, blobs)
    cfg = train.rank_config(settings.train, list(FEATURES), lake.files(GOLD_FEATURES))
    cfg["progress_path"] = None
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with pytest.raises(distributed.RankFailedError) as failed:
            distributed.run_ranks(spark, settings.train, _train_then_die_on_exit, cfg)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    message = str(failed.value)
    assert message.startswith(
        f"every training process reported its result, but the training job was still running "
        f"{TIMEOUT_S:.0f}s later (a process hung or died on exit), so it was cancelled; "
        "last log lines: rank 0: 'epoch 2/2 "
    ), message


def test_hung_rank_fails_its_peers_after_the_collective_timeout(
    spark: SparkSession, tmp_path: Path, blobs: Any
) -> None:
    """A stopped (not dead) rank: the others give up after collective_timeout_s, not gloo's 30 min."""
    settings = _settings(tmp_path, local_mode=True)
    lake = Lake(spark, settings.lake)
    _write_inputs(lake, blobs)
    stop = Fault(rank=1, sig=signal.SIGSTOP)
    peer_gone: list[float] = []

    def end_the_hang() -> None:
        """Once rank 0 has given up, kill the stopped rank (torchrun's SIGTERM waits while stopped)."""
        while stop.process is None:
            time.sleep(0.2)
        _rank_process(0).wait()
        peer_gone.append(time.monotonic())
        stop.process.kill()

    ender = threading.Thread(target=end_the_hang, daemon=True)
    ender.start()
    try:
        with pytest.raises(distributed.RankFailedError) as failed:
            train.run(lake, settings, on_epoch=stop)
    finally:
        if stop.process is not None and stop.process.is_running():
            stop.process.kill()
    ender.join(timeout=60)

    message = str(failed.value)
    assert message.startswith("training failed: rank 1 of 2 stopped without reporting an error")
    assert "(then rank 0 stopped when a peer failed (" in message, message
    waited = peer_gone[0] - (stop.sent_at or 0.0)
    assert TIMEOUT_S * 0.5 < waited < TIMEOUT_S * 2, f"rank 0 gave up after {waited:.0f}s"
    _assert_nothing_registered(settings, lake)


def test_rank_without_data_still_joins(spark: SparkSession, tmp_path: Path, blobs: Any) -> None:
    """One file holds only test rows: its rank trains and validates on nothing but joins every collective."""
    settings = _settings(tmp_path, local_mode=True, epochs=3, patience=3)
    lake = Lake(spark, settings.lake)
    _write_inputs(lake, blobs.filter(F.col("split") == "test").coalesce(1))
    lake.write(blobs.filter(F.col("split") != "test").coalesce(1), GOLD_FEATURES, "append")
    files = lake.files(GOLD_FEATURES)
    assert len(files) == 2

    outcome = train.run(lake, settings)

    rows = outcome.result.rows
    assert sorted((r["train"], r["validation"]) for r in rows.values())[0] == (0, 0)
    assert [row["epoch"] for row in outcome.result.history] == [1, 2, 3]
    validation = read_shard(files, "validation", len(FEATURES))
    with torch.no_grad():
        logits = load_model(settings).model(torch.as_tensor(validation.x))
    predicted = np.array(GENRES)[logits.argmax(1).numpy()]
    assert outcome.result.metrics["val_macro_f1"] == pytest.approx(
        f1_score(validation.genres, predicted, average="macro"), abs=1e-12
    )


# --- in the rank process, without Spark ---------------------------------------------------

_IN_FLIGHT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch, torch.distributed as dist
    import torch.distributed.nn  # imported before init: DDP, not its defaults, holds the group last
    from torch.nn.parallel import DistributedDataParallel as DDP
    from genre_spark.model import distributed

    def train_with_a_broadcast_in_flight(cfg):
        host, port = cfg["monitor"].rsplit(":", 1)
        store = dist.TCPStore(host, int(port), is_master=False)
        distributed.init_process_group(torch.device("cpu"), cfg["collective_timeout_s"])
        model, rank = DDP(torch.nn.Linear(4, 2)), dist.get_rank()
        if rank == 0:
            time.sleep(3)
            dist.broadcast(torch.ones(1000), src=0)
            store.set("sent", "1")
        else:
            buffer = torch.zeros(1000)
            dist.broadcast(buffer, src=0, async_op=True)
        distributed.destroy_process_group()
        del model  # what train_rank's return does, here with the broadcast still in gloo's hands
        store.wait(["sent"])
        distributed.log("broadcast done")
        return rank

    distributed.run_rank(train_with_a_broadcast_in_flight, {"monitor": sys.argv[1], "collective_timeout_s": 30})
    print("rank returned", flush=True)
    """
)


def test_rank_exits_although_its_group_still_has_a_collective_in_flight(tmp_path: Path) -> None:
    """Two real ranks whose DDP wrapper is freed while gloo still holds a broadcast.

    Freeing the last holder of a gloo group (here DDP, after
    destroy_process_group) joins its worker threads with the GIL held, while
    the worker needs the GIL to release the broadcast's tensor once it
    arrives: rank 1 then hangs forever. The rank keeps its group
    (init_process_group) and leaves with os._exit, so both ranks return and
    exit 0.
    """
    script = tmp_path / "in_flight.py"
    script.write_text(_IN_FLIGHT_SCRIPT)
    monitor = distributed.RankMonitor(2, "127.0.0.1", TIMEOUT_S)
    try:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
        command += ["--nproc_per_node=2", str(script), monitor.address]
        launched = subprocess.Popen(
            command,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a hung rank is killed with its launcher below
        )
        try:
            stdout, stderr = launched.communicate(timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launched.pid, signal.SIGKILL)
        done = subprocess.CompletedProcess(command, launched.returncode, stdout, stderr)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert done.stdout.count("rank returned") == 2
        assert [(r.state, r.line) for r in monitor.reports()] == [
            (distributed.DONE, "broadcast done")
        ] * 2
    finally:
        monitor.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _agree_worker(rank: int, port: int, failing_rank: int, out: Any) -> None:
    """One rank of a two-process gloo world whose local step fails on ``failing_rank`` only."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)

    def step() -> int:
        if rank == failing_rank:
            raise ValueError("this rank's file is damaged")
        return rank

    try:
        distributed.agree(step)
        out.put((rank, "no error"))
    except Exception as exc:
        out.put((rank, distributed.describe(exc), distributed.is_consequence(exc)))
    finally:
        dist.destroy_process_group()


def test_a_step_that_fails_on_one_rank_fails_on_all_with_the_same_collectives() -> None:
    """The failing rank raises its error, the other learns which rank failed; neither waits."""
    ctx = torch.multiprocessing.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_agree_worker, args=(r, port, 1, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results == [
        (0, "PeerFailedError: rank 1 failed: ValueError: this rank's file is damaged", True),
        (1, "ValueError: this rank's file is damaged", False),
    ]


# --- which rank to blame -------------------------------------------------------------------


def _report(rank: int, state: str | None, kind: str | None = None, order: int | None = None):
    return distributed.RankReport(
        rank, state, f"line {rank}", "E: x" if kind else None, kind, order
    )


@pytest.mark.parametrize(
    ("reports", "culprit"),
    [
        # a rank raised its own error; the other failed in a collective afterwards
        ([_report(0, "failed", "consequence", 2), _report(1, "failed", "own", 1)], 1),
        # a rank went silent (killed): its peer's collective error is the consequence
        ([_report(0, "failed", "consequence", 1), _report(1, "running")], 1),
        # the own error wins over a rank that torchrun then killed
        ([_report(0, "failed", "own", 1), _report(1, "running")], 0),
        # only collective errors: the earliest
        ([_report(0, "failed", "consequence", 2), _report(1, "failed", "consequence", 1)], 1),
        ([_report(0, "done"), _report(1, None)], 1),
        ([_report(0, "done"), _report(1, "done")], None),
        # torchrun stopped rank 0 (SIGTERM) before its collective failed: rank 1, killed, is silent
        ([_report(0, "terminated"), _report(1, "running")], 1),
        # stopped from outside: its peer's collective error is the consequence
        ([_report(0, "terminated"), _report(1, "failed", "consequence", 1)], 0),
    ],
)
def test_blame_names_the_rank_that_caused_the_failure(
    reports: list[distributed.RankReport], culprit: int | None
) -> None:
    found = distributed.blame(reports)
    assert (found.rank if found else None) == culprit


@pytest.mark.parametrize(
    ("error", "consequence"),
    [
        (RuntimeError("[gloo/transport/tcp/pair.cc:534] Read error"), True),
        (RuntimeError("Application timeout caused pair closure"), True),  # gloo, unnamed
        (RuntimeError("Connection closed by peer [127.0.0.1]:41234"), True),
        (RuntimeError("Timed out waiting 30000ms for recv operation to complete"), True),
        (distributed.PeerFailedError("rank 1 failed: ValueError: x"), True),
        (ValueError("this rank's file is damaged"), False),
    ],
)
def test_a_collective_that_lost_its_peer_is_a_consequence(
    error: BaseException, consequence: bool
) -> None:
    assert distributed.is_consequence(error) is consequence
