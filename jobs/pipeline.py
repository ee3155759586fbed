"""spark-submit entry point for the whole pipeline (`genre pipeline`).

spark-submit jobs/pipeline.py --lake ./lake [--tracks 20000] [--csv export.csv]
python jobs/pipeline.py            # what `make run` does: local Spark, synthetic catalog
"""

from genre_spark.cli import submit

submit("pipeline")
