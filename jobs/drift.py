"""spark-submit entry point for `genre drift`: the same code and options as the CLI.

spark-submit jobs/drift.py --lake ./lake [--config conf/cluster.yaml] [--set key=value]
"""

from genre_spark.cli import submit

submit("drift")
