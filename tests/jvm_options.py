"""JVM options for every JVM the tests start: this session's, each job's, the cluster's.

Test JVMs live seconds to minutes on tiny tables. On two cores, C2's
background compilations take the CPU from the work itself, so the tests run
C1 only (``-XX:TieredStopAtLevel=1``) with the serial collector: the same
Spark, the same results, in far less time (RELIABILITY.md, "Suite time").
Production JVMs keep the JVM's defaults, which pay off on long jobs.
"""

from __future__ import annotations

import os

TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
#: spark-submit (and so PySpark's gateway, in this process and in every job the tests start)
#: reads SPARK_SUBMIT_OPTS; the standalone master and workers read SPARK_DAEMON_JAVA_OPTS.
#: Executors on the cluster get the options through spark.executor.extraJavaOptions.
VARIABLES = ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS")


def use_test_options() -> None:
    """Add TEST_JVM_OPTIONS to the variables every child process inherits (once)."""
    for variable in VARIABLES:
        present = os.environ.get(variable, "")
        if TEST_JVM_OPTIONS not in present:
            os.environ[variable] = f"{present} {TEST_JVM_OPTIONS}".strip()
