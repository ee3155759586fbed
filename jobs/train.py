"""spark-submit entry point for `genre train`: the same code and options as the CLI.

spark-submit jobs/train.py --lake ./lake [--config conf/cluster.yaml] [--set key=value]
"""

from genre_spark.cli import submit

submit("train")
