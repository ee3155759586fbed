"""Hyperparameter search with Optuna (seeded TPE); the best configuration is retrained and registered.

Each trial is a full distributed training run (``train.fit``) with
``tune.epochs`` epochs and is recorded as a nested MLflow run (params,
per-epoch curves, the model artifact) under one ``tune`` parent run. The
objective is the validation macro-F1 and nothing else: the test split is
never read, so the test score stays an honest estimate after tuning. The
winner is retrained with ``train.epochs`` (early stopping still applies) as
a nested ``best`` run and registered like ``genre train``'s model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genre_spark import stages
from genre_spark.config import Settings, TrainSettings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import GOLD_FEATURES
from genre_spark.model import train as training

TrialCallback = Callable[[int, dict[str, Any], float], None]


@dataclass(frozen=True)
class TuneOutcome:
    """The search's best trial and the version registered from retraining it."""

    best_params: dict[str, Any]
    best_trial_value: float
    trial_values: list[float]
    version: str
    parent_run_id: str
    retrained: training.TrainOutcome


def suggest(trial: Any) -> dict[str, Any]:
    """The search space: what moved validation macro-F1 in the measurements (BENCHMARKS.md).

    The peak learning rate and weight decay (optimiser), dropout and label
    smoothing (regularisation), channels, depth and head width (capacity),
    and the periodic embedding's frequency count and initial scale (how
    finely each input's scale can be bent). The ensemble size is not
    searched: more members cost time, not accuracy, so ``train.members``
    is applied to the winner's retraining only (trials train one member).
    """
    return {
        "learning_rate": trial.suggest_float("learning_rate", 5e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.4),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "channels": trial.suggest_categorical("channels", [16, 32, 64]),
        "depth": trial.suggest_int("depth", 1, 3),
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "frequencies": trial.suggest_categorical("frequencies", [8, 16, 32]),
        "frequency_scale": trial.suggest_float("frequency_scale", 0.01, 1.0, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
    }


def with_params(base: TrainSettings, params: dict[str, Any]) -> TrainSettings:
    """``base`` with ``params`` applied, validated like any configured value."""
    return TrainSettings.model_validate({**base.model_dump(), **params})


def run(
    lake: Lake,
    settings: Settings,
    on_trial: TrialCallback | None = None,
    on_epoch: training.EpochCallback | None = None,
) -> TuneOutcome:
    """``genre tune``: ``tune.trials`` trials, then retrain and register the best configuration."""
    import mlflow
    import optuna

    from genre_spark.model.registry import log_model_run, use_tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with stages.run(lake, stages.TUNE) as io:
        files = io.files(GOLD_FEATURES)
        _, transform = training.prepared_transform(io)
    trials = settings.tune.trials
    sampler = optuna.samplers.TPESampler(
        seed=settings.tune.seed, n_startup_trials=min(10, max(2, trials // 3))
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    use_tracking(settings)

    def objective(trial: optuna.Trial) -> float:
        config = with_params(
            settings.train, {**suggest(trial), "epochs": settings.tune.epochs, "members": 1}
        )
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.set_tags({"stage": "tune-trial", "trial": str(trial.number)})
            result = training.fit(lake.spark, files, config, transform.outputs, on_epoch)
            log_model_run(
                result.model(),
                params=training.params_of(config, len(files)),
                metrics=result.metrics,
                genres=result.genres,
                transform=transform,
                history=result.history,
            )
        value = result.metrics["val_macro_f1"]
        if on_trial:
            on_trial(trial.number, trial.params, value)
        return value

    with mlflow.start_run(run_name="tune") as parent:
        mlflow.set_tag("stage", "tune")
        mlflow.log_params(
            {"trials": trials, "tune_epochs": settings.tune.epochs, "seed": settings.tune.seed}
        )
        study.optimize(objective, n_trials=trials)
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric("best_trial_val_macro_f1", study.best_value)
        retrained = training.run(
            lake,
            settings,
            on_epoch,
            train=with_params(settings.train, study.best_params),
            run_name="best",
        )
        mlflow.set_tag("registered_version", retrained.version)
    return TuneOutcome(
        best_params=dict(study.best_params),
        best_trial_value=float(study.best_value),
        trial_values=[float(t.value) for t in study.trials if t.value is not None],
        version=retrained.version,
        parent_run_id=parent.info.run_id,
        retrained=retrained,
    )
