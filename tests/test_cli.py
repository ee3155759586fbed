"""The `genre` command line: output formats and the 0/1/2 exit-code convention."""

from __future__ import annotations

import json

from pyspark.sql import SparkSession
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import Settings
from genre_spark.lake import Lake
from genre_spark.lake.catalog import SILVER_TRACKS

runner = CliRunner()


def _seed(spark: SparkSession, lake: Lake) -> None:
    df = spark.createDataFrame(
        [("a", "rock", 0.5), ("b", "rock", 0.25), ("c", "pop", 0.75)],
        "track_id string, genre string, energy double",
    )
    lake.write(df, SILVER_TRACKS)


def test_sql_prints_csv_and_json(spark: SparkSession, lake: Lake, settings: Settings) -> None:
    _seed(spark, lake)
    query = "SELECT genre, count(*) AS n FROM silver.tracks GROUP BY genre ORDER BY genre"
    result = runner.invoke(app, ["sql", query, "--format", "csv", "--lake", settings.lake])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["genre,n", "pop,1", "rock,2"]

    result = runner.invoke(app, ["sql", query, "-f", "json", "--lake", settings.lake])
    assert result.exit_code == 0, result.output
    parsed = [json.loads(chunk) for chunk in result.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert parsed == [{"genre": "pop", "n": 1}, {"genre": "rock", "n": 2}]


def test_tables_lists_the_lake(spark: SparkSession, lake: Lake, settings: Settings) -> None:
    _seed(spark, lake)
    result = runner.invoke(app, ["tables", "--lake", settings.lake])
    assert result.exit_code == 0, result.output
    assert SILVER_TRACKS in result.stdout and " 3 " in result.stdout


def test_exit_codes(spark: SparkSession, lake: Lake, settings: Settings) -> None:
    _seed(spark, lake)
    bad_format = runner.invoke(app, ["sql", "SELECT 1", "-f", "xml", "--lake", settings.lake])
    assert bad_format.exit_code == 2 and "--format must be one of" in bad_format.output

    bad_setting = runner.invoke(
        app, ["sql", "SELECT 1", "--set", "prepare.scaler=minmax", "--lake", settings.lake]
    )
    assert bad_setting.exit_code == 2 and "prepare.scaler" in bad_setting.output

    bad_query = runner.invoke(
        app, ["sql", "SELECT nope FROM silver.tracks", "--lake", settings.lake]
    )
    assert bad_query.exit_code == 1
    assert "Traceback" not in bad_query.output and "nope" in bad_query.output

    verbose = runner.invoke(
        app, ["sql", "SELECT nope FROM silver.tracks", "--lake", settings.lake, "--verbose"]
    )
    assert verbose.exit_code == 1 and "Traceback" in verbose.output
