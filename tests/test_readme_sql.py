"""Every ```sql block in README.md runs against a lake the pipeline wrote and returns rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
QUERIES = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_sql_examples() -> None:
    assert len(QUERIES) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("query", QUERIES, ids=[q.split("\n")[0][:50] for q in QUERIES])
def test_readme_query_returns_rows(pipeline_run, query: str) -> None:
    _, lake, _ = pipeline_run
    lake.register_sql()
    df = lake.spark.sql(query)
    head = df.limit(5).collect()
    assert head, f"README query returned no rows:\n{query}"
    assert all(value is not None for value in head[0]), head[0]
