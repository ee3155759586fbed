"""The stages, declared: each one's input and output tables, and the one runner that does their I/O.

A stage's core is a set of pure DataFrame functions (``prepare.split``,
``evaluate.metrics``, ...). Its wiring goes through a :class:`StageRun`:
``read`` opens only the tables the stage declares as inputs, ``write``
accepts only its declared outputs, checks each against the catalogue's schema
(a missing, unexpected or mistyped column fails before anything is
committed, naming the table and the column) and writes it as one atomic
commit. The runner also owns the checks that span tables: a stage that reads
prepare's tables gets ``manifest.require_complete`` before its first read,
and prepare's own writes are bracketed by the manifest (``running`` before
the first, ``complete`` with every table's version after the last).

    with stages.run(lake, stages.PREPARE) as io:
        tracks = io.read(SILVER_TRACKS)
        io.write(core(tracks), GOLD_FEATURES)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from genre_spark.errors import GenreError
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_TRACKS_RAW,
    GOLD_CONFUSION,
    GOLD_EVALUATION,
    GOLD_FEATURES,
    GOLD_REFERENCE_PREDICTIONS,
    GOLD_SCORED,
    SILVER_TRACKS,
    TableSpec,
    spec,
)
from genre_spark.prepare import manifest


class StageWiringError(GenreError):
    """A stage read or wrote a table it does not declare (a bug in the stage, not bad data)."""


class SchemaMismatchError(GenreError):
    """A stage's output does not match its table's schema in the catalogue."""


@dataclass(frozen=True)
class Stage:
    """One stage's declared tables (kedro-node style)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    #: Reads tables of prepare's set: refused unless they come from one finished prepare run.
    reads_prepare: bool = False
    #: Writes prepare's set of tables, bracketed by gold.prepare_manifest.
    writes_prepare: bool = False


#: bronze.tracks_raw -> validation -> bronze.quarantine, silver.tracks (``ingest.land.refresh_silver``).
INGEST = Stage("ingest", (BRONZE_TRACKS_RAW,), (BRONZE_QUARANTINE, SILVER_TRACKS))
PREPARE = Stage("prepare", (SILVER_TRACKS,), manifest.TABLES, writes_prepare=True)
EVALUATE = Stage(
    "evaluate",
    (GOLD_SCORED, GOLD_FEATURES, GOLD_REFERENCE_PREDICTIONS),
    (GOLD_CONFUSION, GOLD_EVALUATION),
    reads_prepare=True,
)


def _plain(data_type: T.DataType) -> str:
    """A type without its nullability: ``array<double>`` whether or not elements may be null."""
    return data_type.simpleString()


def check_schema(df: DataFrame, table: TableSpec) -> None:
    """Raise SchemaMismatchError unless ``df`` has the table's columns, in order, with its types."""
    want = {f.name: _plain(f.dataType) for f in table.schema.fields}
    have = {f.name: _plain(f.dataType) for f in df.schema.fields}
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    wrong = [f"{c} is {have[c]}, not {want[c]}" for c in want if c in have and have[c] != want[c]]
    if missing or extra or wrong:
        problems = [
            *([f"missing column(s) {missing}"] if missing else []),
            *([f"unexpected column(s) {extra}"] if extra else []),
            *wrong,
        ]
        raise SchemaMismatchError(
            f"{table.name} (written by {table.written_by}) does not match its catalogue "
            f"schema: {'; '.join(problems)}"
        )
    if list(have) != list(want):
        raise SchemaMismatchError(
            f"{table.name}: columns in order {list(have)}, the catalogue says {list(want)}"
        )


@dataclass
class StageRun:
    """The I/O of one run of ``stage`` on ``lake``: declared reads, checked writes, their versions."""

    lake: Lake
    stage: Stage
    #: The version each output was written at, in writing order.
    written: dict[str, int] = field(default_factory=dict)
    _checked: bool = False

    def _require_prepare(self) -> None:
        if self.stage.reads_prepare and not self._checked:
            manifest.require_complete(self.lake)
            self._checked = True

    def read(self, name: str, version: int | None = None) -> DataFrame:
        """A declared input (or an output this run wrote: at the version it wrote)."""
        if name in self.written:
            return self.lake.read(name, self.written[name] if version is None else version)
        if name not in self.stage.inputs:
            raise StageWiringError(f"stage {self.stage.name} reads {name}, not among its inputs")
        self._require_prepare()
        return self.lake.read(name, version)

    def exists(self, name: str) -> bool:
        """Whether an optional declared input has been written yet."""
        if name not in self.stage.inputs:
            raise StageWiringError(f"stage {self.stage.name} reads {name}, not among its inputs")
        return self.lake.exists(name)

    def write(self, df: DataFrame, name: str) -> int:
        """Check ``df`` against ``name``'s catalogue schema, overwrite the table; its version."""
        if name not in self.stage.outputs:
            raise StageWiringError(f"stage {self.stage.name} writes {name}, not among its outputs")
        check_schema(df, spec(name))
        if self.stage.writes_prepare and not self.written:
            manifest.mark_running(self.lake)
        self.written[name] = self.lake.write(df, name)
        return self.written[name]


@contextmanager
def run(lake: Lake, stage: Stage) -> Iterator[StageRun]:
    """One run of ``stage``; on success, prepare's manifest is marked complete with every version.

    A run that fails leaves a written prepare set marked ``running``, so the
    stages after it refuse the mix until prepare runs again.
    """
    io = StageRun(lake, stage)
    io._require_prepare()
    yield io
    if stage.writes_prepare:
        manifest.mark_complete(lake, io.written)
