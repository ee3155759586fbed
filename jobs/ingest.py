"""spark-submit entry point for ingestion: the same code as `genre ingest ...`.

    spark-submit jobs/ingest.py synthetic --tracks 20000 --lake s3a://bucket/lake
    spark-submit jobs/ingest.py csv data/export.csv --lake ./lake
"""

import sys

from genre_spark.cli import app

if __name__ == "__main__":
    app(["ingest", *sys.argv[1:]], prog_name="ingest.py")
