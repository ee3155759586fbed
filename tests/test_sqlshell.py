"""``genre sql`` only reads: every kind of statement that would change the lake is refused, exit 2.

The refusal is decided from Spark's parsed plan before anything runs, so each
refused statement must leave every table at its version with the same files,
and Spark's catalogue (databases, tables, views) as it was. Queries, SHOW,
DESCRIBE and EXPLAIN still run and print what they should.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.lake import TABLES, Lake
from genre_spark.lake.catalog import GOLD_EVALUATION, SILVER_TRACKS
from genre_spark.sqlshell import ReadOnlyError, run_query

runner = CliRunner()

#: (id, statement): one of each kind that would change a table or the catalogue.
REFUSED = [
    ("insert", "INSERT INTO silver.tracks SELECT * FROM silver.tracks"),
    ("insert-overwrite", "INSERT OVERWRITE silver.tracks SELECT * FROM silver.tracks WHERE false"),
    ("with-insert", "WITH t AS (SELECT * FROM silver.tracks) INSERT INTO silver.tracks SELECT * FROM t"),
    ("update", "UPDATE silver.tracks SET genre = 'pop'"),
    ("delete", "DELETE FROM silver.tracks WHERE genre = 'rock'"),
    ("merge", "MERGE INTO silver.tracks t USING silver.tracks s ON t.track_id = s.track_id "
              "WHEN MATCHED THEN DELETE"),
    ("drop-table", "DROP TABLE silver.tracks"),
    ("drop-database", "DROP DATABASE silver CASCADE"),
    ("create-table", "CREATE TABLE gold.extra (a INT)"),
    ("create-table-as", "CREATE TABLE silver.copy AS SELECT * FROM silver.tracks"),
    ("replace-table", "REPLACE TABLE silver.tracks AS SELECT 1 AS a"),
    ("create-view", "CREATE OR REPLACE VIEW silver.rock AS SELECT * FROM silver.tracks"),
    ("create-temp-view", "CREATE TEMPORARY VIEW rock AS SELECT * FROM silver.tracks"),
    ("create-database", "CREATE DATABASE scratch"),
    ("alter-add-columns", "ALTER TABLE silver.tracks ADD COLUMNS (extra INT)"),
    ("alter-rename", "ALTER TABLE silver.tracks RENAME TO silver.renamed"),
    ("alter-properties", "ALTER TABLE silver.tracks SET TBLPROPERTIES ('k' = 'v')"),
    ("truncate", "TRUNCATE TABLE silver.tracks"),
    ("load-data", "LOAD DATA LOCAL INPATH 'tracks.csv' INTO TABLE silver.tracks"),
    ("analyze", "ANALYZE TABLE silver.tracks COMPUTE STATISTICS"),
    ("cache", "CACHE TABLE silver.tracks"),
    ("set", "SET spark.sql.shuffle.partitions = 1"),
    ("use", "USE silver"),
    ("execute-immediate", "EXECUTE IMMEDIATE 'DROP TABLE silver.tracks'"),
    ("explain-insert", "EXPLAIN INSERT INTO silver.tracks SELECT * FROM silver.tracks"),
]  # fmt: skip


@pytest.fixture(scope="module")
def seeded(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """A lake with silver.tracks (3 rows) and gold.evaluation (1 row), registered for SQL."""
    lake = Lake(spark, str(tmp_path_factory.mktemp("sqlshell") / "lake"))
    tracks = spark.createDataFrame(
        [("a", "rock", 0.5), ("b", "rock", 0.25), ("c", "pop", 0.75)],
        "track_id string, genre string, energy double",
    )
    lake.write(tracks, SILVER_TRACKS)
    lake.write(spark.createDataFrame([("cnn:1", 0.8)], "model string, accuracy double"),
               GOLD_EVALUATION)  # fmt: skip
    lake.register_sql()
    yield lake


def state(lake: Lake) -> dict[str, Any]:
    """Every table's files (data and log: its versions), and Spark's catalogue: what a write changes."""
    tables = {}
    for name in TABLES:
        path = Path(lake.path(name))
        if path.exists():
            tables[name] = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    catalogue = {
        row[0]: sorted(tuple(t) for t in lake.spark.sql(f"SHOW TABLES IN {row[0]}").collect())
        for row in lake.spark.sql("SHOW DATABASES").collect()
    }
    current = lake.spark.sql("SELECT current_database()").first()[0]
    return {"tables": tables, "catalogue": catalogue, "current": current}


def sql(lake: Lake, query: str, *args: str) -> Any:
    return runner.invoke(app, ["sql", query, "--lake", lake.root, *args])


@pytest.mark.parametrize("query", [q for _, q in REFUSED], ids=[i for i, _ in REFUSED])
def test_a_statement_that_would_change_the_lake_is_refused_and_nothing_changes(
    seeded: Lake, query: str
) -> None:
    before = state(seeded)

    result = sql(seeded, query)

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    said = " ".join(result.output.split())
    assert said.startswith("error: genre sql is read-only: refused "), said
    assert "Traceback" not in result.output
    assert state(seeded) == before


def test_the_refusal_happens_in_the_library_too_naming_the_statement(seeded: Lake) -> None:
    with pytest.raises(ReadOnlyError, match=r"refused INSERT INTO \(Spark plan node InsertInto"):
        run_query(seeded, "INSERT INTO silver.tracks SELECT * FROM silver.tracks", 10)
    with pytest.raises(ReadOnlyError, match="refused DROP TABLE"):
        run_query(seeded, "DROP TABLE silver.tracks", 10)


#: (id, statement, CSV lines expected; None: only checked to contain ``contains``).
READ = [
    ("select", "SELECT genre, count(*) AS n FROM silver.tracks GROUP BY genre ORDER BY genre",
     ["genre,n", "pop,1", "rock,2"]),
    ("with", "WITH r AS (SELECT * FROM silver.tracks WHERE genre = 'rock') "
             "SELECT track_id FROM r ORDER BY track_id", ["track_id", "a", "b"]),
    ("subquery", "SELECT track_id FROM silver.tracks WHERE energy > "
                 "(SELECT avg(energy) FROM silver.tracks) ORDER BY 1", ["track_id", "c"]),
    ("join", "SELECT count(*) AS n FROM silver.tracks t JOIN gold.evaluation e ON true", ["n", "3"]),
    ("values", "VALUES (1, 'x') AS v(a, b)", ["a,b", "1,x"]),
    ("table", "TABLE gold.evaluation", ["model,accuracy", "cnn:1,0.8"]),
    ("pipe", "FROM silver.tracks |> WHERE genre = 'pop' |> SELECT track_id", ["track_id", "c"]),
    ("window", "SELECT track_id, rank() OVER (ORDER BY energy DESC) AS r FROM silver.tracks "
               "ORDER BY r", ["track_id,r", "c,1", "a,2", "b,3"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"), [(q, e) for _, q, e in READ], ids=[i for i, _, _ in READ]
)
def test_queries_still_run(seeded: Lake, query: str, expected: list[str]) -> None:
    result = sql(seeded, query, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == expected


@pytest.mark.parametrize(
    ("query", "contains"),
    [
        ("SHOW TABLES IN silver", "tracks"),
        ("SHOW DATABASES", "gold"),
        ("SHOW COLUMNS IN silver.tracks", "energy"),
        ("DESCRIBE silver.tracks", "track_id,string"),
        ("DESCRIBE TABLE EXTENDED silver.tracks genre", "genre"),
        ("EXPLAIN SELECT * FROM silver.tracks WHERE genre = 'pop'", "Plan"),
    ],
    ids=["show-tables", "show-databases", "show-columns", "describe", "describe-column", "explain"],
)
def test_show_describe_and_explain_still_run(seeded: Lake, query: str, contains: str) -> None:
    before = state(seeded)
    result = sql(seeded, query, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert contains in result.stdout, result.stdout
    assert state(seeded) == before
