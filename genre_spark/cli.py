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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from genre_spark.config import Settings, load_settings, parse_override
from genre_spark.errors import BAD_USAGE, JOB_FAILED, GenreError, UsageError
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_TRACKS_RAW,
    GOLD_EVALUATION,
    SILVER_TRACKS,
)

if TYPE_CHECKING:
    from genre_spark.ingest.spotify.events import ProgressEvent

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
    Path | None,
    typer.Option("--config", "-c", help="YAML file layered over the defaults and conf/."),
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
            if not self.verbose:
                _quiet_task_failures(self._lake.spark)
        return self._lake


#: JVM loggers that print a failed task's stack trace while the job fails; the
#: command then reports the failure itself in one line (``handled``).
TASK_FAILURE_LOGGERS = (
    "org.apache.spark.executor.Executor",
    "org.apache.spark.scheduler.TaskSetManager",
    "org.apache.spark.util.Utils",
    "org.apache.spark.sql.execution.datasources.v2",
)


def _quiet_task_failures(spark: Any) -> None:
    """Without --verbose, a damaged input file is one ``error:`` line, not pages of JVM log."""
    jvm = spark.sparkContext._jvm
    level = jvm.org.apache.logging.log4j.Level.toLevel("OFF")
    for name in TASK_FAILURE_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)


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


@contextmanager
def handled(verbose: bool) -> Iterator[None]:
    """Turn exceptions into one clear line and the exit code the error carries.

    A :class:`GenreError` says its own exit code (``genre_spark.errors``); any
    other exception is a failed job (1). Bad usage (2) is told as its message
    alone, a failure names its type and offers the traceback. The line is never
    wrapped (``soft_wrap``): a terminal folds it, a log or a pipe gets it whole.
    """
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None
    except Exception as exc:
        code = exc.exit_code if isinstance(exc, GenreError) else JOB_FAILED
        if code == BAD_USAGE:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        else:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            console.print(f"[red]error:[/red] {type(exc).__name__}: {message}", soft_wrap=True)
        if verbose:
            console.print(traceback.format_exc())
        elif code != BAD_USAGE:
            console.print("[dim](run again with --verbose for the traceback)[/dim]")
        raise typer.Exit(code) from None


# --- ingest -------------------------------------------------------------------


class SpotifyBars:
    """A rich progress bar per genre on stderr, driven by the ingester's progress events."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description:>14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        from genre_spark.ingest.spotify.events import Fetching, Planning, TrackDone

        if isinstance(event, Planning):
            self.progress.console.log(f"planning: searching {event.genre}")
        elif isinstance(event, Fetching):
            self.tasks[event.genre] = self.progress.add_task(
                event.genre, total=event.total, completed=event.done
            )
        elif isinstance(event, TrackDone):
            self.progress.advance(self.tasks[event.genre])


@contextmanager
def log_to_console(verbose: bool) -> Iterator[None]:
    """The library's log (every wait, every checkpoint) on the CLI's console, for one command.

    WARNING and above (waits, short genres) always; INFO (checkpoints, token
    refreshes) with ``--verbose``.
    """
    import logging

    from rich.logging import RichHandler

    ours = logging.getLogger("genre_spark")
    saved = ours.level
    handler = RichHandler(console=console, show_path=False)
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(saved)


@ingest_app.command("spotify")
def ingest_spotify(
    genres: Annotated[
        str | None,
        typer.Option("--genres", help="Comma-separated genres (default: ingest.spotify.genres)."),
    ] = None,
    per_genre: Annotated[
        int | None, typer.Option("--per-genre", min=1, help="Tracks requested per genre.")
    ] = None,
    provider: Annotated[
        str | None, typer.Option("--provider", help="Audio features: auto | spotify | reccobeats.")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Fetch tracks per genre from the Spotify Web API into bronze and silver; resumable.

    Credentials: SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET in the environment or
    in .env. A stopped run (rate limit, outage, Ctrl-C) resumes when run again
    with the same arguments.

    Example: genre ingest spotify --genres rock,jazz --per-genre 500
    """
    from rich.table import Table

    with handled(verbose):
        from genre_spark.ingest.spotify.client import SpotifyClient
        from genre_spark.ingest.spotify.credentials import load_credentials
        from genre_spark.ingest.spotify.events import ignore
        from genre_spark.ingest.spotify.runner import run

        names = [g.strip() for g in genres.split(",") if g.strip()] if genres else None
        extra = {
            "ingest.spotify.genres": names,
            "ingest.spotify.per_genre": per_genre,
            "ingest.spotify.provider": provider,
        }
        ctx = make_context(lake, config, set_, verbose, extra)
        cfg = ctx.settings.ingest.spotify
        client = SpotifyClient(cfg, load_credentials(None, cfg.dotenv))
        ctx.lake  # noqa: B018 - start Spark before the progress bars take the terminal
        bars = SpotifyBars(console) if progress else None
        with log_to_console(verbose), bars.progress if bars else nullcontext():
            summary = run(ctx.lake, ctx.settings, client=client, progress=bars or ignore)
        table = Table(title=f"spotify plan {summary.plan_id}, features from {summary.providers}")
        for column in ("genre", "requested", "in silver"):
            table.add_column(column)
        for genre, count in summary.per_genre.items():
            table.add_row(genre, str(count), str(summary.silver.genres.get(genre, 0)))
        out.print(table)
        out.print(f"quarantined: {summary.silver.quarantined} {summary.silver.reasons}")
        out.print(f"requests and faults survived: {summary.faults}")


@ingest_app.command("csv")
def ingest_csv(
    path: Annotated[str, typer.Argument(help="CSV file, plain or .gz (local path or URI).")],
    mapping: Annotated[
        str | None,
        typer.Option(
            "--mapping",
            "-m",
            help="Mapping YAML file or a shipped mapping's name (default: by header).",
        ),
    ] = None,
    genre_map: Annotated[
        str | None,
        typer.Option(
            "--genre-map", help="'default', a genre-map YAML file, or 'none' (labels as given)."
        ),
    ] = None,
    top_genres: Annotated[
        int | None, typer.Option("--top-genres", min=1, help="Keep the N largest genres.")
    ] = None,
    cap_per_genre: Annotated[
        int | None, typer.Option("--cap-per-genre", min=1, help="At most N tracks per genre.")
    ] = None,
    min_per_genre: Annotated[
        int | None, typer.Option("--min-per-genre", min=0, help="Report genres below N tracks.")
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Ingest a CSV export into bronze.tracks_raw and rebuild silver.tracks; re-runs replace the file's rows.

    Known exports (Top 2000s, TidyTuesday spotify_songs, SpotifyFeatures, Spotify
    Tracks 114k) are recognised by their header; any other CSV needs --mapping.

    Example: genre ingest csv data/spotify_top2000.csv --top-genres 6 --lake ./lake
    """
    with handled(verbose):
        from genre_spark.ingest.csv import check_input, resolve_mapping, run_csv

        extra = {
            "validation.genre_map": None if genre_map == "none" else genre_map,
            "validation.top_genres": top_genres,
            "validation.cap_per_genre": cap_per_genre,
            "validation.min_per_genre": min_per_genre,
        }
        ctx = make_context(lake, config, set_, verbose, extra)
        if genre_map == "none":
            ctx.settings.validation.genre_map = None
        chosen = resolve_mapping(mapping) if mapping else None
        check_input(path, chosen)  # a missing, empty or binary file is told before Spark starts
        report = run_csv(ctx.lake, ctx.settings, path, chosen)
        _print_csv_report(report, ctx.settings, ctx.lake)


def _print_csv_report(report: Any, settings: Settings, lake_: Any) -> None:
    """What this file gave (format, lines, empty and malformed rows), then the silver summary."""
    from rich.table import Table

    read = report.read
    out.print(
        f"[bold]{report.path}[/bold]: format [cyan]{report.format}[/cyan], landed as "
        f"{read.source} (bronze.tracks_raw v{report.bronze_version})",
        soft_wrap=True,
    )
    if read.absent:
        out.print(
            f"note: this file has no column for optional field(s) {', '.join(read.absent)} of "
            f"{read.mapping.name}: null in every row",
            soft_wrap=True,
        )
    counts = Table(show_header=False, title="read")
    for label, value in (
        ("rows read", read.rows_read),
        ("empty lines skipped", read.empty_lines),
        ("comment lines skipped", read.comment_lines),
        ("malformed rows (quarantined)", read.malformed),
        ("rows in from this file", read.rows_in),
    ):
        counts.add_row(label, f"{value:,}")
    out.print(counts)
    _print_ingest_summary(report.summary, settings, lake_)


@ingest_app.command("synthetic")
def ingest_synthetic(
    tracks: Annotated[
        int | None, typer.Option("--tracks", min=1, help="Rows in, bad rows included.")
    ] = None,
    genres: Annotated[
        str | None,
        typer.Option("--genres", help="Comma-separated genres (default: ingest.synthetic.genres)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Same seed, same catalogue.")] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Generate a synthetic Spotify-like catalogue in Spark, land it in bronze, rebuild silver.

    Deterministic for a seed; a share of rows is deliberately broken
    (ingest.synthetic.bad_fraction) and lands in bronze.quarantine with a reason.
    Re-runs replace the synthetic rows, other sources are kept.
    Example: genre ingest synthetic --tracks 100000 --seed 7 --lake ./lake
    """
    with handled(verbose):
        from genre_spark.ingest import synthetic

        names = [g.strip() for g in genres.split(",") if g.strip()] if genres else None
        extra = {
            "ingest.synthetic.tracks": tracks,
            "ingest.synthetic.genres": names,
            "ingest.synthetic.seed": seed,
        }
        ctx = make_context(lake, config, set_, verbose, extra)
        summary = synthetic.run(ctx.lake, ctx.settings)
        _print_ingest_summary(summary, ctx.settings, ctx.lake)


def _print_ingest_summary(summary: Any, settings: Settings, lake_: Any) -> None:
    """Rows in, silver, quarantine by reason, per-genre counts and where the tables are."""
    from rich.table import Table

    counts = Table(show_header=False, title="ingest")
    for label, value in (
        ("rows in bronze (all sources)", summary.rows_in),
        (SILVER_TRACKS, summary.silver_rows),
        ("quarantined", summary.quarantined),
    ):
        counts.add_row(label, f"{value:,}")
    reasons = Table(title="quarantined by reason")
    reasons.add_column("reason")
    reasons.add_column("rows", justify="right")
    for reason, count in summary.reasons.items():
        reasons.add_row(reason, f"{count:,}")
    genres = Table(title=f"silver genres (minimum {settings.validation.min_per_genre})")
    genres.add_column("genre")
    genres.add_column("tracks", justify="right")
    for genre, count in summary.genres.items():
        flag = " [yellow](short)[/yellow]" if genre in summary.short_genres else ""
        genres.add_row(genre + flag, f"{count:,}")
    out.print(counts, reasons, genres)
    if summary.short_genres:
        out.print(
            f"[yellow]genres short of the minimum:[/yellow] {', '.join(summary.short_genres)}"
        )
    for name in (BRONZE_TRACKS_RAW, BRONZE_QUARANTINE, SILVER_TRACKS):
        out.print(f"  {name:<18} {lake_.path(name)}", soft_wrap=True)


# --- prepare ------------------------------------------------------------------


@app.command()
def prepare(
    lake: LakeOpt = None, config: ConfigOpt = None, set_: SetOpt = None, verbose: VerboseOpt = False
) -> None:
    """Split, normalize, flag outliers, and write genre baselines, matches, playlists and trends.

    Reads silver.tracks; writes gold.features, gold.normalizer, gold.outlier_params,
    gold.genre_baselines, gold.genre_matches, gold.genre_playlists, gold.trends_by_year.
    Example: genre prepare --lake ./lake --set prepare.scaler=robust --set prepare.playlist_size=20
    """
    with handled(verbose):
        from genre_spark.prepare.run import run as run_prepare

        ctx = make_context(lake, config, set_, verbose)
        for line in run_prepare(ctx.lake, ctx.settings).lines():
            out.print(line)


# --- train, tune, references ----------------------------------------------------


@contextmanager
def _epoch_bar(total: int, label: str) -> Iterator[Any]:
    """A rich progress bar fed by training's per-epoch callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=total)

        def on_epoch(row: dict[str, Any]) -> None:
            progress.update(
                task,
                total=row["epochs"],  # a small training set gets more (train.epoch_scale)
                completed=row["epoch"],
                description=f"{label}  loss {row['loss']:.3f}  val macro-F1 {row['val_macro_f1']:.3f}",
            )

        yield on_epoch


def _print_references(lake_: Any, settings: Settings) -> None:
    from genre_spark.model import reference

    with console.status("fitting reference models (Spark MLlib, XGBoost on Spark)"):
        found = reference.run(lake_, settings)
    for name, metrics in found.metrics.items():
        out.print(
            f"reference {name}: val accuracy {metrics['val_accuracy']:.4f}, "
            f"val macro-F1 {metrics['val_macro_f1']:.4f}"
        )


@app.command()
def train(
    with_references: Annotated[
        bool, typer.Option("--with-references", help="Also fit the reference models.")
    ] = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train the CNN on gold.features with TorchDistributor; log to MLflow and register a version.

    Reads only the train and validation splits. Writes gold.models (and with
    --with-references gold.reference_predictions). Runs are in MLflow
    (default sqlite:///<lake>/mlflow.db).
    Example: genre train --set train.epochs=20 --set train.num_processes=2 --with-references
    """
    with handled(verbose):
        from genre_spark.model import train as training

        ctx = make_context(lake, config, set_, verbose)
        with _epoch_bar(ctx.settings.train.epochs, "training") as on_epoch:
            outcome = training.run(ctx.lake, ctx.settings, on_epoch=on_epoch)
        metrics = outcome.result.metrics
        action = "identical to, so re-used," if outcome.reused else "registered"
        out.print(
            f"{action} {ctx.settings.mlflow.model_name} version {outcome.version} "
            f"(best epoch {int(metrics['best_epoch'])}/{int(metrics['epochs_run'])}): "
            f"val accuracy {metrics['val_accuracy']:.4f}, val macro-F1 {metrics['val_macro_f1']:.4f}; "
            f"MLflow run {outcome.run_id}"
        )
        out.print(
            f"features: {', '.join(outcome.features)} ({len(outcome.result.inputs)} model inputs)"
        )
        _print_role(ctx.settings, outcome.version)
        if with_references:
            _print_references(ctx.lake, ctx.settings)


def _print_role(settings: Settings, version: str) -> None:
    """Whether a trained version is now the challenger (and what to run) or already the champion."""
    from genre_spark.model.registry import CHALLENGER, aliases

    if aliases(settings).get(CHALLENGER) == version:
        out.print(
            f"version {version} is @challenger: `genre promote` makes it the champion if it is at least as good"
        )
    else:
        out.print(f"version {version} is @champion already")


@app.command()
def references(
    lake: LakeOpt = None, config: ConfigOpt = None, set_: SetOpt = None, verbose: VerboseOpt = False
) -> None:
    """Fit logistic regression, random forest (Spark MLlib) and XGBoost (on Spark) beside the CNN.

    Same split, features and outlier rule as the CNN; writes predictions for every
    split to gold.reference_predictions and logs validation scores to MLflow.
    Example: genre references --set train.references.rf_trees=200
    """
    with handled(verbose):
        ctx = make_context(lake, config, set_, verbose)
        _print_references(ctx.lake, ctx.settings)


@app.command()
def tune(
    lake: LakeOpt = None, config: ConfigOpt = None, set_: SetOpt = None, verbose: VerboseOpt = False
) -> None:
    """Search CNN hyperparameters with Optuna on validation macro-F1; retrain and register the best.

    Each trial is a nested MLflow run under one 'tune' run; the test split is never read.
    Example: genre tune --set tune.trials=20 --set tune.epochs=8
    """
    from rich.progress import Progress

    with handled(verbose):
        from genre_spark.model import tune as tuning

        ctx = make_context(lake, config, set_, verbose)
        trials = ctx.settings.tune.trials
        with Progress(console=console) as progress:
            task = progress.add_task("tuning", total=trials)
            best = [0.0]

            def on_trial(number: int, params: dict[str, Any], value: float) -> None:
                best[0] = max(best[0], value)
                progress.update(
                    task,
                    advance=1,
                    description=f"tuning  trial {number}: {value:.3f}  best {best[0]:.3f}",
                )

            outcome = tuning.run(ctx.lake, ctx.settings, on_trial=on_trial)
        out.print(
            f"best trial val macro-F1 {outcome.best_trial_value:.4f} with {outcome.best_params}"
        )
        metrics = outcome.retrained.result.metrics
        out.print(
            f"retrained and registered {ctx.settings.mlflow.model_name} version {outcome.version}: "
            f"val macro-F1 {metrics['val_macro_f1']:.4f}; MLflow parent run {outcome.parent_run_id}"
        )
        _print_role(ctx.settings, outcome.version)


# --- promote, score, evaluate, report, drift -----------------------------------

ModelVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--model-version",
        help="A version number, @champion, @challenger or latest "
        "(default: @champion, or the newest version while there is none).",
    ),
]


def _resolved(settings: Settings, ref: str | None) -> str:
    """The model version a command works on; says so when no champion exists yet."""
    from genre_spark.model.registry import resolve_model

    model = resolve_model(settings, ref)
    if model.fallback:
        console.print(f"[yellow]note:[/yellow] using {model.describe()}")
    return model.version


@app.command()
def promote(
    version: Annotated[
        str | None,
        typer.Option("--version", help="The version to promote (default: @challenger)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the gate refuses (recorded as forced).")
    ] = False,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin", help="Required lead in validation macro-F1 (default: promote.margin)."
        ),
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Move @champion to a version if its validation macro-F1 is at least the champion's (+ margin).

    Every decision is recorded in gold.promotions and as model-version tags; a refused
    promotion exits 1 and leaves the champion in place (--force overrides, recorded as forced).
    Example: genre promote            # the challenger, if it is at least as good
             genre promote --version 3 --force
    """
    with handled(verbose):
        from genre_spark.model.promote import UNCHANGED
        from genre_spark.model.promote import promote as run_promote

        ctx = make_context(lake, config, set_, verbose)
        decision = run_promote(ctx.lake, ctx.settings, version, force=force, margin=margin)
        if not decision.promoted and decision.outcome != UNCHANGED:
            out.print(f"[red]{decision.summary()}[/red]; --force promotes it anyway")
            raise typer.Exit(1)
        out.print(decision.summary())


@app.command()
def score(
    model_version: ModelVersionOpt = None,
    table: Annotated[
        str, typer.Option("--table", help="Lake table to score: track_id + raw feature columns.")
    ] = SILVER_TRACKS,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score a catalogue with a registered model into gold.scored (merge on track_id, model_version).

    Uses @champion unless --model-version says otherwise. Re-scoring with the same
    version replaces its rows; a new version adds rows. A null feature value is
    imputed as in training (--set score.missing=skip to skip such rows); both counts
    are printed.
    Example: genre score --model-version @challenger --table silver.tracks
    """
    with handled(verbose):
        from genre_spark.score import run as run_score

        _known_table(table)
        ctx = make_context(lake, config, set_, verbose)
        version = _resolved(ctx.settings, model_version)
        out.print(run_score(ctx.lake, ctx.settings, version, table).summary())


def _known_table(table: str) -> None:
    """An unknown table name (UnknownTableError, bad usage) is told before Spark starts."""
    from genre_spark.lake.catalog import spec

    spec(table)


@app.command()
def evaluate(
    model_version: ModelVersionOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Confusion counts and metrics for every scored CNN version and reference model, per split.

    Reads gold.scored, gold.features and (if present) gold.reference_predictions;
    writes gold.confusion and gold.evaluation, then prints the macro-F1 of the model
    --model-version names (default @champion) beside the best reference.
    Example: genre evaluate && genre sql "SELECT * FROM gold.evaluation WHERE genre = 'macro avg'"
    """
    with handled(verbose):
        from genre_spark.evaluate import run as run_evaluate
        from genre_spark.model.registry import ModelNotFoundError

        ctx = make_context(lake, config, set_, verbose)
        try:
            version: str | None = _resolved(ctx.settings, model_version)
        except ModelNotFoundError as exc:
            if model_version:
                raise
            version = None
            out.print(f"[yellow]note:[/yellow] {exc}")
        result = run_evaluate(ctx.lake)
        out.print(
            f"evaluated {', '.join(result.models)}: gold.confusion v{result.confusion_version}, "
            f"gold.evaluation v{result.evaluation_version}"
        )
        if version is not None:
            _print_headline(ctx.lake, version)
        for note in result.notes:
            out.print(f"[yellow]note:[/yellow] {note}")


def _print_headline(lake_: Any, version: str) -> None:
    """Macro-F1 per split of one CNN version (a few rows of gold.evaluation)."""
    from pyspark.sql import functions as F

    from genre_spark.evaluate import cnn_model_name
    from genre_spark.metrics import MACRO

    name = cnn_model_name(version)
    rows = (
        lake_.read(GOLD_EVALUATION)
        .where((F.col("model") == name) & (F.col("genre") == MACRO))
        .select("split", "f1")
        .collect()
    )
    if not rows:
        out.print(
            f"[yellow]note:[/yellow] {name} is not scored: run `genre score --model-version {version}`"
        )
        return
    scores = ", ".join(
        f"{r['split']} {r['f1']:.4f}" for r in sorted(rows, key=lambda r: r["split"])
    )
    out.print(f"{name} macro-F1: {scores}")


@app.command()
def report(
    model_version: ModelVersionOpt = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write the HTML report of a model version: <reports>/<version>/index.html with PNG plots.

    Defaults to @champion, compared with @challenger on the same tracks. Sections
    whose input is missing (no references, prepare not run, no drift run) say so on the page.
    Example: genre report --model-version 3 && open reports/3/index.html
    """
    with handled(verbose):
        from genre_spark.report import run as run_report

        ctx = make_context(lake, config, set_, verbose)
        # run_report resolves the reference itself, after checking that prepare finished
        out.print(f"report: {run_report(ctx.lake, ctx.settings, model_version)}")


@app.command()
def drift(
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Model whose training snapshot is the baseline (default: @champion).",
        ),
    ] = None,
    table: Annotated[
        str, typer.Option("--table", help="Lake table to compare (raw feature columns).")
    ] = SILVER_TRACKS,
    baseline_scored: Annotated[
        str | None,
        typer.Option(
            "--baseline-scored",
            help="Scoring run to compare predictions with: VERSION or VERSION@GOLD_SCORED_VERSION "
            "(default: the model's previous run).",
        ),
    ] = None,
    current_scored: Annotated[
        str | None,
        typer.Option(
            "--current-scored", help="Scoring run compared (default: the model's newest run)."
        ),
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 1 when a threshold is crossed.")
    ] = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Compare a catalogue with a model's training snapshot (PSI, KS) and two scoring runs; into gold.drift.

    Flags a feature whose PSI is above drift.psi_threshold (0.2) or KS above
    drift.ks_threshold (0.1), and a shift of the predicted genre shares (PSI).
    Example: genre ingest csv new_export.csv && genre score && genre drift
    """
    with handled(verbose):
        from genre_spark.drift.run import run as run_drift

        _known_table(table)
        ctx = make_context(lake, config, set_, verbose)
        version = _resolved(ctx.settings, against)
        result = run_drift(ctx.lake, ctx.settings, version, table, baseline_scored, current_scored)
        _print_drift(result, ctx.settings)
        if result.flagged and fail_on_drift:
            raise typer.Exit(1)


def _print_drift(result: Any, settings: Settings) -> None:
    """Per feature PSI, KS bounds, missing shares and the flag; the genre shares; the verdict."""
    from rich.table import Table

    shown = Table(
        title=f"{result.table} v{result.table_version} vs version {result.model.version}'s "
        f"{result.reference.describe()}"
    )
    for column in ("feature", "PSI", "KS (bounds)", "missing (train -> now)", "drift"):
        shown.add_column(column)
    for f in result.features:
        psi = "n/a" if f.psi is None else f"{f.psi:.3f}"
        ks = "n/a" if f.ks is None else f"{f.ks:.3f} ({f.ks:.3f}-{f.ks_upper:.3f})"
        missing = (
            f"{f.baseline.missing / max(f.baseline.rows, 1):.1%} -> "
            f"{f.current.missing / max(f.current.rows, 1):.1%}"
        )
        shown.add_row(f.feature, psi, ks, missing, "[red]DRIFT[/red]" if f.drifted else "ok")
    out.print(shown)
    if result.predictions is not None:
        p = result.predictions
        out.print(
            f"predicted genre shares: {p.current.describe()} vs {p.baseline.describe()}: "
            f"PSI {p.psi:.3f}, largest share change {p.max_shift:.1%} "
            + ("[red]DRIFT[/red]" if p.drifted else "ok")
        )
    for note in result.notes:
        out.print(f"[yellow]note:[/yellow] {note}")
    out.print(f"gold.drift v{result.drift_version}")
    cfg = settings.drift
    if result.flagged:
        out.print(
            f"[red]drift:[/red] {', '.join(result.flagged)} (psi_threshold {cfg.psi_threshold}, "
            f"ks_threshold {cfg.ks_threshold}, missing_threshold {cfg.missing_threshold})"
        )
    else:
        out.print("no drift above the thresholds")


# --- pipeline -----------------------------------------------------------------


@app.command()
def pipeline(
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Ingest this CSV export instead of the synthetic catalog."),
    ] = None,
    tracks: Annotated[
        int | None, typer.Option(help="Synthetic catalog size (rows in, bad rows included).")
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run every stage: ingest -> prepare -> train -> references -> score -> evaluate -> report.

    Examples:
      genre pipeline                                  # synthetic catalog, 10 genres
      genre pipeline --tracks 100000 --lake /data/lake
      genre pipeline --csv ../shared/data/tidytuesday_spotify_songs.csv.gz
    """
    from genre_spark.pipeline import StageResult, run_pipeline

    with handled(verbose):
        ctx = make_context(lake, config, set_, verbose, {"ingest.synthetic.tracks": tracks})

        def started(name: str) -> None:
            console.print(f"[bold]{name}[/bold] ...")

        def finished(stage: StageResult) -> None:
            console.print(f"  [green]done[/green] in {stage.seconds:.1f}s: {stage.summary}")

        result = run_pipeline(
            ctx.lake, ctx.settings, str(csv) if csv else None, on_stage=started, on_done=finished
        )
        total = sum(s.seconds for s in result.stages)
        root = (
            Path(ctx.settings.lake).resolve()
            if "://" not in ctx.settings.lake
            else ctx.settings.lake
        )
        out.print(f"\npipeline finished in {total:.0f}s")
        out.print(f"  tables:  {root}/<layer>/<name>  (genre tables --lake {ctx.settings.lake})")
        out.print(f"  report:  {result.state.report}")
        out.print(f"  MLflow:  mlflow ui --backend-store-uri {ctx.settings.tracking_uri}")
        out.print(
            '  query:   genre sql "SELECT model, split, accuracy FROM gold.evaluation '
            "WHERE genre = 'accuracy' ORDER BY model, split\""
        )


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
    """Run read-only Spark SQL over every lake table (bronze.*, silver.*, gold.*).

    Queries (SELECT, WITH, VALUES, TABLE), SHOW, DESCRIBE and EXPLAIN run; a
    statement that would change a table or the catalogue (INSERT, UPDATE, DELETE,
    MERGE, DROP, CREATE, ALTER, TRUNCATE, ...) is refused before it runs (exit 2).

    Examples:
      genre sql "SELECT genre, count(*) AS n FROM silver.tracks GROUP BY genre ORDER BY genre"
      genre sql "SELECT * FROM gold.evaluation WHERE split = 'test'" --format csv
    """
    from genre_spark.sqlshell import render, run_query

    with handled(verbose):
        if fmt not in ("table", "csv", "json"):
            raise UsageError(f"--format must be one of table, csv, json (got {fmt!r})")
        ctx = make_context(lake, config, set_, verbose)
        render(run_query(ctx.lake, query, limit), fmt, out)


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
def optimize(
    table: Annotated[
        list[str] | None, typer.Argument(help="Tables to optimize (default: all).")
    ] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Compact small data files and checkpoint the Delta log, so a long-lived lake opens fast.

    One commit per table that changes no rows (readers and time travel are
    unaffected); a table written before its partitioning was declared is
    laid out anew first. Example: genre optimize gold.scored
    """
    with handled(verbose):
        ctx = make_context(lake, config, set_, verbose)
        names = table or [info.name for info in ctx.lake.tables()]
        for name in names:
            out.print(f"{name}: {ctx.lake.optimize(name).summary()}")


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
    main()
