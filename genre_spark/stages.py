"""The stages, declared: each one's input and output tables, and the one runner that does their I/O.

A stage's core is a set of pure DataFrame functions (``prepare.split``,
``evaluate.metrics``, ``score.score``, ...). Its wiring goes through a
:class:`StageRun`: ``read`` (and ``version``, ``files``, ``exists``) open
only the tables the stage declares as inputs; ``write`` and ``merge`` accept
only its declared outputs (``replace`` too: a partition of one), check
each against the catalogue's schema (a
missing, unexpected or mistyped column fails before anything is committed,
naming the table and the column) and commit it atomically. A stage that
works on a table the user names (``genre score --table``, ``genre drift
--table``) declares a ``source``: its default, replaced by the ``source``
passed to :func:`run`, and the one input beyond the declared ones.

The runner also owns the checks that span tables: a stage that reads one of
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
    GOLD_DRIFT,
    GOLD_EVALUATION,
    GOLD_FEATURES,
    GOLD_GENRE_BASELINES,
    GOLD_GENRE_MATCHES,
    GOLD_GENRE_PLAYLISTS,
    GOLD_MODELS,
    GOLD_NORMALIZER,
    GOLD_OUTLIER_PARAMS,
    GOLD_PROMOTIONS,
    GOLD_REFERENCE_PREDICTIONS,
    GOLD_SCORED,
    GOLD_TRENDS_BY_YEAR,
    SILVER_TRACKS,
    TableSpec,
    spec,
)
from genre_spark.lake.engine import ArrowMap
from genre_spark.lake.partitions import Partition
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
    #: Writes prepare's set of tables, bracketed by gold.prepare_manifest.
    writes_prepare: bool = False
    #: The default of the one table the user chooses to run the stage on (None: no such input).
    source: str | None = None

    @property
    def reads_prepare(self) -> bool:
        """Reads one of prepare's tables: refused unless they come from one finished prepare run."""
        return bool(set(self.inputs) & set(PREPARE.outputs))


#: A source's rows into bronze.tracks_raw, replacing that source's partition (``ingest.land.land``).
LAND = Stage("land", (BRONZE_TRACKS_RAW,), (BRONZE_TRACKS_RAW,))
#: bronze.tracks_raw -> validation -> bronze.quarantine, silver.tracks (``ingest.land.refresh_silver``).
INGEST = Stage("ingest", (BRONZE_TRACKS_RAW,), (BRONZE_QUARANTINE, SILVER_TRACKS))
#: prepare's set of tables, in the order it writes them (gold.prepare_manifest's rows).
PREPARE = Stage(
    "prepare",
    (SILVER_TRACKS,),
    (
        GOLD_NORMALIZER,
        GOLD_FEATURES,
        GOLD_OUTLIER_PARAMS,
        GOLD_GENRE_BASELINES,
        GOLD_GENRE_MATCHES,
        GOLD_GENRE_PLAYLISTS,
        GOLD_TRENDS_BY_YEAR,
    ),
    writes_prepare=True,
)
#: Learns from gold.features' files; the drift snapshot joins the train split with silver.tracks.
#: It writes no table itself: the new version reaches gold.models through ``REGISTRY``.
TRAIN = Stage("train", (GOLD_FEATURES, GOLD_NORMALIZER, GOLD_OUTLIER_PARAMS, SILVER_TRACKS), ())
#: Trials read what training reads; the winner is retrained (and registered) by ``TRAIN``.
TUNE = Stage("tune", (GOLD_FEATURES, GOLD_NORMALIZER), ())
REFERENCES = Stage("references", (GOLD_FEATURES,), (GOLD_REFERENCE_PREDICTIONS,))
#: gold.models, the lake's mirror of the MLflow registry: a row per registered version, aliases.
REGISTRY = Stage("registry", (GOLD_MODELS,), (GOLD_MODELS,))
#: Any table with track_id and the model's raw features (``--table``), merged into gold.scored
#: (read first: which of the version's rows the run would keep).
SCORE = Stage("score", (GOLD_SCORED,), (GOLD_SCORED,), source=SILVER_TRACKS)
EVALUATE = Stage(
    "evaluate",
    (GOLD_SCORED, GOLD_FEATURES, GOLD_REFERENCE_PREDICTIONS),
    (GOLD_CONFUSION, GOLD_EVALUATION),
)
#: A catalogue (``--table``) against a model's training snapshot, and two scoring runs.
DRIFT = Stage("drift", (GOLD_SCORED,), (GOLD_DRIFT,), source=SILVER_TRACKS)
#: gold.promotions keeps one row per decision: the new one is added to those already there.
PROMOTE = Stage("promote", (GOLD_PROMOTIONS,), (GOLD_PROMOTIONS,))
REPORT = Stage(
    "report",
    (
        GOLD_MODELS,
        GOLD_EVALUATION,
        GOLD_CONFUSION,
        GOLD_GENRE_BASELINES,
        GOLD_TRENDS_BY_YEAR,
        GOLD_FEATURES,
        GOLD_SCORED,
        GOLD_DRIFT,
    ),
    (),
)
#: Every declared stage.
ALL: tuple[Stage, ...] = (
    LAND,
    INGEST,
    PREPARE,
    TRAIN,
    TUNE,
    REFERENCES,
    REGISTRY,
    SCORE,
    EVALUATE,
    DRIFT,
    PROMOTE,
    REPORT,
)


def _plain(data_type: T.DataType) -> str:
    """A type without its nullability: ``array<double>`` whether or not elements may be null."""
    return data_type.simpleString()


def check_schema(schema: T.StructType, table: TableSpec) -> None:
    """Raise SchemaMismatchError unless ``schema`` has the table's columns, in order, with its types."""
    want = {f.name: _plain(f.dataType) for f in table.schema.fields}
    have = {f.name: _plain(f.dataType) for f in schema.fields}
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
    #: The table chosen for the stage's ``source`` input (None: the stage has none).
    chosen: str | None = None
    #: The version each output was written at, in writing order.
    written: dict[str, int] = field(default_factory=dict)
    _checked: bool = False

    @property
    def source(self) -> str:
        """The table this run works on, for a stage that declares a source."""
        if self.chosen is None:
            raise StageWiringError(f"stage {self.stage.name} declares no source table")
        return self.chosen

    @property
    def inputs(self) -> tuple[str, ...]:
        """The stage's declared inputs and, for this run, its source."""
        return (*self.stage.inputs, *((self.chosen,) if self.chosen else ()))

    def _require_prepare(self) -> None:
        if self.stage.reads_prepare and not self._checked:
            manifest.require_complete(self.lake)
            self._checked = True

    def _input(self, name: str) -> str:
        if name not in self.inputs:
            raise StageWiringError(f"stage {self.stage.name} reads {name}, not among its inputs")
        self._require_prepare()
        return name

    def _declared_output(self, name: str) -> str:
        if name not in self.stage.outputs:
            raise StageWiringError(f"stage {self.stage.name} writes {name}, not among its outputs")
        return name

    def _output(self, schema: T.StructType, name: str) -> str:
        self._declared_output(name)
        check_schema(schema, spec(name))
        if self.stage.writes_prepare and not self.written:
            manifest.mark_running(self.lake, self.stage.outputs)
        return name

    def read(self, name: str, version: int | None = None) -> DataFrame:
        """A declared input (or an output this run wrote: at the version it wrote)."""
        if name in self.written:
            return self.lake.read(name, self.written[name] if version is None else version)
        return self.lake.read(self._input(name), version)

    def exists(self, name: str) -> bool:
        """Whether an optional declared input has been written yet."""
        return self.lake.exists(self._input(name))

    def version(self, name: str) -> int:
        """A declared input's current version (to read it, and record, at that version)."""
        return self.lake.version(self._input(name))

    def files(self, name: str) -> list[str]:
        """A declared input's data files (training ranks read their share of them)."""
        return self.lake.files(self._input(name))

    def output_version(self, name: str) -> int:
        """A declared output's latest version (``ABSENT`` before its first write).

        Taken before reading the inputs a write is computed from, it is what
        that write is checked against (``write``'s ``unchanged_since``).
        """
        return self.lake.version_or_absent(self._declared_output(name))

    def write(self, df: DataFrame, name: str, unchanged_since: int | None = None) -> int:
        """Check ``df`` against ``name``'s catalogue schema, overwrite the table; its version.

        ``unchanged_since`` (an ``output_version``): a commit to the table
        since that version makes the write fail with ConcurrentWriteError.
        """
        self.written[name] = self.lake.write(
            df, self._output(df.schema, name), unchanged_since=unchanged_since
        )
        return self.written[name]

    def replace(self, df: DataFrame, name: str, where: list[Partition]) -> int:
        """Check ``df`` against the schema, replace the partitions ``where`` names; the version."""
        self.written[name] = self.lake.replace(df, self._output(df.schema, name), where)
        return self.written[name]

    def merge(
        self,
        df: DataFrame,
        name: str,
        partitions: list[Partition] | None = None,
        covered_at: int | None = None,
    ) -> int:
        """Check ``df`` against the schema, upsert it on the catalogue's keys; the version.

        ``partitions`` (of the table's partition columns) scopes the merge to
        the partitions ``df`` falls in when the stage knows them; ``covered_at``
        says at which version ``df`` was found to replace every row of them
        (both as ``Lake.merge`` takes them).
        """
        keys = list(spec(name).keys)
        self.written[name] = self.lake.merge(
            df, self._output(df.schema, name), keys, partitions, covered_at
        )
        return self.written[name]

    def merge_mapped(
        self,
        mapping: ArrowMap,
        name: str,
        partitions: list[Partition] | None = None,
        covered_at: int | None = None,
        source_version: int | None = None,
    ) -> int:
        """``merge`` of ``mapping``'s rows over this run's source (``Lake.merge_mapped``)."""
        keys = list(spec(name).keys)
        self.written[name] = self.lake.merge_mapped(
            self._input(self.source),
            mapping,
            self._output(mapping.schema, name),
            keys,
            partitions,
            covered_at,
            source_version,
        )
        return self.written[name]


@contextmanager
def run(lake: Lake, stage: Stage, source: str | None = None) -> Iterator[StageRun]:
    """One run of ``stage`` (on ``source``, for a stage that has one: its default if None).

    On success, prepare's manifest is marked complete with every version. A
    run that fails leaves a written prepare set marked ``running``, so the
    stages after it refuse the mix until prepare runs again.
    """
    if source is not None and stage.source is None:
        raise StageWiringError(f"stage {stage.name} takes no source table (got {source})")
    chosen = source or stage.source
    io = StageRun(lake, stage, spec(chosen).name if chosen else None)
    io._require_prepare()
    yield io
    if stage.writes_prepare:
        manifest.mark_complete(lake, stage.outputs, io.written)
