"""The one SparkSession factory.

Under ``spark-submit`` the session (master, resources, packages) is the one
spark-submit configured and is used as it is. Run directly (CLI, tests,
notebooks) it starts ``local[*]`` on this machine with settings from config,
and with Delta's JVM connector when the engine is ``delta-spark``, or ``auto``
and ``make setup`` has fetched its jars.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from genre_spark.config import Settings
from genre_spark.lake import Lake, connector


def under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(settings: Settings) -> SparkSession:
    """The active session if one exists (spark-submit, notebooks), else a configured local one."""
    if under_spark_submit() or SparkSession.getActiveSession() is not None:
        spark = SparkSession.builder.getOrCreate()
    else:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        if settings.spark.master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        warehouse = (
            Path(settings.lake).resolve() / "_spark_warehouse"
            if "://" not in settings.lake
            else None
        )
        builder = (
            SparkSession.builder.master(settings.spark.master)
            .appName(settings.spark.app_name)
            .config("spark.driver.memory", settings.spark.driver_memory)
            .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.showConsoleProgress", "false")
        )
        if warehouse is not None:
            builder = builder.config("spark.sql.warehouse.dir", str(warehouse))
        for key, value in {**settings.spark.conf, **delta_connector_conf(settings)}.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def delta_connector_conf(settings: Settings) -> dict[str, str]:
    """Spark settings that load Delta's connector, where the engine may use it and it is here.

    An explicit ``delta-spark`` engine without the jars fails now, in one
    line, rather than at the first write; ``auto`` without them says so later,
    once, when the lake falls back to delta-rs.
    """
    if settings.engine == "delta-rs":
        return {}
    jars = connector.delta_jars(settings.spark.delta_jars)
    if not jars:
        if settings.engine == "delta-spark":
            where = settings.spark.delta_jars or connector.PROJECT_JARS
            raise connector.missing(f"Delta's connector jars, and none are in {where}")
        return {}
    return connector.connector_conf(jars, settings.spark.conf)


def open_lake(settings: Settings, spark: SparkSession | None = None) -> Lake:
    """The settings' lake on the given (or the factory's) session."""
    return Lake(
        spark or get_spark(settings),
        settings.lake,
        settings.engine,
        checkpoint_interval=settings.checkpoint_interval,
    )
