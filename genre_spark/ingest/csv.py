"""CSV ingestion: a CSV export (plain or gzip) -> bronze.tracks_raw -> silver.tracks.

Spark's CSV reader parses the file on executors in PERMISSIVE mode: a line
with the wrong number of fields or broken quoting keeps its place with
``reject_reason = "malformed_row"`` and is quarantined, never dropped. A
column mapping (``mapping.py``; the known exports are shipped mapping files
recognised by their header) turns the source's columns into the canonical
string columns of ``catalog.raw_row_schema()``, in Spotify's units, with column
expressions only. ``land`` and ``refresh_silver`` then do what they do for
every source: type, validate, deduplicate, coarsen and select genres.

The driver reads the header line, one small per-block aggregate (to number
the records and count empty and malformed ones) and the summary counts;
nothing that grows with the file.
"""

from __future__ import annotations

import codecs
import gzip
import os
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.config import Settings
from genre_spark.errors import UsageError
from genre_spark.ingest.land import IngestSummary, land, refresh_silver
from genre_spark.ingest.mapping import (
    CLOCK_UNIT,
    TEXT_FIELDS,
    UNIT_FACTORS,
    CsvOptions,
    FieldSpec,
    Mapping,
    absent_fields,
    detect_mapping,
    load_mapping,
    resolve_columns,
    shipped_mappings,
)
from genre_spark.java_errors import java_chain, says_missing_file
from genre_spark.lake import Lake
from genre_spark.schema import INGESTED_AT, REJECT_REASON, SOURCE, TRACK_COLUMNS

MALFORMED_ROW = "malformed_row"
DERIVED_PREFIX = "derived:"

_CORRUPT = "_corrupt_record"
_POS = "_pos"
_BLOCK = "_block"
_EMPTY = "_empty"

#: Pitch classes of note names (Spotify's ``key``); sharps, flats and their enharmonics.
NOTE_PITCH: dict[str, int] = {
    "C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4,
    "F": 5, "E#": 5, "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10,
    "BB": 10, "B": 11, "CB": 11,
}  # fmt: skip
MODE_CODE: dict[str, int] = {"major": 1, "minor": 0, "maj": 1, "min": 0}


class CsvInputError(UsageError):
    """A CSV file that is missing, unreadable, damaged or holds no data: refused before any write.

    The message is one line that starts with the file's path and says what is
    wrong (a truncated or corrupt gzip, binary data, a file that vanished or
    became unreadable while it was read, an empty or header-only file).
    """


#: Bytes read from the start of a local file (decompressed, for .gz) to tell
#: CSV text from binary data and a damaged gzip header, before Spark opens it.
SNIFF_BYTES = 8192
#: Encodings in which a NUL byte is text; in any other, a NUL means binary data.
WIDE_ENCODINGS = frozenset({"utf-16", "utf-16be", "utf-16le", "utf-32"})


@dataclass(frozen=True)
class CsvRead:
    """The raw rows of one CSV and what reading it found.

    ``records`` counts the records Spark parsed (header, blank and comment
    lines excluded); ``raw`` holds all of them but the empty ones, so
    ``rows_in == records - empty_records`` rows go to bronze, the malformed
    ones among them already marked for quarantine. ``absent`` names the
    optional fields the mapping reads from a column this file does not have
    (null in every row).
    """

    raw: DataFrame
    mapping: Mapping
    source: str
    absent: tuple[str, ...]
    records: int
    blank_lines: int
    comment_lines: int
    empty_records: int
    malformed: int

    @property
    def empty_lines(self) -> int:
        """Blank lines plus records with every field empty (``,,,``): skipped, but counted."""
        return self.blank_lines + self.empty_records

    @property
    def rows_read(self) -> int:
        """Lines after the header, as records (a quoted value may span lines)."""
        return self.records + self.blank_lines + self.comment_lines

    @property
    def rows_in(self) -> int:
        return self.records - self.empty_records


@dataclass(frozen=True)
class CsvIngestReport:
    """One ``genre ingest csv`` run: what was read, where it landed, what silver now holds."""

    path: str
    read: CsvRead
    bronze_version: int
    summary: IngestSummary

    @property
    def format(self) -> str:
        return self.read.mapping.name


def source_name(path: str) -> str:
    """``csv:<absolute path or URI>``: the key under which ``land`` replaces this file's rows.

    The whole location, not the file name: two exports that share a name in
    different folders are two sources, and one must not replace the other's
    rows. A local path (``file:`` URIs included) is made absolute, so the same
    file named two ways is one source.
    """
    location = path.rstrip("/")
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        location = os.path.abspath(parsed.path if parsed.scheme else location)
    return f"csv:{location}"


def _col(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def _reader(spark: SparkSession, options: CsvOptions) -> DataFrameReader:
    reader = spark.read.options(
        header=True,
        sep=options.delimiter,
        encoding=options.spark_encoding,
        quote=options.quote,
        escape=options.escape,
        multiLine=options.multiline,
    )
    return reader.option("comment", options.comment) if options.comment else reader


def check_file(path: str, encodings: set[str]) -> None:
    """Refuse a local file that is missing, unreadable, empty, binary or not valid gzip.

    Reads at most SNIFF_BYTES from its start on the driver (a constant, not
    the file), so the common mistakes get a clear line before Spark starts a
    job. A NUL byte is binary data unless every encoding that may be used
    (``encodings``, Spark's names) is a wide one. Other schemes than ``file:``
    are left to Spark, whose read errors ``reading`` translates.
    """
    parsed = urlparse(path)
    if parsed.scheme not in ("", "file"):
        return
    file = Path(parsed.path if parsed.scheme else path)
    if not file.is_file():
        raise CsvInputError(f"{path}: no such file" if not file.exists() else f"{path}: not a file")
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(file, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except PermissionError:
        raise CsvInputError(f"{path}: cannot be read (permission denied)") from None
    except EOFError:
        raise CsvInputError(
            f"{path}: truncated gzip data (it ends before the stream does)"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise CsvInputError(f"{path}: not valid gzip data ({exc})") from None
    if not head.removeprefix(codecs.BOM_UTF8).strip():
        raise CsvInputError(f"{path}: empty file, no header line")
    nul = head.find(b"\x00")
    if nul >= 0 and not encodings <= WIDE_ENCODINGS:
        raise CsvInputError(
            f"{path}: binary data, not CSV text (a NUL byte at offset {nul}); "
            "a UTF-16 file needs csv.encoding in a mapping file"
        )


def check_input(path: str, mapping: Mapping | None) -> None:
    """``check_file`` with the encodings ``mapping`` (or, detecting, any shipped one) reads."""
    known = [mapping] if mapping is not None else shipped_mappings()
    check_file(path, {m.csv.spark_encoding for m in known})


def read_problem(exc: BaseException, path: str) -> str | None:
    """What Spark's failure says is wrong with reading ``path``, in words; None if it is not that.

    Only failures that name the file (Spark's FAILED_READ_FILE and
    PATH_NOT_FOUND errors, Hadoop's missing-file message) count, so an error
    reading some other file (a bronze table) is not blamed on the CSV.
    """
    chain = java_chain(exc)
    name = os.path.basename(path.rstrip("/"))
    if not any(name in message for _, message in chain):
        return None
    # Most specific first: Java reports a file it may not open as a
    # FileNotFoundException "(Permission denied)" under Spark's FILE_NOT_EXIST.
    for words, matches in _READ_PROBLEMS:
        for cls, message in chain:
            if matches(cls, message):
                return words.format(message=message)
    return None


#: (what to say, which Java exception says it), in the order read_problem tries them.
_READ_PROBLEMS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    (
        "became unreadable while it was being read (permission denied)",
        lambda cls, message: (
            cls.endswith("AccessDeniedException") or "Permission denied" in message
        ),
    ),
    (
        "the file vanished while it was being read (no such file)",
        says_missing_file,
    ),
    ("truncated compressed data ({message})", lambda cls, _: cls.endswith("EOFException")),
    (
        "corrupt data that cannot be decoded ({message})",
        lambda cls, message: cls.endswith("IOException") and "FAILED_READ_FILE" not in message,
    ),
)


@contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn Spark's failure to read ``path`` (``read_problem``) into one CsvInputError line.

    The Java exception stays chained for ``--verbose``.
    """
    try:
        yield
    except Exception as exc:
        problem = read_problem(exc, path)
        if problem is None:
            raise
        raise CsvInputError(f"{path}: {problem}") from exc


def read_header(spark: SparkSession, path: str, options: CsvOptions) -> list[str]:
    """The header's column names (BOM dropped), read by Spark from the first line only."""
    header = [c.lstrip("\ufeff") for c in _reader(spark, options).csv(path).columns]
    if not header:
        raise CsvInputError(f"{path}: no header line (an empty file?)")
    return header


def _records(spark: SparkSession, path: str, options: CsvOptions, header: list[str]) -> DataFrame:
    """Every record as strings, with its position, the malformed text, and an empty flag.

    The empty flag reads every column, which also keeps Spark from pruning
    columns out of the parse: with pruning, a line with too many or too few
    fields would not be seen as malformed.
    """
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in header]
        + [T.StructField(_CORRUPT, T.StringType())]
    )
    parsed = (
        _reader(spark, options)
        .schema(schema)
        .options(mode="PERMISSIVE", columnNameOfCorruptRecord=_CORRUPT, enforceSchema=True)
        .csv(path)
    )
    empty = F.trim(F.concat_ws("", *[_col(c) for c in header])) == ""
    return parsed.select(
        "*",
        F.concat_ws(
            "#", F.col("_metadata.file_path"), F.col("_metadata.file_block_start").cast("string")
        ).alias(_BLOCK),
        F.monotonically_increasing_id().alias(_POS),
        (empty & F.col(_CORRUPT).isNull()).alias(_EMPTY),
    )


def _number_records(records: DataFrame) -> tuple[Column, dict[str, int]]:
    """``source_row`` (1-based record number) and the counts, from one per-block aggregate.

    Spark reads each file block in order, so a record's number is the count
    of records in earlier blocks plus its position in its own block. Only
    one row per block comes to the driver.
    """
    blocks = (
        records.groupBy(_BLOCK)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.min(_POS).alias("first"),
            F.sum(F.col(_EMPTY).cast("long")).alias("empty"),
            F.sum(F.col(_CORRUPT).isNotNull().cast("long")).alias("malformed"),
        )
        .collect()
    )
    offsets: list[Column] = []
    seen = 0
    for row in sorted(blocks, key=lambda r: _block_order(r[_BLOCK])):
        offsets += [F.lit(row[_BLOCK]), F.lit(seen - row["first"] + 1).cast("long")]
        seen += row["n"]
    counts = {
        "records": seen,
        "empty": sum(int(r["empty"]) for r in blocks),
        "malformed": sum(int(r["malformed"]) for r in blocks),
    }
    if not offsets:
        return F.lit(None).cast("long"), counts
    return F.col(_POS) + F.create_map(*offsets)[F.col(_BLOCK)], counts


def _block_order(block: str) -> tuple[str, int]:
    file_path, start = block.rsplit("#", 1)
    return file_path, int(start)


def _line_counts(spark: SparkSession, path: str, options: CsvOptions) -> tuple[int, int]:
    """Blank and comment lines, which Spark's CSV reader skips without a trace: one text scan."""
    line = F.trim(F.col("value"))
    comment = line.startswith(options.comment) if options.comment else F.lit(False)
    counts = (
        spark.read.text(path)
        .agg(
            F.sum((line == "").cast("long")).alias("blank"),
            F.sum(comment.cast("long")).alias("comment"),
        )
        .first()
    )
    assert counts is not None  # a global aggregate has exactly one row
    return int(counts["blank"] or 0), int(counts["comment"] or 0)


# --- value conversion (column expressions) -------------------------------------


def _lookup(table: dict[str, str] | dict[str, int]) -> Column:
    return F.create_map(*[F.lit(x) for key, value in table.items() for x in (key, str(value))])


def _present(value: Column, missing: tuple[str, ...]) -> Column:
    """Trimmed, or null when empty or a sentinel meaning "missing"."""
    trimmed = F.trim(value)
    return F.when(~trimmed.isin(*missing), trimmed) if missing else trimmed


def _numeric_text(value: Column, options: CsvOptions) -> Column:
    """Drop thousands separators (only where they group digits correctly), use '.' for decimals."""
    if options.thousands:
        t, d = re.escape(options.thousands), re.escape(options.decimal)
        grouped = rf"^[+-]?\d{{1,3}}({t}\d{{3}})+({d}\d*)?$"
        value = F.when(value.rlike(grouped), F.translate(value, options.thousands, "")).otherwise(
            value
        )
    if options.decimal != ".":
        value = F.translate(value, options.decimal, ".")
    return value


def _scaled(value: Column, multiply: float, divide: float) -> Column:
    """The value in Spotify's units; a value that is not a number is kept for validation to reject.

    Rounded to 9 decimals so that float noise (``0.55 * 100 = 55.00000000000001``)
    does not make a whole number fail the integer check of ``popularity`` or ``key``.
    """
    if (multiply, divide) == (1.0, 1.0):
        return value
    number = value.try_cast("double")
    converted = F.round(number * F.lit(multiply) / F.lit(divide), 9).cast("string")
    return F.when(number.isNotNull() & ~F.isnan(number), converted).otherwise(value)


def _clock_ms(value: Column) -> Column:
    """``3:45`` or ``1:02:03`` -> milliseconds; anything else is kept as it is."""
    parts = F.split(value, ":")
    seconds = F.aggregate(
        parts, F.lit(0.0), lambda total, part: total * 60 + F.trim(part).try_cast("double")
    )
    return F.when(
        value.contains(":") & seconds.isNotNull(), (seconds * 1000).cast("string")
    ).otherwise(value)


def _year(value: Column) -> Column:
    """The first standalone 4-digit run: ``2019``, ``2019-06``, ``2019-06-14``, ``14/06/2019``."""
    year = F.regexp_extract(value, r"(?<!\d)(\d{4})(?!\d)", 1)
    return F.when(year != "", year).otherwise(value)


def _key(value: Column) -> Column:
    """Note names (``C#``, ``Db``, ``D♭``) -> pitch class 0-11; numbers pass through."""
    note = F.upper(F.translate(F.regexp_replace(value, r"\s+", ""), "♯♭", "#b"))
    return F.coalesce(_lookup(NOTE_PITCH)[note], value)


def _mode(value: Column) -> Column:
    """``Major``/``Minor`` (any case) -> 1/0; numbers pass through."""
    return F.coalesce(_lookup(MODE_CODE)[F.lower(value)], value)


def _convert(name: str, spec: FieldSpec, source: Column, mapping: Mapping) -> Column:
    """One canonical raw column from its source column, in Spotify's units, still a string."""
    value = _present(source, (*mapping.missing, *spec.missing))
    if spec.values:
        value = F.coalesce(
            _lookup({k.lower(): v for k, v in spec.values.items()})[F.lower(value)], value
        )
    if name in TEXT_FIELDS:
        return value
    value = {"key": _key, "mode": _mode, "year": _year}.get(name, lambda v: v)(value)
    value = _numeric_text(value, mapping.csv)
    if spec.unit == CLOCK_UNIT:
        return _clock_ms(value)
    multiply, divide = UNIT_FACTORS[spec.unit] if spec.unit else (spec.scale or 1.0, 1.0)
    return _scaled(value, multiply, divide)


# --- derived track ids ---------------------------------------------------------


def _fold_table() -> tuple[str, str]:
    """Latin letters with diacritics -> their base letter, from Unicode's decompositions."""
    accented, plain = [], []
    for code in range(0xC0, 0x250):
        char = chr(code)
        base = unicodedata.normalize("NFKD", char)[0]
        if char != base and base.isascii() and base.isalpha():
            accented.append(char)
            plain.append(base.lower())
    extra = {"ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ı": "i", "ħ": "h"}
    return "".join(accented) + "".join(extra), "".join(plain) + "".join(extra.values())


_ACCENTED, _PLAIN = _fold_table()
_LIGATURES = (("ß", "ss"), ("æ", "ae"), ("œ", "oe"), ("þ", "th"))


def normalise_name(value: Column) -> Column:
    """Lower-case, accents folded, ``&`` -> ``and``, apostrophes dropped, other punctuation
    and runs of whitespace -> one space, trimmed: ``"Beyoncé & Jay-Z"`` -> ``"beyonce and jay z"``.
    """
    text = F.translate(F.lower(value), _ACCENTED, _PLAIN)
    for ligature, letters in _LIGATURES:
        text = F.regexp_replace(text, ligature, letters)
    text = F.regexp_replace(text, "&", " and ")
    text = F.regexp_replace(text, "['’ʼ`´]", "")
    return F.trim(F.regexp_replace(text, r"[^\p{L}\p{N}]+", " "))


def derived_track_id(artist: Column, title: Column) -> Column:
    """A stable id for a source without Spotify ids: the same song in two files is one track.

    ``derived:`` + the first 24 hex digits of SHA-256 of ``<artist>|<title>``,
    both normalised by ``normalise_name``; null (so the row is quarantined as
    ``missing:track_id``) when either is empty.
    """
    a, t = normalise_name(artist), normalise_name(title)
    digest = F.substring(F.sha2(F.concat_ws("|", a, t), 256), 1, 24)
    return F.when((a != "") & (t != ""), F.concat(F.lit(DERIVED_PREFIX), digest))


def raw_columns(mapping: Mapping, columns: dict[str, str], source: str) -> list[Column]:
    """The canonical fields of ``catalog.raw_row_schema()`` from a record's source columns.

    A field the mapping leaves out, or whose column this file lacks (an
    optional one, see ``resolve_columns``), is null.
    """
    fields: dict[str, Column] = {}
    for name in TRACK_COLUMNS:
        spec = mapping.fields.get(name)
        if spec is None or (spec.column is not None and name not in columns):
            fields[name] = F.lit(None).cast("string")
        elif spec.value is not None:
            fields[name] = F.lit(spec.value)
        else:
            fields[name] = _convert(name, spec, _col(columns[name]), mapping)
    if mapping.derives_track_id:
        fields["track_id"] = derived_track_id(fields["artist"], fields["title"])
    return [column.alias(name) for name, column in fields.items()]


# --- the reader and the run ----------------------------------------------------


def resolve_mapping(spec: str | Path) -> Mapping:
    """``--mapping``: a shipped mapping's name (``spotify_top2000``) or a mapping file."""
    for known in shipped_mappings():
        if known.name == str(spec):
            return known
    return load_mapping(spec)


def read_csv(spark: SparkSession, path: str, mapping: Mapping | None = None) -> CsvRead:
    """Parse ``path`` into bronze rows (``catalog.raw_row_schema()``); nothing is written.

    ``ingested_at`` is left null for ``land`` to stamp: a timestamp literal
    here would change the generated code, and so recompile it, on every action.

    Without ``mapping`` the header picks a shipped one. A needed field's column
    that the header lacks is a MappingError here, before any row is read; an
    optional field's is recorded in ``CsvRead.absent``.
    """
    path = str(path)
    check_input(path, mapping)
    with reading(path):
        if mapping is None:
            mapping, header = detect_mapping(
                lambda options: read_header(spark, path, options), path
            )
        else:
            header = read_header(spark, path, mapping.csv)
        columns = resolve_columns(mapping, header, path)
        records = _records(spark, path, mapping.csv, header)
        source_row, counts = _number_records(records)
        blank, comment = _line_counts(spark, path, mapping.csv)
    source = source_name(path)
    raw = records.filter(~F.col(_EMPTY)).select(
        *raw_columns(mapping, columns, source),
        F.lit(source).alias(SOURCE),
        source_row.alias("source_row"),
        F.when(F.col(_CORRUPT).isNotNull(), F.lit(MALFORMED_ROW)).alias(REJECT_REASON),
        F.lit(None).cast("timestamp").alias(INGESTED_AT),
    )
    return CsvRead(
        raw=raw,
        mapping=mapping,
        source=source,
        absent=absent_fields(mapping, columns),
        records=counts["records"],
        blank_lines=blank,
        comment_lines=comment,
        empty_records=counts["empty"],
        malformed=counts["malformed"],
    )


def run_csv(
    lake: Lake, settings: Settings, path: str | Path, mapping: str | Path | Mapping | None = None
) -> CsvIngestReport:
    """Read ``path``, replace its rows in bronze.tracks_raw, rebuild silver and quarantine.

    Re-running on the same file gives the same tables (``land`` replaces the
    file's own rows). Mapping problems raise MappingError, a damaged, unreadable
    or empty file (header only included: landing it would delete the rows an
    earlier ingest of this file put in bronze) CsvInputError, before anything is
    written; a file that vanishes while ``land`` reads it fails that commit.
    """
    chosen = (
        mapping if isinstance(mapping, Mapping) or mapping is None else resolve_mapping(mapping)
    )
    read = read_csv(lake.spark, str(path), chosen)
    if read.rows_in == 0:
        raise CsvInputError(
            f"{path}: no data rows after the header ({read.empty_lines} empty, "
            f"{read.comment_lines} comment lines); nothing to ingest"
        )
    with reading(str(path)):
        version = land(lake, read.raw, read.source)
    return CsvIngestReport(
        path=str(path), read=read, bronze_version=version, summary=refresh_silver(lake, settings)
    )
