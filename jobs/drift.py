"""spark-submit entry point for `genre drift`: the same code and options as the CLI.

GENRE_PROFILE=cluster spark-submit jobs/drift.py --lake ./lake [--config FILE] [--set key=value]
"""

from genre_spark.cli import submit

submit("drift")
