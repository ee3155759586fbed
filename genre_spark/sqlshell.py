"""``genre sql``: Spark SQL over the lake, printed for people or for pipes."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from genre_spark.lake import Lake


class SqlError(ValueError):
    """A query Spark could not parse or analyse."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def run_query(lake: Lake, query: str, limit: int) -> QueryResult:
    """Register every lake table, run the query, and bring back at most ``limit`` rows.

    Only the printed rows reach the driver: the limit is applied by Spark.
    """
    from pyspark.errors import AnalysisException, ParseException

    lake.register_sql()
    try:
        df = lake.spark.sql(query)
        head = df.limit(limit + 1).collect()
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise SqlError(first) from None
    rows = [tuple(r) for r in head[:limit]]
    return QueryResult(df.columns, rows, truncated=len(head) > limit)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def render(result: QueryResult, fmt: str, console: Console) -> None:
    """Print as a rich table, CSV or JSON lines."""
    if fmt == "json":
        for row in result.rows:
            console.print_json(json.dumps(dict(zip(result.columns, map(_plain, row), strict=True))))
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([[_plain(v) for v in row] for row in result.rows])
        console.out(buffer.getvalue(), end="", highlight=False)
        return
    table = Table(show_lines=False)
    for column in result.columns:
        table.add_column(column)
    for row in result.rows:
        table.add_row(*[str(_plain(v)) for v in row])
    console.print(table)
    if result.truncated:
        console.print(f"[dim](first {len(result.rows)} rows shown; use --limit)[/dim]")
