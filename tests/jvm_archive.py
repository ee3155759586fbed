"""A class-data-sharing archive of Spark's classes, so the suite's many cold JVMs start faster.

Every Spark JVM the tests start (a subprocess job's driver, spark-submit's
driver and executors, the standalone master and workers) loads the same few
thousand classes from pyspark's jars, and parses and verifies each of them
again: a large part of a cold start on two cores. JDK 17's dynamic AppCDS
dumps the classes one JVM loaded (``-XX:ArchiveClassesAtExit``) and later JVMs
map that archive instead (``-XX:SharedArchiveFile``); BENCHMARKS.md has the
measured gain.

``start_dump`` runs a small Spark job under spark-submit in the background
while the tests go on (the test session's own JVM is already starting, so it
does not wait); once the dump's JVM has exited, ``adopt_if_ready`` (called
before each test, and by the helpers that start JVMs: ``subprocesses.job_env``,
``standalone.spark_env``) puts the options into this process's environment, where
every JVM started later picks them up: ``SPARK_SUBMIT_OPTS`` for drivers,
``SPARK_DAEMON_JAVA_OPTS`` for the master and workers, and ``executor_conf``
for spark-submit's executors. A JVM that cannot use the archive (another JDK,
changed jars) starts exactly as it would without it: ``-Xlog:cds*=off``
keeps the JVM's CDS messages out of every output a test reads.

    spark-submit tests/jvm_archive.py DATA_FOLDER delta|parquet   # the dump job (start_dump)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from genre_spark.lake import connector

#: Environment variables through which Spark's launcher passes java options.
DRIVER_OPTS, DAEMON_OPTS = "SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS"
QUIET = "-Xlog:cds*=off"

_dump: subprocess.Popen[bytes] | None = None
_archive: Path | None = None
_adopted = False


def start_dump(folder: Path, delta_jars: list[str]) -> None:
    """Start the dump job in the background (once), unless the environment already names options.

    With ``delta_jars`` the job loads Delta's connector and writes, reads and
    merges a Delta table, so the archive holds Delta's classes too.
    """
    from standalone import SPARK_HOME, spark_env  # not at the top: standalone imports this module

    global _dump, _archive
    if _dump is not None or os.environ.get(DRIVER_OPTS):
        return
    delta = connector.connector_conf(delta_jars) if delta_jars else {}
    _archive = folder / "spark-classes.jsa"
    log = (folder / "dump.log").open("wb")
    _dump = subprocess.Popen(
        [
            str(SPARK_HOME / "bin" / "spark-submit"),
            "--master",
            "local[2]",
            "--driver-java-options",
            f"-XX:ArchiveClassesAtExit={_archive} {QUIET}",
            *[arg for key, value in delta.items() for arg in ("--conf", f"{key}={value}")],
            __file__,
            str(folder / "data"),
            "delta" if delta else "parquet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=spark_env(),
        start_new_session=True,
    )
    log.close()


def adopt_if_ready() -> None:
    """Once the dump's JVM has exited with its archive written, give later JVMs the options.

    spark-submit's script ``exec``s the JVM, so the process is the JVM and its
    exit means the archive (written at exit) is complete. A failed dump leaves
    the environment as it was: the tests run as they would without it.
    """
    global _adopted
    if _adopted or _dump is None or _dump.poll() is None:
        return
    _adopted = True
    if (options := archive_options()) is not None:
        for name in (DRIVER_OPTS, DAEMON_OPTS):
            os.environ[name] = f"{os.environ.get(name, '')} {options}".strip()


def archive_options() -> str | None:
    """The java options that map the archive; None while there is no complete one."""
    if _dump is None or _dump.poll() != 0 or _archive is None or not _archive.is_file():
        return None
    return f"-XX:SharedArchiveFile={_archive} {QUIET}"


def wait(timeout_s: float) -> str | None:
    """Wait for the dump (if one was started) to end; ``archive_options`` then."""
    if _dump is not None:
        _dump.wait(timeout=timeout_s)
    return archive_options()


def executor_conf() -> list[str]:
    """spark-submit options that give executors the archive too (none before it is ready)."""
    options = archive_options()
    return ["--conf", f"spark.executor.extraJavaOptions={options}"] if options else []


def stop() -> None:
    """When the tests are done: end a dump still running, and delete the archive (about 200 MB)."""
    if _dump is not None and _dump.poll() is None:
        _dump.kill()
        _dump.wait()
    if _archive is not None:
        _archive.unlink(missing_ok=True)


def _exercise(folder: str, table_format: str) -> None:
    """The dump job: the classes a typical test job loads (SQL, shuffle, Arrow, the lake's format)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("jvm-class-archive").getOrCreate()
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    counts = spark.range(2000).selectExpr("id", "id % 7 AS k").groupBy("k").count()
    counts.write.format(table_format).mode("overwrite").save(folder)
    frame = spark.read.format(table_format).load(folder).orderBy("k").toPandas()
    spark.createDataFrame(frame).createOrReplaceTempView("counts")
    if table_format == "delta":
        spark.sql(
            f"MERGE INTO delta.`{folder}` t USING counts s ON t.k = s.k "
            "WHEN MATCHED THEN UPDATE SET t.count = s.count + 1 WHEN NOT MATCHED THEN INSERT *"
        )
        spark.sql(f"DESCRIBE HISTORY delta.`{folder}`").collect()
    spark.sql("SELECT k, sum(count) FROM counts GROUP BY k").collect()
    spark.stop()


if __name__ == "__main__":
    _exercise(sys.argv[1], sys.argv[2])
