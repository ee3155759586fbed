"""spark-submit entry point for `genre report`: the same code and options as the CLI.

GENRE_PROFILE=cluster spark-submit jobs/report.py --lake ./lake [--config FILE] [--set key=value]
"""

from genre_spark.cli import submit

submit("report")
