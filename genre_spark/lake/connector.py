"""Delta's JVM connector: where its jars are, and the Spark settings that load it.

``make setup`` fetches the connector from Maven Central once into
``jvm/delta/jars`` (``jvm/delta/pom.xml`` says what and why); the session
factory puts those jars on the classpath with Delta's SQL extension and
catalog. On a cluster the same settings come from ``spark-submit --packages``
(or ``--jars``), and Databricks has them built in; then the running session
is checked, not configured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import SparkSession

from genre_spark.config import ConfigError

log = logging.getLogger(__name__)

#: The jar release paired with the pinned ``delta-spark`` Python package (4.4.1): 4.4.1's
#: jar is not on Maven Central, and the 4.4.0 and 4.4.1 Python packages hold the same code.
DELTA_VERSION = "4.4.0"
DELTA_PACKAGE = f"io.delta:delta-spark_4.2_2.13:{DELTA_VERSION}"
EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
#: Where ``make setup`` puts the jars (``spark.delta_jars`` overrides it).
PROJECT_JARS = Path(__file__).resolve().parents[2] / "jvm" / "delta" / "jars"

HOW_TO_GET = (
    f"run `make setup` (it fetches them into {PROJECT_JARS}), or on a cluster "
    f"spark-submit --packages {DELTA_PACKAGE} with Delta's SQL extension and catalog "
    "(README: Running on a cluster); Databricks has them built in"
)


class DeltaConnectorMissingError(ConfigError):
    """The delta-spark engine was asked for, but Delta's JVM connector is not loaded."""


def delta_jars(folder: str | Path | None = None) -> list[str]:
    """The connector's jars in ``folder`` (default: the project's), or [] if it is not there."""
    root = Path(folder) if folder else PROJECT_JARS
    jars = sorted(str(p) for p in root.glob("*.jar")) if root.is_dir() else []
    return jars if any(Path(j).name.startswith("delta-spark_") for j in jars) else []


def connector_conf(jars: list[str], conf: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark settings that load the connector from ``jars``, added to ``conf``'s own jars and
    SQL extensions (an S3A connector, another extension) rather than replacing them."""
    conf = conf or {}
    others = [j for j in conf.get("spark.jars", "").split(",") if j and j not in jars]
    extensions = [e for e in conf.get("spark.sql.extensions", "").split(",") if e]
    return {
        "spark.jars": ",".join([*jars, *others]),
        "spark.sql.extensions": ",".join([EXTENSION, *[e for e in extensions if e != EXTENSION]]),
        "spark.sql.catalog.spark_catalog": CATALOG,
    }


def session_has_connector(spark: SparkSession) -> bool:
    """True when Delta's classes are on the driver's classpath and its extension and catalog are set.

    All three are needed: MERGE and the catalogue go through the extension and
    catalog, and both are fixed when the session starts. Databricks runtimes
    have Delta built into their own catalogue, so there the classes suffice.
    """
    conf = spark.sparkContext.getConf()
    configured = EXTENSION in (conf.get("spark.sql.extensions", "") or "").split(",") and (
        conf.get("spark.sql.catalog.spark_catalog", "") == CATALOG
    )
    if not configured and "DATABRICKS_RUNTIME_VERSION" not in os.environ:
        return False
    try:
        # The context class loader: it holds spark.jars/--jars, the system one does not.
        thread = spark.sparkContext._jvm.java.lang.Thread.currentThread()  # type: ignore[union-attr]
        thread.getContextClassLoader().loadClass("io.delta.tables.DeltaTable")
        return True
    except Exception:
        return False


def missing(reason: str) -> DeltaConnectorMissingError:
    """The one-line error for an explicit delta-spark engine without the connector."""
    return DeltaConnectorMissingError(f"the delta-spark engine needs {reason}: {HOW_TO_GET}")


_said_fallback = False


def say_fallback_once(reason: str) -> None:
    """``engine: auto`` without the connector uses delta-rs; tell the user once per process."""
    global _said_fallback
    if not _said_fallback:
        _said_fallback = True
        log.warning(
            "using the delta-rs engine: %s (for the delta-spark engine, %s)", reason, HOW_TO_GET
        )
