"""spark-submit entry point for `genre evaluate`: the same code and options as the CLI.

GENRE_PROFILE=cluster spark-submit jobs/evaluate.py --lake ./lake [--config FILE] [--set key=value]
"""

from genre_spark.cli import submit

submit("evaluate")
