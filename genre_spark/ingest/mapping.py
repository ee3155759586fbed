"""Column-mapping files: how a CSV export's columns become the canonical track fields.

A mapping is a small YAML file (see ``resources/mappings/`` for the shipped
ones and the README for the format). It names, for each canonical field of
``schema.TRACK_FIELDS``, the source column it comes from and how the value is
brought to Spotify's units: a unit (``percent`` -> 0-1, ``s`` -> ms, ...),
a scale factor, sentinel values that mean "missing", and categorical
encodings. The known public exports are nothing but shipped mapping files
recognised by their header (``detect``), so a never-seen export needs a
mapping file and no code.

Everything here is checked when the file is loaded (pydantic), and the
mapping's columns are checked against the CSV header before Spark reads a
row, so a typo fails with one clear message and nothing is written.
"""

from __future__ import annotations

import codecs
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genre_spark.config import ConfigError
from genre_spark.schema import FIELD_BY_NAME, TRACK_COLUMNS, TRACK_FIELDS

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "resources" / "mappings"

#: Values that mean "missing" in every column unless a mapping says otherwise.
DEFAULT_MISSING: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")

#: Canonical fields that are 0-1 scores in Spotify's units.
FRACTION_FIELDS: frozenset[str] = frozenset(
    {
        "energy",
        "danceability",
        "liveness",
        "valence",
        "acousticness",
        "speechiness",
        "instrumentalness",
    }
)
TEXT_FIELDS: frozenset[str] = frozenset({"track_id", "title", "artist", "genre"})

#: unit name -> (multiply, divide): the value in Spotify's units is ``x * multiply / divide``.
#: Percentages divide (57 / 100 == 0.57 exactly) rather than multiply by 0.01.
UNIT_FACTORS: dict[str, tuple[float, float]] = {
    "fraction": (1.0, 1.0),
    "percent": (1.0, 100.0),
    "ms": (1.0, 1.0),
    "s": (1000.0, 1.0),
    "min": (60000.0, 1.0),
    "db": (1.0, 1.0),
    "bpm": (1.0, 1.0),
}
#: Clock durations such as ``3:45`` or ``1:02:03``; parsed, then brought to ms.
CLOCK_UNIT = "m:ss"

ALLOWED_UNITS: dict[str, tuple[str, ...]] = {
    **{name: ("fraction", "percent") for name in FRACTION_FIELDS},
    "duration_ms": ("ms", "s", "min", CLOCK_UNIT),
    "loudness": ("db",),
    "tempo": ("bpm",),
}


#: Python's codec name -> the charset Spark 4's CSV reader accepts (its whole list).
SPARK_CHARSETS: dict[str, str] = {
    "utf-8": "utf-8",
    "utf-8-sig": "utf-8",
    "iso8859-1": "iso-8859-1",
    "ascii": "us-ascii",
    "utf-16": "utf-16",
    "utf-16-be": "utf-16be",
    "utf-16-le": "utf-16le",
    "utf-32": "utf-32",
}


class MappingError(ConfigError):
    """A mapping file that is missing, malformed, or does not fit the CSV it is used on."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_text(value: Any) -> str:
    """YAML reads ``1`` and ``-1`` as numbers; sentinels and codes are compared as text."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a YAML boolean; quote it ('yes', 'no', 'on', 'off')")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class FieldSpec(_Strict):
    """Where one canonical field comes from and how its value is converted."""

    column: str | None = Field(None, description="source column in the CSV header")
    value: str | None = Field(
        None, description="a constant for every row (e.g. one genre per file)"
    )
    unit: str | None = Field(None, description="the source's unit, see ALLOWED_UNITS")
    scale: float | None = Field(None, description="multiply by this (for units not listed)")
    missing: tuple[str, ...] = Field((), description="extra values meaning 'missing' here")
    values: dict[str, str] = Field(
        default_factory=dict, description="categorical codes -> canonical value (case-insensitive)"
    )

    @field_validator("missing", mode="before")
    @classmethod
    def _missing_as_text(cls, value: Any) -> Any:
        if isinstance(value, (str, int, float)):
            value = [value]
        return [_as_text(v) for v in value] if isinstance(value, list) else value

    @field_validator("values", mode="before")
    @classmethod
    def _values_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {_as_text(k): _as_text(v) for k, v in value.items()}
        return value

    @field_validator("value", mode="before")
    @classmethod
    def _value_as_text(cls, value: Any) -> Any:
        return None if value is None else _as_text(value)

    @model_validator(mode="after")
    def _one_origin(self) -> FieldSpec:
        if (self.column is None) == (self.value is None):
            raise ValueError(
                "give exactly one of 'column' (a source column) or 'value' (a constant)"
            )
        if self.unit is not None and self.scale is not None:
            raise ValueError("give 'unit' or 'scale', not both")
        return self


class CsvOptions(_Strict):
    """How to read the file; the defaults read RFC 4180 CSV in UTF-8 (a BOM is dropped)."""

    delimiter: str = Field(",", min_length=1)
    encoding: str = "utf-8"
    quote: str = Field('"', min_length=1, max_length=1)
    escape: str = Field('"', min_length=1, max_length=1)
    comment: str | None = Field(None, min_length=1, max_length=1)
    multiline: bool = Field(False, description="quoted values may span lines (not splittable)")
    thousands: str | None = Field(None, min_length=1, max_length=1)
    decimal: str = Field(".", min_length=1, max_length=1)

    @field_validator("encoding")
    @classmethod
    def _readable_encoding(cls, value: str) -> str:
        try:
            name = codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, latin-1)") from None
        if name not in SPARK_CHARSETS:
            raise ValueError(
                f"Spark's CSV reader cannot decode {value!r}; it reads {sorted(SPARK_CHARSETS)}. "
                "A cp1252 file reads as latin-1 except for bytes 0x80-0x9F (curly quotes, €); "
                "else convert it first (iconv -f ... -t utf-8)"
            )
        return value

    @property
    def spark_encoding(self) -> str:
        """The encoding as Spark names it; Spark drops a UTF-8 BOM itself."""
        return SPARK_CHARSETS[codecs.lookup(self.encoding).name]

    @model_validator(mode="after")
    def _distinct_number_marks(self) -> CsvOptions:
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError(f"thousands and decimal are both {self.decimal!r}")
        return self


class Mapping(_Strict):
    """A whole mapping file: which CSV it fits and how its columns become canonical fields."""

    name: str = Field(min_length=1)
    description: str = ""
    detect: tuple[str, ...] = Field(
        (), description="header columns that identify a known export (shipped mappings)"
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)
    missing: tuple[str, ...] = DEFAULT_MISSING
    fields: dict[str, FieldSpec]

    @field_validator("missing", mode="before")
    @classmethod
    def _missing_as_text(cls, value: Any) -> Any:
        return [_as_text(v) for v in value] if isinstance(value, list) else value

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``title: Track Name`` is short for ``title: {column: Track Name}``."""
        if isinstance(value, dict):
            return {k: {"column": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("fields")
    @classmethod
    def _canonical(cls, fields: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        problems = [_unknown_field(name) for name in fields if name not in FIELD_BY_NAME]
        problems += [
            _bad_unit(name, spec) for name, spec in fields.items() if name in FIELD_BY_NAME
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))
        return fields

    @model_validator(mode="after")
    def _complete(self) -> Mapping:
        """Every field silver requires must come from somewhere, or every row would be rejected."""
        missing = [name for name in self.needed if name not in self.fields]
        if missing:
            hint = (
                " (without a track_id column, title and artist are needed to derive one)"
                if "track_id" not in self.fields
                else ""
            )
            raise ValueError(f"fields: no mapping for required field(s) {missing}{hint}")
        return self

    @property
    def columns(self) -> dict[str, str]:
        """canonical field -> source column, for the fields read from the CSV."""
        return {name: spec.column for name, spec in self.fields.items() if spec.column is not None}

    @property
    def derives_track_id(self) -> bool:
        return "track_id" not in self.fields

    @property
    def needed(self) -> tuple[str, ...]:
        """The fields a row cannot do without: silver's required ones, and what the id comes from.

        Without a ``track_id`` field the id is derived from title and artist, so
        those two are needed then. Every other mapped field is optional: its
        column may be absent from a file (an export without popularity or year)
        and the field is then null, not the file refused.
        """
        required = tuple(f.name for f in TRACK_FIELDS if f.required and f.name != "track_id")
        return (*required, "title", "artist") if self.derives_track_id else ("track_id", *required)


def _unknown_field(name: str) -> str:
    close = difflib.get_close_matches(name, TRACK_COLUMNS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{name!r} is not a canonical field{hint}; canonical fields: {list(TRACK_COLUMNS)}"


def _bad_unit(name: str, spec: FieldSpec) -> str:
    numeric = name not in TEXT_FIELDS
    if spec.scale is not None and not numeric:
        return f"{name}: 'scale' applies to numeric fields only"
    if spec.unit is None:
        return ""
    allowed = ALLOWED_UNITS.get(name, ())
    if spec.unit not in allowed:
        choices = f"one of {list(allowed)}" if allowed else "none (it has no unit)"
        return f"{name}: unit {spec.unit!r} is not allowed; allowed: {choices}"
    return ""


def _format(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{key}: {message.removeprefix('Value error, ')}")
    return f"mapping {where} is not valid:\n  " + "\n  ".join(lines)


def parse_mapping(data: Any, where: str) -> Mapping:
    """Validate already-parsed YAML; ``where`` names the file in errors."""
    if not isinstance(data, dict):
        raise MappingError(f"mapping {where}: expected a YAML mapping with name, csv, fields")
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise MappingError(_format(exc, where)) from None


def load_mapping(path: str | Path) -> Mapping:
    """Read and validate a mapping file; every problem is a MappingError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"mapping file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping {path}: not valid YAML: {exc}") from None
    return parse_mapping(data, str(path))


def shipped_mappings() -> list[Mapping]:
    """The known public exports, one mapping file each, in file-name order."""
    return [load_mapping(p) for p in sorted(SHIPPED_DIR.glob("*.yaml"))]


def _key(column: str) -> str:
    """Header names are matched ignoring a BOM, surrounding spaces and case."""
    return column.lstrip("\ufeff").strip().casefold()


def _keys(header: list[str]) -> dict[str, str]:
    """Matching key -> the header's own spelling; the first of two columns that match wins."""
    by_key: dict[str, str] = {}
    for column in header:
        by_key.setdefault(_key(column), column)
    return by_key


def _needed_columns(mapping: Mapping) -> dict[str, str]:
    """needed field -> its source column, for the needed fields read from the CSV."""
    return {name: column for name, column in mapping.columns.items() if name in mapping.needed}


def resolve_columns(mapping: Mapping, header: list[str], where: str) -> dict[str, str]:
    """canonical field -> the header's own spelling of its column, for the columns the header has.

    A needed field's column (``Mapping.needed``) that the header lacks is a
    MappingError naming it; an optional field's column may be absent, and the
    field is then left out here (null in every row; ``absent_fields`` names it).
    """
    by_key = _keys(header)
    absent = sorted(
        {column for column in _needed_columns(mapping).values() if _key(column) not in by_key}
    )
    if absent:
        raise MappingError(
            f"mapping {mapping.name!r} does not fit {where}: column(s) {absent} are not in its "
            f"header; the header has {header}"
        )
    resolved = {name: by_key.get(_key(column)) for name, column in mapping.columns.items()}
    return {name: found for name, found in resolved.items() if found is not None}


def absent_fields(mapping: Mapping, columns: dict[str, str]) -> tuple[str, ...]:
    """The optional fields the mapping reads from a column that ``resolve_columns`` did not find."""
    return tuple(sorted(name for name in mapping.columns if name not in columns))


def detect_mapping(
    header_of: Callable[[CsvOptions], list[str]], where: str, known: list[Mapping] | None = None
) -> tuple[Mapping, list[str]]:
    """The shipped mapping whose ``detect`` and needed columns the header has, and that header.

    An optional field's column does not take part: an export without its
    popularity or year column is still the export it is (``resolve_columns``
    then leaves those fields null).

    ``header_of`` reads the header with a mapping's CSV options, once per
    distinct set of options. When several mappings fit, the one with the most
    ``detect`` columns (the most specific) wins; a tie is an error, not a guess.
    """
    known = shipped_mappings() if known is None else known
    headers: dict[CsvOptions, list[str]] = {}
    candidates: list[tuple[Mapping, list[str]]] = []
    for mapping in known:
        if mapping.csv not in headers:
            headers[mapping.csv] = header_of(mapping.csv)
        header = headers[mapping.csv]
        wanted = {_key(c) for c in (*mapping.detect, *_needed_columns(mapping).values())}
        if mapping.detect and wanted <= _keys(header).keys():
            candidates.append((mapping, header))
    if not candidates:
        seen = headers.get(CsvOptions()) or next(iter(headers.values()), [])
        raise MappingError(
            f"{where}: header {seen} matches no known export {[m.name for m in known]}; write a "
            "mapping file (see README, 'The mapping-file format') and pass it with --mapping"
        )
    best = max(len(m.detect) for m, _ in candidates)
    top = [(m, h) for m, h in candidates if len(m.detect) == best]
    if len(top) > 1:
        raise MappingError(
            f"{where}: header fits several known exports {[m.name for m, _ in top]}; pick one "
            "with --mapping"
        )
    return top[0]
