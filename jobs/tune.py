"""spark-submit entry point for `genre tune`: the same code and options as the CLI.

GENRE_PROFILE=cluster spark-submit jobs/tune.py --lake ./lake [--config FILE] [--set key=value]
"""

from genre_spark.cli import submit

submit("tune")
