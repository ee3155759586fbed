"""Fuzzed CSVs through ``genre ingest csv``, checked against an independent parse with Python's ``csv``.

Hypothesis writes TidyTuesday-shaped files and damages them: wrong types,
empty and huge values, broken quoting, extra and missing fields, duplicate
and conflicting ids, all-empty records, blank lines, BOM / Latin-1 / CRLF,
and a header with columns re-cased, padded, reordered, added or dropped.
Half the files are ingested with ``--mapping``, half rely on header detection.

The oracle does not ask the pipeline what the file holds. Python's ``csv``
module parses it line by line (the mapping reads one record per line), and
that parse must first agree with what the generator meant to write. Then:

- the file is refused exactly when the parse says it must be (no header,
  a required field's column missing, no data rows; an optional field's
  column may be missing, and that field is then null), with exit code 2 and one
  ``error:`` line saying why; no other exit code is accepted;
- otherwise bronze holds one row per non-empty record, numbered by its
  place in the file; the records whose field count is wrong are the
  quarantined ``malformed_row`` ones; silver + quarantine = records;
- every silver row carries exactly the values of its record in the parse
  (typed the way the README documents: trimmed, sentinels missing, the year
  of a date, the genre map's coarse genre), and every record the generator
  left intact (and whose id no other record uses) is in silver.

Examples: ``FUZZ_EXAMPLES`` (default 8, 20 under ``CI=true``); the
examples are derandomised, so a run is reproducible and more examples
search further. ``FUZZ_SHRINK=1`` shrinks a failing example (slow).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.ingest.mapping import DEFAULT_MISSING
from genre_spark.lake import Lake
from genre_spark.lake.catalog import BRONZE_QUARANTINE, BRONZE_TRACKS_RAW, SILVER_TRACKS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or (20 if os.environ.get("CI") else 8))
#: Shrinking re-runs a whole ingest per step (many minutes): on only with FUZZ_SHRINK=1,
#: so a failure reports its example as generated, within the test's time limit.
PHASES = tuple(p for p in Phase if p is not Phase.shrink or os.environ.get("FUZZ_SHRINK"))
MAPPING = (
    Path(__file__).parents[1]
    / "genre_spark"
    / "resources"
    / "mappings"
    / "tidytuesday_spotify_songs.yaml"
)
HEADER = [
    "track_id", "track_name", "track_artist", "track_popularity", "track_album_id",
    "track_album_name", "track_album_release_date", "playlist_name", "playlist_id",
    "playlist_genre", "playlist_subgenre", "danceability", "energy", "key", "loudness", "mode",
    "speechiness", "acousticness", "instrumentalness", "liveness", "valence", "tempo",
    "duration_ms",
]  # fmt: skip
#: Canonical field -> its column in the file (the shipped mapping, written out again here).
FIELDS = {
    "track_id": "track_id", "title": "track_name", "artist": "track_artist",
    "genre": "playlist_genre", "year": "track_album_release_date", "tempo": "tempo",
    "energy": "energy", "danceability": "danceability", "loudness": "loudness",
    "liveness": "liveness", "valence": "valence", "duration_ms": "duration_ms",
    "acousticness": "acousticness", "speechiness": "speechiness",
    "instrumentalness": "instrumentalness", "key": "key", "mode": "mode",
    "popularity": "track_popularity",
}  # fmt: skip
#: The fields a file cannot do without (silver's required ones); every other mapped column may
#: be absent, and its field is then null (README, "Fields you leave out are null").
REQUIRED = {"track_id", "genre", "tempo", "energy", "danceability", "loudness", "liveness",
            "valence", "duration_ms", "acousticness", "speechiness"}  # fmt: skip
REQUIRED_COLUMNS = {FIELDS[name] for name in REQUIRED}
#: The columns header detection looks for besides the required ones (the mapping's ``detect``).
DETECT = {"track_id", "playlist_genre", "playlist_subgenre"}
INTEGERS = {"year", "key", "mode", "popularity"}
TEXT = {"track_id", "title", "artist", "genre"}
GOOD = [
    "t{n}", "Song {n}", "Artist {n}", "66", "al1", "Album", "2019-06-14", "Hits", "p1", "{genre}",
    "dance pop", "0.748", "0.916", "6", "-2.634", "1", "0.0583", "0.102", "0", "0.0653", "0.518",
    "122.036", "194754",
]  # fmt: skip
#: TidyTuesday's playlist genres and the coarse genre the default genre map gives each.
GENRES = {"pop": "pop", "rock": "rock", "rap": "hip-hop", "edm": "electronic", "latin": "latin",
          "r&b": "r&b"}  # fmt: skip
#: Values that do not belong in the field they land in (or do, oddly written).
BAD_VALUES = [
    "abc", "", "NA", "1e308", "-1e308", "9" * 400, "NaN", "inf", "Café ☕", '"unterminated',
    'x"y', "0x1F", " 12 ", "1,5", "\t", "２", "null", "-0", "Ã©", '"', "2.5", "1e-3", "Rap",
]  # fmt: skip
FILE_NAME = "input.csv"


@dataclass
class Generated:
    """A file and what its writer meant it to hold."""

    data: bytes
    encoding: str
    use_mapping: bool
    header: list[str] = field(default_factory=list)
    #: per record (blank lines are not records): the fields as written, or None where a
    #: comma or quote in an unquoted value makes the line mean something else
    fields: list[list[str] | None] = field(default_factory=list)
    #: per record: written from GOOD with no damage, one record per line
    intact: list[bool] = field(default_factory=list)


def quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@st.composite
def records(draw: st.DrawFn) -> tuple[dict[str, str], str, bool]:
    """One record: canonical column -> value, its shape, and whether it is intact."""
    n = draw(st.integers(0, 99))
    genre = draw(st.sampled_from(sorted(GENRES)))
    values = {c: v.format(n=n, genre=genre) for c, v in zip(HEADER, GOOD, strict=True)}
    damaged = draw(st.integers(1, 3)) if draw(st.integers(0, 2)) == 0 else 0
    for _ in range(damaged):
        values[draw(st.sampled_from(HEADER))] = draw(st.sampled_from(BAD_VALUES))
    shape = draw(st.sampled_from(["ok"] * 5 + ["quoted"] * 2 + ["extra", "short", "empty"]))
    if shape == "empty":
        values = dict.fromkeys(HEADER, "")
    return values, shape, damaged == 0 and shape in ("ok", "quoted")


def layout(
    values: dict[str, str], shape: str, origin: list[str | None]
) -> tuple[str, list[str] | None]:
    """The record as a line of the file (fields in the header's order), and the fields it means.

    The fields are None where an unquoted value holds a comma or a quote: the
    line then means whatever a CSV reader makes of it, which is the damage.
    """
    fields = [values[o] if o is not None else "x" for o in origin]
    if shape == "quoted":
        return ",".join(quoted(f) for f in fields), fields
    if shape == "extra":
        fields.append("surplus")
    elif shape == "short":
        fields = fields[: max(1, len(fields) // 2)]
    plain = not any("," in f or '"' in f for f in fields)
    return ",".join(fields), fields if plain else None


def spelled(draw: st.DrawFn, column: str) -> str:
    """A header name as an export might spell it: matched ignoring case and surrounding spaces."""
    return draw(st.sampled_from([column, column, column.upper(), f" {column} ", column.title()]))


@st.composite
def csv_files(draw: st.DrawFn) -> Generated:
    use_mapping = draw(st.booleans())
    if draw(st.integers(0, 11)) == 0:
        data = draw(st.sampled_from([b"", b"\n\n", "\ufeff".encode(), b"   \n"]))
        return Generated(data, "utf-8", use_mapping)
    origin: list[str | None] = list(HEADER)
    if draw(st.integers(0, 5)) == 0:
        origin.pop(draw(st.integers(0, len(origin) - 1)))
    if draw(st.integers(0, 3)) == 0:  # an export without some optional column: still ingested
        optional = [c for c in origin if c in FIELDS.values() and c not in REQUIRED_COLUMNS]
        origin.remove(draw(st.sampled_from(optional)))
    if draw(st.booleans()):
        origin.insert(draw(st.integers(0, len(origin))), None)  # an extra column
    if draw(st.integers(0, 3)) == 0:
        origin = list(draw(st.permutations(origin)))
    header = [spelled(draw, o) if o is not None else "extra_column" for o in origin]
    drawn = draw(st.lists(records(), max_size=10))
    if drawn and draw(st.booleans()):
        drawn.append(drawn[0])  # the same record twice
    laid = [layout(values, shape, origin) for values, shape, _ in drawn]
    lines = [line for line, _ in laid]
    for _ in range(draw(st.integers(0, 2)) if lines else 0):
        lines.insert(draw(st.integers(0, len(lines))), "")  # a blank line
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))
    text = newline.join([",".join(header), *lines]) + newline
    return Generated(
        text.encode(encoding, errors="replace"),
        encoding,
        use_mapping,
        header,
        [fields for _, fields in laid],
        [ok for _, _, ok in drawn],
    )


# --- the independent parse ---------------------------------------------------------


def as_read(data: bytes) -> str:
    """The file's text as a UTF-8 reader sees it (the mapping says UTF-8): BOM dropped."""
    return data.decode("utf-8", errors="replace").removeprefix("\ufeff")


def parse(data: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and records by Python's csv module, one record per line, blank lines skipped."""
    lines = [line for line in re.split(r"\r\n|\r|\n", as_read(data)) if line != ""]
    rows = [next(csv.reader([line])) for line in lines]
    return (rows[0], rows[1:]) if rows else ([], [])


def assert_the_file_says_what_was_meant(
    case: Generated, header: list[str], rows: list[list[str]]
) -> None:
    """The parse has one record per record written, and the values written where they are plain."""

    codec = case.encoding.removesuffix("-sig")  # the BOM starts the file, not each value

    def seen(value: str) -> str:  # as a UTF-8 reader reads what ``codec`` wrote
        return value.encode(codec, errors="replace").decode("utf-8", errors="replace")

    assert header == case.header
    assert len(rows) == len(case.fields)
    for row, meant in zip(rows, case.fields, strict=True):
        if meant is not None:
            assert row == [seen(f) for f in meant]


def key(column: str) -> str:
    return column.strip().casefold()


def refusal(case: Generated, header: list[str], rows: list[list[str]]) -> str | None:
    """The error the file must be refused with (a regex), or None when it must be ingested."""
    if not as_read(case.data).strip():
        return r"empty file, no header line"
    present = {key(c) for c in header}
    needed = {key(c) for c in REQUIRED_COLUMNS}
    if case.use_mapping and not needed <= present:
        return r"mapping 'tidytuesday_spotify_songs' does not fit .*column\(s\)"
    if not case.use_mapping and not (needed | DETECT) <= present:
        return r"header .* matches no known export"
    if all(is_empty(r, header) for r in rows):
        return r"no data rows after the header"
    return None


def is_empty(row: list[str], header: list[str]) -> bool:
    """A record of the right width whose every field is blank: skipped, like a blank line."""
    return len(row) == len(header) and all(f.strip(" ") == "" for f in row)


def present(value: str) -> str | None:
    """Trimmed (spaces, as Spark's trim), or None when empty or a sentinel meaning missing."""
    trimmed = value.strip(" ")
    return None if trimmed in DEFAULT_MISSING else trimmed


def typed(name: str, value: str) -> Any:
    """A record's value as silver.tracks holds it, computed here without the pipeline."""
    text = present(value)
    if text is None:
        return None
    if name == "genre":
        return GENRES.get(re.sub(r"[ \t\n\x0b\f\r]+", " ", text).lower(), f"<unmapped {text!r}>")
    if name in TEXT:
        return text
    if name == "year":
        found = re.search(r"(?<![0-9])([0-9]{4})(?![0-9])", text)
        text = found.group(1) if found else text
    try:
        number = float(text)
        return int(number) if name in INTEGERS else number
    except (ValueError, OverflowError):
        return f"<not a {name}: {text!r}>"  # matches no silver value


def expected_silver_row(row: list[str], header: list[str]) -> dict[str, Any]:
    """The record's values by field; a field whose column the header lacks is null."""
    by_key = {key(c): i for i, c in reversed(list(enumerate(header)))}
    return {
        name: typed(name, row[by_key[key(column)]]) if key(column) in by_key else None
        for name, column in FIELDS.items()
    }


# --- the test ------------------------------------------------------------------------


def tables(lake: Lake) -> dict[str, list[dict[str, Any]]]:
    """The few rows a fuzzed file gives (at most a dozen), as dicts."""
    names = (BRONZE_TRACKS_RAW, SILVER_TRACKS, BRONZE_QUARANTINE)
    return {
        n: [r.asDict() for r in lake.read(n).collect()] if lake.exists(n) else [] for n in names
    }


def assert_ingested(lake: Lake, path: Path, header: list[str], rows: list[list[str]],
                    intact: list[bool]) -> None:  # fmt: skip
    got = tables(lake)
    event(
        f"silver rows: {min(len(got['silver.tracks']), 5)}{'+' * (len(got['silver.tracks']) > 4)}"
    )
    kept = [i + 1 for i, r in enumerate(rows) if not is_empty(r, header)]
    malformed = {i + 1 for i, r in enumerate(rows) if len(r) != len(header)}
    bronze, silver, quarantine = got[BRONZE_TRACKS_RAW], got[SILVER_TRACKS], got[BRONZE_QUARANTINE]  # fmt: skip
    assert sorted(r["source_row"] for r in bronze) == kept  # bronze rows = records, in file order
    assert len(silver) + len(quarantine) == len(kept), (len(silver), len(quarantine), kept)
    assert {r["source_row"] for r in quarantine if r["reason"] == "malformed_row"} == malformed
    assert len({r["track_id"] for r in silver}) == len(silver)  # one row per track
    by_id: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        if i + 1 in kept and i + 1 not in malformed:
            expected = expected_silver_row(row, header)
            by_id.setdefault(expected["track_id"], []).append(expected)
    source = f"csv:{os.path.abspath(path)}"
    for row in silver:
        assert row["source"] == source
        values = {name: row[name] for name in FIELDS}
        assert values in by_id.get(row["track_id"], []), (values, by_id.get(row["track_id"]))
    ids = [expected_silver_row(r, header)["track_id"] if i + 1 not in malformed else None
           for i, r in enumerate(rows)]  # fmt: skip
    alone = [ids[i] for i in range(len(rows)) if intact[i] and ids.count(ids[i]) == 1]
    assert set(alone) <= {r["track_id"] for r in silver}, alone


@pytest.mark.timeout(120 + 30 * EXAMPLES)  # each example is a whole ingest: limit by examples
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=PHASES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=csv_files())
def test_fuzzed_csv_matches_an_independent_parse_or_is_refused_by_name(
    spark: SparkSession, case: Generated
) -> None:
    header, rows = parse(case.data)
    if case.header:
        assert_the_file_says_what_was_meant(case, header, rows)
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        path = folder / FILE_NAME
        path.write_bytes(case.data)
        lake_path = folder / "lake"
        mapping = ["--mapping", str(MAPPING)] if case.use_mapping else []
        result = CliRunner().invoke(
            app, ["ingest", "csv", str(path), *mapping, "--lake", str(lake_path)]
        )
        expected = refusal(case, header, rows)
        event(f"exit {result.exit_code}" + (f": {expected}" if expected else ""))
        if expected is None:
            assert result.exit_code == 0, result.output
            assert_ingested(Lake(spark, str(lake_path)), path, header, rows, case.intact)
        else:
            assert result.exit_code == 2, result.output
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, result.output
            assert FILE_NAME in errors[0] and re.search(expected, errors[0]), errors[0]
            assert Lake(spark, str(lake_path)).tables() == [], result.output
    finally:
        shutil.rmtree(folder, ignore_errors=True)
