"""``genre sql``: read-only Spark SQL over the lake, printed for people or for pipes.

Read-only by Spark's own reading of the statement, not by its words: the
statement is parsed into Spark's (unresolved) logical plan first, and every
node of that plan, subqueries and CTE definitions included, must be a query
operator or a SHOW / DESCRIBE / EXPLAIN command (``READ_ONLY_NODES``). Anything
else (INSERT, UPDATE, DELETE, MERGE, DROP, CREATE, ALTER, TRUNCATE, but also
SET, USE, CACHE, EXECUTE IMMEDIATE, ...) is refused before a table is even
registered: tables change only through the pipeline's stages, which keep
silver's one row per track_id and bronze = silver + quarantine.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession
from rich.console import Console
from rich.table import Table

from genre_spark.errors import GenreError, UsageError
from genre_spark.lake import Lake

#: Spark plan nodes (class names) that only read: the relational operators a
#: SELECT, WITH, VALUES, TABLE or pipe (``|>``) query parses to, the relations
#: they read, and the SHOW / DESCRIBE / EXPLAIN commands with their operands.
READ_ONLY_NODES = frozenset(
    {
        # queries
        "Aggregate", "CTERelationDef", "CTERelationRef", "Deduplicate", "Distinct", "Except",
        "Expand", "Filter", "Generate", "GlobalLimit", "Intersect", "Join", "LateralJoin",
        "LimitAll", "LocalLimit", "LocalRelation", "Offset", "OneRowRelation", "PipeOperator",
        "Pivot", "Project", "RelationTimeTravel", "Repartition", "RepartitionByExpression",
        "Sample", "Sort", "SubqueryAlias", "Tail", "Union", "UnresolvedHaving", "UnresolvedHint",
        "UnresolvedInlineTable", "UnresolvedRelation", "UnresolvedSubqueryColumnAliases",
        "UnresolvedTableValuedFunction", "UnresolvedTVFAliases", "UnresolvedWith", "Unpivot",
        "Window", "WithCTE", "WithWindowDefinition",
        # SHOW / DESCRIBE / EXPLAIN, and what they name
        "DescribeColumn", "DescribeFunction", "DescribeNamespace", "DescribeQueryCommand",
        "DescribeRelation", "ExplainCommand", "ShowCatalogsCommand", "ShowColumns",
        "ShowCreateTable", "ShowCurrentNamespaceCommand", "ShowFunctions", "ShowNamespaces",
        "ShowNamespacesCommand", "ShowPartitions", "ShowTableProperties", "ShowTables",
        "ShowTablesExtended", "ShowViews", "CurrentNamespace$", "UnresolvedFunctionName",
        "UnresolvedNamespace", "UnresolvedTable", "UnresolvedTableOrView",
    }
)  # fmt: skip
#: Read-only commands whose statement is a field, not a child: the field is checked too
#: (``EXPLAIN INSERT ...`` runs nothing, but is refused like the INSERT it describes).
_WRAPPED = {"ExplainCommand": "logicalPlan", "DescribeQueryCommand": "plan"}


class SqlError(GenreError):
    """A query Spark could not parse or analyse."""


class ReadOnlyError(SqlError, UsageError):
    """A statement that would change a table or the catalogue: ``genre sql`` only reads.

    A SqlError (callers of ``run_query`` catch one kind for every refused
    statement) that is bad usage rather than a failed query, so it exits 2.
    """


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def _statement_kind(node: str) -> str:
    """``InsertIntoStatement`` -> ``INSERT INTO``, ``DropTable`` -> ``DROP TABLE``: for the message."""
    words = re.findall(r"[A-Z][a-z]*", node.rstrip("$"))
    if len(words) > 1 and words[-1] in ("Command", "Statement"):
        words = words[:-1]
    return " ".join(words).upper()


def check_read_only(spark: SparkSession, query: str) -> None:
    """Raise ReadOnlyError unless every node of ``query``'s parsed plan is in READ_ONLY_NODES.

    Parsing runs nothing and needs no table; a statement Spark cannot parse
    is a SqlError with Spark's first line.
    """
    from pyspark.errors import ParseException

    try:
        plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    except ParseException as exc:
        raise SqlError(str(exc).strip().splitlines()[0]) from None
    pending = [plan]
    while pending:
        node = pending.pop()
        name = node.getClass().getSimpleName()
        if name not in READ_ONLY_NODES:
            raise ReadOnlyError(
                f"genre sql is read-only: refused {_statement_kind(name)} (Spark plan node "
                f"{name}); tables change only through the pipeline's stages"
            )
        for children in (node.children(), node.innerChildren()):
            pending += [children.apply(i) for i in range(children.size())]
        if name in _WRAPPED:
            pending.append(getattr(node, _WRAPPED[name])())


def run_query(lake: Lake, query: str, limit: int) -> QueryResult:
    """Check the query only reads, register every lake table, run it, bring back at most ``limit`` rows.

    Only the printed rows reach the driver: the limit is applied by Spark.
    """
    from pyspark.errors import AnalysisException, ParseException

    check_read_only(lake.spark, query)
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
