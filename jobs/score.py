"""spark-submit entry point for `genre score`: the same code and options as the CLI.

spark-submit jobs/score.py --lake ./lake [--config conf/cluster.yaml] [--set key=value]
"""

from genre_spark.cli import submit

submit("score")
