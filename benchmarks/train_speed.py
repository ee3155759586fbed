"""Training speed and accuracy of the CNN stage, measured in one run.

    python benchmarks/train_speed.py speed --rows 50000 --epochs 10      # TorchDistributor vs plain torch
    python benchmarks/train_speed.py accuracy                            # default synthetic catalogue

speed: the same Gaussian-blob gold.features (the tests' ``blobs.blob_features``), the
same GenreCNN size, batch size and epoch count (early stopping off), trained

* with ``train.fit``: TorchDistributor, ``--processes`` DDP processes, each
  reading its own files (start-up, data loading and all-reduces included);
* with a plain single-process torch loop over all rows in memory, data
  loading included, with ``--threads`` intra-op threads (default 1, what
  TorchDistributor gives each rank: torch's default of one thread per core
  busy-waits badly when other processes share the cores).

accuracy: a fresh lake, ``ingest synthetic`` and ``prepare`` with the
configured defaults (5,500 tracks, 10 genres), then ``genre train`` and the
MLlib references; prints the CNN's validation macro-F1 beside the best
reference's and the wall time of each stage.

Each mode prints a Markdown table row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from measure import header, measured  # benchmarks/ is on sys.path when run as a script

# The tests' known-separable gold.features (tests/blobs.py): test data, not library code.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from blobs import blob_features

from genre_spark.config import Settings, TrainSettings, load_settings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_FEATURES
from genre_spark.metrics import confusion_matrix, scores
from genre_spark.model import train as training
from genre_spark.model.cnn import GenreCNN
from genre_spark.model.data import balanced_weights, encode, genre_index, read_shard
from genre_spark.schema import FEATURES
from genre_spark.session import get_spark


def plain_torch(files: list[str], train: TrainSettings, features: list[str]) -> float:
    """One process, no Spark, no DDP: read every file, train the same network; returns val macro-F1."""
    train_rows = read_shard(files, "train", len(features), train.exclude_outliers)
    validation = read_shard(files, "validation", len(features))
    index = genre_index(train_rows.genres.tolist())
    x, y = (torch.as_tensor(a) for a in encode(train_rows, index))
    xv, yv = (torch.as_tensor(a) for a in encode(validation, index))
    cfg = training.rank_config(train, features, files)
    torch.manual_seed(train.seed)
    model = GenreCNN(len(features), len(index), **training.network_shape(cfg))
    weights = torch.as_tensor(
        balanced_weights(np.bincount(y.numpy(), minlength=len(index))), dtype=torch.float32
    )
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=train.label_smoothing)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
    )
    rng = np.random.default_rng(train.seed)
    steps = -(-len(y) // train.batch_size)
    for epoch in range(train.epochs):
        model.train()
        for i, idx in enumerate(training.shuffled_batches(len(y), train.batch_size, rng)):
            if train.schedule != "plateau":
                training.set_rate(optimizer, cfg, epoch * steps + i, train.epochs * steps)
            batch = torch.as_tensor(idx)
            optimizer.zero_grad()
            training.ensemble_loss(loss_fn, model.member_logits(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(xv).argmax(1).numpy()
    return scores(confusion_matrix(yv.numpy(), predicted, len(index)))["macro_f1"]


def speed(settings: Settings, rows: int, files: int, threads: int) -> None:
    spark = get_spark(settings)
    lake = Lake(spark, settings.lake, settings.engine)
    genres = [f"genre{i:02d}" for i in range(10)]
    lake.write(
        blob_features(spark, rows, genres, list(FEATURES), spread=1.2, files=files),
        GOLD_FEATURES,
    )
    paths = lake.files(GOLD_FEATURES)
    with measured() as distributed:
        result = training.fit(spark, paths, settings.train, list(FEATURES))
    torch.set_num_threads(threads)
    with measured() as single:
        single_f1 = plain_torch(paths, settings.train, list(FEATURES))
    t = settings.train
    print(header(" ".join(sys.argv)))
    print(
        "| rows | epochs | batch | channels x depth | TorchDistributor (processes) | s | val macro-F1 "
        "| plain torch (threads) | s | val macro-F1 | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {rows:,} | {t.epochs} | {t.batch_size} | {t.channels} x {t.depth} | {t.num_processes} "
        f"(local_mode={t.local_mode}) | {distributed.seconds:.1f} | {result.metrics['val_macro_f1']:.4f} "
        f"| 1 process ({threads}) | {single.seconds:.1f} | {single_f1:.4f} | {distributed.seconds / single.seconds:.2f} |"
    )


def accuracy(settings: Settings) -> None:
    from genre_spark.ingest import synthetic
    from genre_spark.model import reference
    from genre_spark.prepare.run import run as prepare

    lake = Lake(get_spark(settings), settings.lake, settings.engine)
    seconds = {}
    for name, stage in (
        ("ingest", lambda: synthetic.run(lake, settings)),
        ("prepare", lambda: prepare(lake, settings)),
    ):
        with measured() as m:
            stage()
        seconds[name] = m.seconds
    with measured() as m:
        cnn = training.run(lake, settings)
    seconds["train"] = m.seconds
    with measured() as m:
        refs = reference.run(lake, settings)
    seconds["references"] = m.seconds
    best_name, best = max(refs.metrics.items(), key=lambda kv: kv[1]["val_macro_f1"])
    metrics = cnn.result.metrics
    print(header(" ".join(sys.argv)))
    print(f"gold.features files: {len(lake.files('gold.features'))}; references: {refs.metrics}")
    print(
        "| tracks | CNN val macro-F1 | CNN val acc | best epoch | best reference | ref val macro-F1 "
        "| train s | references s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {settings.ingest.synthetic.tracks:,} | {metrics['val_macro_f1']:.4f} | {metrics['val_accuracy']:.4f} "
        f"| {int(metrics['best_epoch'])}/{int(metrics['epochs_run'])} | {best_name} "
        f"| {best['val_macro_f1']:.4f} | {seconds['train']:.0f} | {seconds['references']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["speed", "accuracy"])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None, help="default: train.epochs")
    parser.add_argument("--processes", type=int, default=None, help="default: train.num_processes")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--threads", type=int, default=1, help="plain torch's intra-op threads")
    parser.add_argument("--workdir", default=None, help="keep the lake here (default: a temp dir)")
    parser.add_argument("--set", action="append", default=[], help="a settings override key=value")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genre-train-bench-"))
    overrides: dict[str, object] = {"lake": str(workdir / "lake"), "spark.master": args.master}
    if args.epochs:
        overrides.update({"train.epochs": args.epochs})
    if args.processes:
        overrides["train.num_processes"] = args.processes
    if args.mode == "speed":
        overrides["train.patience"] = 10_000  # same epoch count on both sides
    from genre_spark.config import parse_override

    overrides.update(dict(parse_override(o) for o in args.set))
    settings = load_settings(overrides=overrides)
    try:
        speed(settings, args.rows, args.files, args.threads) if args.mode == "speed" else accuracy(
            settings
        )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
