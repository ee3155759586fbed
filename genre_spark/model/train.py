"""Distributed training of the genre CNN with TorchDistributor, tracked and registered in MLflow.

Split of work. The driver checks that the processes fit in Spark's task
slots, lists gold.features' files (Delta log metadata) and starts
``TorchDistributor``. Each rank reads its own files (``data.py``), learns
with DDP (gloo on CPU, NCCL where a GPU exists) and takes part in
all-reduces of class counts, losses and validation confusion counts, so every
rank sees the same metrics and makes the same early-stopping and learning-rate
decisions. One return value comes back (every rank returns rank 0's, see
``train_rank``): the kept weights, the per-epoch history, the validation
metrics and which files each rank read. The driver then logs the run to
MLflow and registers the model.

Training never touches the test split: early stopping, the LR schedule and
the registered metrics use the validation split only.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyspark.sql import SparkSession

from genre_spark import stages
from genre_spark.config import Settings, TrainSettings
from genre_spark.errors import GenreError, NoTrainingDataError
from genre_spark.features.spark import read_transform
from genre_spark.features.transform import FeatureTransform
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_FEATURES, GOLD_NORMALIZER
from genre_spark.metrics import confusion_matrix, scores
from genre_spark.model import distributed
from genre_spark.model.cnn import GenreCNN, architecture

#: TrainSettings fields that are GenreCNN's constructor arguments.
NETWORK = (
    "channels",
    "depth",
    "kernel_size",
    "dropout",
    "hidden",
    "embedding",
    "frequencies",
    "frequency_scale",
    "members",
)
#: TrainSettings fields that shape one training run (logged as MLflow params).
HYPERPARAMETERS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "schedule",
    "weight_decay",
    "label_smoothing",
    *NETWORK,
    "patience",
    "min_epoch_steps",
    "exclude_outliers",
    "seed",
)

EpochCallback = Callable[[dict[str, Any]], None]


class NotEnoughSlotsError(GenreError):
    """More training processes than Spark can run at once as barrier tasks."""


@dataclass
class TrainResult:
    """What rank 0 hands back: kept weights, their shape, labels, curves and who read what."""

    state_dict: dict[str, torch.Tensor]
    architecture: dict[str, Any]
    genres: list[str]
    #: The model's input names, in vector order (``FeatureTransform.outputs``).
    inputs: list[str]
    history: list[dict[str, float]]
    metrics: dict[str, float]
    shards: dict[int, list[str]]
    rows: dict[int, dict[str, int]]
    class_weights: list[float]

    def model(self) -> GenreCNN:
        """The trained network on CPU, eval mode."""
        model = GenreCNN(**self.architecture)
        model.load_state_dict(self.state_dict)
        return model.eval()


@dataclass
class TrainOutcome:
    """A finished ``genre train``: the registered version, its MLflow run and the training result."""

    version: str
    run_id: str
    result: TrainResult
    #: The raw features the model reads (the transform's, from gold.normalizer).
    features: list[str]
    #: True when training reproduced an already registered model, whose version was re-used.
    reused: bool = False


# --- inside each rank --------------------------------------------------------------------


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        )
    return torch.device("cpu")


def _all_sum(values: np.ndarray, device: torch.device) -> np.ndarray:
    import torch.distributed as dist

    tensor = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def _gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _from_rank0(obj: Any) -> Any:
    """Rank 0's copy of ``obj`` on every rank."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_max(value: float, device: torch.device) -> float:
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


class MemberLogits(torch.nn.Module):
    """The view of a GenreCNN that training wraps in DDP: every member's logits.

    DDP synchronises gradients only through its wrapped module's forward, so
    the per-member logits the loss needs must come out of a forward.
    """

    def __init__(self, net: GenreCNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.member_logits(x)


def learning_rate(schedule: str, peak: float, step: int, total: int) -> float:
    """The rate at ``step`` (0-based) of ``total`` steps.

    ``onecycle``: PyTorch's ``OneCycleLR`` with its defaults, step for step
    (cosine from ``peak / 25`` up to ``peak`` over the first 30 % of the
    steps, then cosine down to ``peak / 250000``); ``cosine``: from ``peak``
    down to 0. A pure function of the step, so every rank computes the same
    rate without talking.
    """

    def cosine(start: float, end: float, fraction: float) -> float:
        return end + (start - end) * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0))) / 2

    last = max(total - 1, 1)
    if schedule == "onecycle":
        initial = peak / 25
        warm = 0.3 * total - 1
        if step <= warm:
            return cosine(initial, peak, step / warm if warm > 0 else 1.0)
        return cosine(peak, initial / 1e4, (step - warm) / (last - warm))
    if schedule == "cosine":
        return cosine(peak, 0.0, step / last)
    raise ValueError(f"unknown schedule {schedule!r}; allowed: onecycle, cosine (or plateau)")


def epoch_scale(steps: int, min_steps: int) -> int:
    """How many times over a small training set's epochs and patience count.

    Defaults sized for tens of thousands of rows give a training set of a
    thousand rows only a few optimizer steps per epoch (6 at batch 128 on 2
    ranks), so 40 epochs and a patience of 10 stop it long before it has
    learned, and before the one-cycle rate has come down. When an epoch has
    fewer than ``min_steps`` steps, epochs and patience are multiplied by
    ``ceil(min_steps / steps)``: the run gets at least the optimizer steps
    (and the early-stopping leeway, in steps) an epoch of ``min_steps`` would
    give. A set with ``min_steps`` steps per epoch or more is trained as
    configured.

    >>> epoch_scale(73, 32), epoch_scale(6, 32), epoch_scale(32, 32)
    (1, 6, 1)
    """
    return max(1, math.ceil(min_steps / max(steps, 1)))


def set_rate(optimizer: torch.optim.Optimizer, cfg: dict[str, Any], step: int, total: int) -> None:
    """Set the schedule's rate for ``step`` of ``total`` on every parameter group."""
    rate = learning_rate(cfg["schedule"], cfg["learning_rate"], step, total)
    for group in optimizer.param_groups:
        group["lr"] = rate


def _epoch_rate(
    cfg: dict[str, Any], optimizer: torch.optim.Optimizer, epoch: int, steps: int
) -> float:
    """The rate at the epoch's last step as every rank computes it (a rank with fewer batches
    stopped short of that step, so its optimizer's last rate would differ)."""
    if cfg["schedule"] == "plateau":
        return float(optimizer.param_groups[0]["lr"])
    return learning_rate(
        cfg["schedule"], cfg["learning_rate"], epoch * steps - 1, cfg["epochs"] * steps
    )


def ensemble_loss(
    loss_fn: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """The loss of ``[members, N, genres]`` logits, summed over members.

    Each member learns from its own loss with the gradient it would get if it
    were trained alone; reporting divides by the member count.
    """
    members = logits.shape[0]
    loss: torch.Tensor = loss_fn(logits.flatten(0, 1), target.repeat(members))
    return members * loss


def network_shape(cfg: dict[str, Any]) -> dict[str, Any]:
    """GenreCNN's size arguments from a rank config."""
    return {k: cfg[k] for k in NETWORK}


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches; a last batch of one row joins the previous one (BatchNorm needs 2)."""
    order = rng.permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return [b for b in batches if len(b) >= 2]


def _load_rank_data(cfg: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    from genre_spark.model import data

    files = data.shard_files(cfg["files"], rank, world)
    n_features = len(cfg["features"])
    train, validation = distributed.agree(
        lambda: (
            data.read_shard(files, "train", n_features, cfg["exclude_outliers"]),
            data.read_shard(files, "validation", n_features),
        )
    )
    genres = sorted(set().union(*_gather(sorted(set(train.genres.tolist())))))
    if len(genres) < 2:
        raise NoTrainingDataError(f"the training split has {len(genres)} genre(s); need at least 2")
    index = data.genre_index(genres)
    x_train, y_train = data.encode(train, index)
    x_val, y_val = data.encode(validation, index)
    return {
        "files": files,
        "genres": genres,
        "train": (x_train, y_train),
        "validation": (x_val, y_val),
        "unseen_validation": len(validation) - len(y_val),
    }


def _sync_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's BatchNorm running statistics.

    DDP broadcasts buffers at the start of each training forward, but each
    rank then updates them with its own batch; after this call all ranks
    evaluate exactly the model that rank 0 returns.
    """
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_genres: int, device: torch.device
) -> tuple[float, np.ndarray]:
    """All-reduced validation loss (unweighted) and confusion counts: the same on every rank."""
    _sync_buffers(model)
    model.eval()
    with torch.no_grad():
        logits = model(x) if len(y) else torch.zeros((0, n_genres), device=device)
        loss_sum = (
            float(torch.nn.functional.cross_entropy(logits, y, reduction="sum")) if len(y) else 0.0
        )
        local = confusion_matrix(y.cpu().numpy(), logits.argmax(1).cpu().numpy(), n_genres)
    reduced = _all_sum(np.concatenate([[loss_sum], local.ravel()]), device)
    matrix = reduced[1:].reshape(n_genres, n_genres)
    return float(reduced[0] / max(matrix.sum(), 1.0)), matrix


def _report(cfg: dict[str, Any], row: dict[str, Any], rank: int) -> None:
    """The epoch line: every rank's latest log line; rank 0 also prints it (driver stdout or
    executor log) and appends it for the driver's progress."""
    line = (
        f"epoch {row['epoch']}/{cfg['epochs']}  loss {row['loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"val_accuracy {row['val_accuracy']:.4f}  val_macro_f1 {row['val_macro_f1']:.4f}  lr {row['lr']:.2e}"
    )
    distributed.log(line)
    if rank != 0:
        return
    print(line, flush=True)
    if cfg.get("progress_path"):
        with open(cfg["progress_path"], "a") as fh:
            fh.write(json.dumps(row) + "\n")


def train_rank(cfg: dict[str, Any]) -> TrainResult:
    """One DDP process: read this rank's files, train with early stopping, return rank 0's result.

    Every rank returns the same result (rank 0's kept weights, all-reduced
    metrics, gathered shard lists): TorchDistributor's local mode keeps the
    return value of whichever process writes it last, so returning ``None``
    from the other ranks would race.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from genre_spark.model.data import balanced_weights

    device = _device()
    distributed.init_process_group(device, cfg["collective_timeout_s"])
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        loaded = _load_rank_data(cfg, rank, world)
        genres = loaded["genres"]
        x_train, y_train = (torch.as_tensor(a, device=device) for a in loaded["train"])
        x_val, y_val = (torch.as_tensor(a, device=device) for a in loaded["validation"])
        rows = {
            "train": len(y_train),
            "validation": len(y_val),
            "unseen_validation": loaded["unseen_validation"],
        }
        distributed.log(f"read {len(loaded['files'])} file(s): {rows['train']} training rows")
        counts = _all_sum(np.bincount(y_train.cpu().numpy(), minlength=len(genres)), device)
        if counts.sum() == 0:
            raise NoTrainingDataError(
                "gold.features has no training rows (after excluding outliers)"
            )
        weights = balanced_weights(counts)
        torch.manual_seed(cfg["seed"])
        net = GenreCNN(len(cfg["features"]), len(genres), **network_shape(cfg)).to(device)
        model = DDP(MemberLogits(net), device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"]
        )
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.as_tensor(weights, dtype=torch.float32, device=device),
            label_smoothing=cfg["label_smoothing"],
        )
        # The same step count on every rank, so every rank sets the same rate at each step.
        steps = int(_all_max(math.ceil(len(y_train) / cfg["batch_size"]), device))
        scale = epoch_scale(steps, cfg["min_epoch_steps"])
        cfg = {**cfg, "epochs": cfg["epochs"] * scale, "patience": cfg["patience"] * scale}
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=max(1, cfg["patience"] // 2)
        )
        rng = np.random.default_rng([cfg["seed"], rank])
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"f1": -1.0}
        stale = 0
        for epoch in range(1, cfg["epochs"] + 1):
            model.train()
            loss_sum, seen = 0.0, 0
            with model.join():
                for i, idx in enumerate(shuffled_batches(len(y_train), cfg["batch_size"], rng)):
                    if cfg["schedule"] != "plateau":
                        set_rate(optimizer, cfg, (epoch - 1) * steps + i, cfg["epochs"] * steps)
                    batch = torch.as_tensor(idx, device=device)
                    optimizer.zero_grad()
                    logits = model(x_train[batch])  # [members, batch, genres]
                    loss = ensemble_loss(loss_fn, logits, y_train[batch])
                    loss.backward()
                    optimizer.step()
                    loss_sum += float(loss.detach()) / logits.shape[0] * len(idx)
                    seen += len(idx)
            total_loss, total_seen = _all_sum(np.array([loss_sum, seen]), device)
            val_loss, matrix = _evaluate(net, x_val, y_val, len(genres), device)
            if matrix.sum() == 0:
                raise NoTrainingDataError(
                    "gold.features has no validation rows of a training genre"
                )
            metrics = scores(matrix)
            row = {
                "epoch": epoch,
                "epochs": cfg["epochs"],  # the planned total, after epoch_scale
                "loss": float(total_loss / max(total_seen, 1.0)),
                "val_loss": val_loss,
                "val_accuracy": metrics["accuracy"],
                "val_macro_f1": metrics["macro_f1"],
                "lr": _epoch_rate(cfg, optimizer, epoch, steps),
            }
            history.append(row)
            _report(cfg, row, rank)
            if cfg["schedule"] == "plateau":
                plateau.step(metrics["macro_f1"])
            if metrics["macro_f1"] > best["f1"] + 1e-9:
                best = {
                    "f1": metrics["macro_f1"],
                    "row": row,
                    "state": copy.deepcopy(net.state_dict()),
                }
                stale = 0
            else:
                stale += 1
                if stale >= cfg["patience"]:
                    break
        shards = _gather(loaded["files"])
        all_rows = _gather(rows)
        state = _from_rank0({k: v.detach().cpu() for k, v in best["state"].items()})
        kept = best["row"]
        return TrainResult(
            state_dict=state,
            architecture=architecture(net),
            genres=genres,
            inputs=list(cfg["features"]),
            history=history,
            metrics={
                "val_accuracy": kept["val_accuracy"],
                "val_macro_f1": kept["val_macro_f1"],
                "val_loss": kept["val_loss"],
                "best_epoch": float(kept["epoch"]),
                "epochs_run": float(len(history)),
                "epoch_scale": float(scale),
            },
            shards=dict(enumerate(shards)),
            rows=dict(enumerate(all_rows)),
            class_weights=[float(w) for w in weights],
        )
    finally:
        distributed.destroy_process_group()


# --- on the driver -------------------------------------------------------------------------


def task_slots(spark: SparkSession) -> int:
    """How many tasks Spark can run at once: what a barrier stage of N tasks needs N of.

    Asks the scheduler the same question its barrier check asks
    (``maxNumConcurrentTasks`` of the default resource profile); falls back
    to ``defaultParallelism`` where that internal call is unavailable.
    """
    sc = spark.sparkContext
    try:
        jsc = sc._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(profile))
    except Exception:
        return int(sc.defaultParallelism)


def check_slots(spark: SparkSession, train: TrainSettings) -> None:
    """Fail at once, not after Spark's long barrier retries, when the processes cannot all start.

    ``local_mode=True`` runs the processes beside the driver (no task slots);
    ``local_mode=False`` runs one barrier task per process.
    """
    if train.local_mode:
        return
    slots = task_slots(spark)
    if train.num_processes > slots:
        raise NotEnoughSlotsError(
            f"train.num_processes={train.num_processes} but Spark can run only {slots} task(s) at "
            f"once (master {spark.sparkContext.master}); barrier training needs one slot per "
            "process: lower train.num_processes, add executor cores, or set train.local_mode=true"
        )


def rank_config(train: TrainSettings, features: list[str], files: list[str]) -> dict[str, Any]:
    """The plain dict each rank receives (picklable, no Spark objects)."""
    return {
        **{k: getattr(train, k) for k in HYPERPARAMETERS},
        "features": list(features),
        "files": list(files),
        "collective_timeout_s": train.collective_timeout_s,
    }


def _follow(path: Path, on_epoch: EpochCallback, stop: threading.Event) -> None:
    """Feed rank 0's epoch lines to ``on_epoch`` while training runs (local processes only)."""
    done = 0
    while True:
        finished = stop.is_set()
        if path.exists():
            lines = path.read_text().splitlines()
            for line in lines[done:]:
                on_epoch(json.loads(line))
            done = len(lines)
        if finished:
            return
        time.sleep(0.2)


def fit(
    spark: SparkSession,
    files: list[str],
    train: TrainSettings,
    features: list[str],
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Run ``train_rank`` on ``train.num_processes`` processes; returns rank 0's result.

    ``on_epoch`` gets each epoch's metrics as rank 0 reports them (through a
    small file beside the driver; with ``local_mode=False`` on a multi-host
    cluster the ranks run elsewhere and only their logs show progress).
    """
    check_slots(spark, train)
    if (spark.sparkContext.master or "").startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="genre-train-") as tmp:
        progress = Path(tmp) / "progress.jsonl"
        cfg = rank_config(train, features, files)
        cfg["progress_path"] = str(progress) if on_epoch else None
        stop = threading.Event()
        follower = (
            threading.Thread(target=_follow, args=(progress, on_epoch, stop), daemon=True)
            if on_epoch
            else None
        )
        if follower:
            follower.start()
        try:
            result = distributed.run_ranks(spark, train, train_rank, cfg)
        finally:
            stop.set()
            if follower:
                follower.join()
    if not isinstance(result, TrainResult):
        raise RuntimeError(
            f"training returned {type(result).__name__}, expected TrainResult from rank 0"
        )
    return result


def params_of(train: TrainSettings, n_files: int) -> dict[str, Any]:
    """What a run records as MLflow params (and gold.models' params JSON)."""
    return {
        **{k: getattr(train, k) for k in HYPERPARAMETERS},
        "num_processes": train.num_processes,
        "local_mode": train.local_mode,
        "feature_files": n_files,
    }


def run(
    lake: Lake,
    settings: Settings,
    on_epoch: EpochCallback | None = None,
    train: TrainSettings | None = None,
    run_name: str = "train",
) -> TrainOutcome:
    """``genre train``: train on gold.features, log the MLflow run, register a new version.

    The new version becomes ``@challenger`` (``genre promote`` decides whether
    it replaces the champion), and the run stores the training snapshot that
    ``genre drift`` compares catalogues with.

    ``train`` overrides ``settings.train`` (tuning retrains its best
    configuration this way).
    """
    import mlflow

    from genre_spark.drift.reference import log_reference
    from genre_spark.model.registry import (
        mark_challenger,
        register_model,
        use_tracking,
        within_run,
    )

    train = train or settings.train
    with stages.run(lake, stages.TRAIN) as io:
        files = io.files(GOLD_FEATURES)
        transform_version, transform = prepared_transform(io)
        params = params_of(train, len(files))
        use_tracking(settings)
        with within_run(None, run_name=run_name) as active:
            mlflow.set_tags({"stage": "train", "normalizer_table_version": str(transform_version)})
            result = fit(lake.spark, files, train, transform.outputs, on_epoch)
            mlflow.log_dict({str(r): f for r, f in result.shards.items()}, "shards.json")
            log_reference(io, settings, train, transform.names)
            registration = register_model(
                lake,
                settings,
                result.model(),
                params=params,
                metrics=result.metrics,
                genres=result.genres,
                transform=transform,
                history=result.history,
                run_id=active.info.run_id,
            )
    mark_challenger(lake, settings, registration.version)
    return TrainOutcome(
        version=registration.version,
        run_id=active.info.run_id,
        result=result,
        features=transform.names,
        reused=registration.reused,
    )


def prepared_transform(io: stages.StageRun) -> tuple[int, FeatureTransform]:
    """gold.normalizer's version and the feature transform it holds: what gold.features was built with.

    The model is trained on these inputs and carries this transform (see
    ``register_model``), whatever ``settings.features`` says now.
    """
    version = io.version(GOLD_NORMALIZER)
    return version, read_transform(io.read(GOLD_NORMALIZER, version))
