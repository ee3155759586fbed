"""The ``genre`` command line: thin commands over the library.

Every command takes ``--lake``/``GENRE_LAKE``, ``--config FILE`` and
``--set key.path=value`` overrides. Exit codes: 0 success, 1 the work failed,
2 bad usage or configuration. Errors are one line; ``--verbose`` adds the
traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from genre_spark.config import ConfigError, Settings, load_settings, parse_override

app = typer.Typer(
    help="genre-spark: classify music genres from Spotify track metadata with Spark, Delta and PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(
    help="Bring tracks into the lake (bronze -> silver).", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")

console = Console(stderr=True)
out = Console()

LakeOpt = Annotated[
    str | None,
    typer.Option("--lake", envvar="GENRE_LAKE", help="Lake folder or URI (default ./lake)."),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file layered over conf/base.yaml.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting, e.g. --set train.epochs=5 (repeatable)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")]


@dataclass
class Context:
    """What every command needs: validated settings, and a lake opened on first use."""

    settings: Settings
    verbose: bool = False
    _lake: Any = field(default=None, repr=False)

    @property
    def lake(self) -> Any:
        if self._lake is None:
            from genre_spark.session import open_lake

            with console.status("starting Spark"):
                self._lake = open_lake(self.settings)
        return self._lake


def make_context(
    lake: str | None,
    config: Path | None,
    overrides: list[str] | None,
    verbose: bool,
    extra: dict[str, Any] | None = None,
) -> Context:
    """Settings from every layer, CLI last; a bad setting exits 2 with the key named."""
    pairs: dict[str, Any] = dict(parse_override(o) for o in overrides or [])
    pairs.update({k: v for k, v in (extra or {}).items() if v is not None})
    if lake:
        pairs["lake"] = lake
    settings = load_settings(config, pairs)
    return Context(settings=settings, verbose=verbose)


class UsageError(Exception):
    """Bad usage that the command itself detects: exit code 2."""


@contextmanager
def handled(verbose: bool) -> Iterator[None]:
    """Turn exceptions into one clear line and the exit-code convention."""
    try:
        yield
    except typer.Exit:
        raise
    except (ConfigError, UsageError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        if verbose:
            console.print(traceback.format_exc())
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.print(f"[red]error:[/red] {type(exc).__name__}: {message}")
        if verbose:
            console.print(traceback.format_exc())
        else:
            console.print("[dim](run again with --verbose for the traceback)[/dim]")
        raise typer.Exit(1) from None


# --- ingest -------------------------------------------------------------------


# --- lake ---------------------------------------------------------------------


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A Spark SQL query over the lake tables.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | csv | json")] = "table",
    limit: Annotated[int, typer.Option(help="Print at most this many rows.")] = 1000,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run Spark SQL over every lake table (bronze.*, silver.*, gold.*).

    Examples:
      genre sql "SELECT genre, count(*) AS n FROM silver.tracks GROUP BY genre ORDER BY genre"
      genre sql "SELECT * FROM gold.evaluation WHERE split = 'test'" --format csv
    """
    from genre_spark.sqlshell import render, run_query

    with handled(verbose):
        if fmt not in ("table", "csv", "json"):
            raise UsageError(f"--format must be one of table, csv, json (got {fmt!r})")
        ctx = make_context(lake, config, set_, verbose)
        result = run_query(ctx.lake, query, limit)
        render(result, fmt, out)


@app.command()
def vacuum(
    table: Annotated[
        list[str] | None, typer.Argument(help="Tables to vacuum (default: all).")
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Delete data files no current table version reads (old versions, killed writers' leftovers).

    Run it when no job is writing: afterwards, time travel to older versions is gone.
    Example: genre vacuum silver.tracks
    """
    with handled(verbose):
        ctx = make_context(lake, config, set_, verbose)
        names = table or [info.name for info in ctx.lake.tables()]
        for name in names:
            removed = ctx.lake.vacuum(name)
            out.print(f"{name}: removed {len(removed)} file(s)")


@app.command()
def tables(
    lake: LakeOpt = None, config: ConfigOpt = None, set_: SetOpt = None, verbose: VerboseOpt = False
) -> None:
    """List the lake's tables with version and row count.

    Example: genre tables --lake ./lake
    """
    from rich.table import Table

    with handled(verbose):
        ctx = make_context(lake, config, set_, verbose)
        infos = ctx.lake.tables()
        table = Table(title=f"lake {ctx.settings.lake}")
        for column in ("table", "version", "rows", "path"):
            table.add_column(column)
        for info in infos:
            table.add_row(info.name, str(info.version), str(info.rows), info.path)
        out.print(table)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="genre")


def submit(command_name: str) -> None:
    """Entry point of ``jobs/<command>.py`` under spark-submit: the CLI command with argv."""
    app([command_name, *sys.argv[1:]], prog_name=f"{command_name}.py")


if __name__ == "__main__":
    sys.exit(main())
