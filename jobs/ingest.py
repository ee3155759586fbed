"""spark-submit entry point for `genre ingest`: the same code and options as the CLI.

spark-submit jobs/ingest.py synthetic --tracks 20000 --lake ./lake
"""

from genre_spark.cli import submit

submit("ingest")
