"""spark-submit entry point for `genre promote`: the same code and options as the CLI.

spark-submit jobs/promote.py --lake ./lake [--config conf/cluster.yaml] [--set key=value]
"""

from genre_spark.cli import submit

submit("promote")
