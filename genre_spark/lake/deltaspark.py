"""The delta-spark engine: Delta's own JVM connector, for clusters that have its jars.

Chosen when ``io.delta.tables.DeltaTable`` is on the JVM classpath (``--packages
io.delta:delta-spark_4.2_2.13:4.4.1``, Databricks). Not exercised by CI here:
the connector cannot be downloaded on these machines (PLATFORM.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession

if TYPE_CHECKING:
    import pyarrow as pa


class DeltaSparkEngine:
    name = "delta-spark"

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def _table(self, path: str) -> Any:
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path)

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, path))

    def read(self, path: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(path)

    def write(self, df: DataFrame, path: str, overwrite: bool, operation: str) -> int:
        """One commit of ``df``; returns the table's latest version after it.

        Not necessarily this commit's under a concurrent writer (the delta-rs
        engine finds its own commit by a write id; not done here, untested).
        """
        (
            df.write.format("delta")
            .mode("overwrite" if overwrite else "append")
            .option("overwriteSchema", "true" if overwrite else "false")
            .option("userMetadata", operation)
            .save(path)
        )
        return self.version(path)

    def append_arrow(self, path: str, table: pa.Table) -> int:
        """Append rows the driver already holds: Spark makes them a DataFrame, then ``write``."""
        df = self.spark.createDataFrame(table)
        return self.write(df, path, overwrite=False, operation="APPEND")

    def merge(self, df: DataFrame, path: str, keys: list[str]) -> int:
        """Delta's MERGE; returns the latest version after it (see ``write``)."""
        if not self.exists(path):
            return self.write(df, path, overwrite=True, operation="MERGE")
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        (
            self._table(path)
            .alias("t")
            .merge(df.alias("s"), condition)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
        return self.version(path)

    def version(self, path: str) -> int:
        return int(self._table(path).history(1).first()["version"])

    def history(self, path: str) -> list[dict[str, Any]]:
        rows = self._table(path).history().select("version", "timestamp", "operation").collect()
        return [r.asDict() for r in rows]

    def files(self, path: str) -> list[str]:
        return sorted(self.read(path).inputFiles())

    def rows(self, path: str) -> int:
        return int(self.read(path).count())

    def vacuum(self, path: str) -> list[str]:
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        self._table(path).vacuum(0)
        return []

    def sql_ddl(self, qualified: str, path: str) -> str:
        return f"CREATE TABLE {qualified} USING delta LOCATION '{path}'"
