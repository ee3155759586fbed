"""The model stage: a 1-D CNN trained with TorchDistributor, tuned with Optuna, tracked in MLflow.

``cnn`` (the network), ``data`` (per-rank shards of gold.features), ``train``
(distributed training), ``tune`` (Optuna search), ``registry`` (MLflow Model
Registry + gold.models) and ``reference`` (Spark MLlib baselines).
"""
