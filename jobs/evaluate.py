"""spark-submit entry point for `genre evaluate`: the same code and options as the CLI.

spark-submit jobs/evaluate.py --lake ./lake [--config conf/cluster.yaml] [--set key=value]
"""

from genre_spark.cli import submit

submit("evaluate")
