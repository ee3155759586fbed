"""Bad CSV input, fuzzed through the CLI: every row accounted for, or one clear error and nothing written.

Hypothesis builds TidyTuesday-shaped CSVs (the shipped mapping, given with
``--mapping``) and damages them: wrong types, empty and huge values, broken
quoting, extra and missing fields, dropped header columns, duplicate ids,
BOM / Latin-1 encodings, blank lines and empty files. Each is ingested with
``genre ingest csv`` into a fresh lake. Then either the run succeeded and
bronze rows in == silver + quarantine (counted from the tables), or it
exited 1/2 with one ``error:`` line and the lake has no table at all. No case
may show the user a traceback.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.lake import Lake

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
GOOD = [
    "t{n}", "Song {n}", "Artist {n}", "66", "al1", "Album", "2019-06-14", "Hits", "p1", "{genre}",
    "dance pop", "0.748", "0.916", "6", "-2.634", "1", "0.0583", "0.102", "0", "0.0653", "0.518",
    "122.036", "194754",
]  # fmt: skip
GENRES = ["pop", "rock", "rap", "edm", "latin", "r&b"]
#: Values that do not belong in the field they land in.
BAD_VALUES = [
    "abc", "", "NA", "1e308", "-1e308", "9" * 400, "NaN", "inf", "Café ☕", '"unterminated',
    'x"y', "0x1F", " 12 ", "1,5", "\t", "２", "null", "-0", "Ã©",
]  # fmt: skip


@st.composite
def damaged_rows(draw: st.DrawFn, n_fields: int) -> str:
    n = draw(st.integers(0, 30))
    genre = draw(st.sampled_from(GENRES))
    fields = [f.format(n=n, genre=genre) for f in GOOD][:n_fields]
    for _ in range(draw(st.integers(0, 3))):
        fields[draw(st.integers(0, n_fields - 1))] = draw(st.sampled_from(BAD_VALUES))
    shape = draw(st.sampled_from(["ok", "ok", "extra", "short", "quoted"]))
    if shape == "extra":
        fields.append("surplus")
    elif shape == "short":
        fields = fields[: draw(st.integers(1, n_fields - 1))]
    elif shape == "quoted":
        fields = [f'"{f}"' for f in fields]
    return ",".join(fields)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A whole file: header (maybe missing a column), rows, encoding."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"", b"\n\n", "\ufeff".encode()]))
    header = list(HEADER)
    if draw(st.integers(0, 5)) == 0:
        header.pop(draw(st.integers(0, len(header) - 1)))  # a mapped column goes missing
    if draw(st.booleans()):
        header.append("extra_column")
    rows = draw(st.lists(damaged_rows(len(header)), min_size=0, max_size=12))
    if rows and draw(st.booleans()):
        rows.append(rows[0])  # a duplicate id (and whole row)
    if rows and draw(st.integers(0, 3)) == 0:
        rows.insert(draw(st.integers(0, len(rows))), "")  # a blank line
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join([",".join(header), *rows]) + newline
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))
    return text.encode(encoding, errors="replace")


def assert_accounted_for(lake: Lake) -> None:
    """Every bronze row of the file is in silver or in quarantine, none in both, none twice."""
    bronze = lake.read("bronze.tracks_raw")
    silver = lake.read("silver.tracks").count() if lake.exists("silver.tracks") else 0
    quarantine = lake.read("bronze.quarantine").count() if lake.exists("bronze.quarantine") else 0
    assert bronze.count() == silver + quarantine, (bronze.count(), silver, quarantine)
    if silver:
        ids = lake.read("silver.tracks").select("track_id")
        assert ids.distinct().count() == silver  # one row per track, none counted twice


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=csv_files())
def test_fuzzed_csv_is_accounted_for_or_refused_cleanly(spark: SparkSession, data: bytes) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        csv = folder / "input.csv"
        csv.write_bytes(data)
        lake_path = folder / "lake"
        result = CliRunner().invoke(
            app, ["ingest", "csv", str(csv), "--mapping", str(MAPPING), "--lake", str(lake_path)]
        )
        assert "Traceback" not in result.output
        lake = Lake(spark, str(lake_path))
        event(f"exit {result.exit_code}")  # --hypothesis-show-statistics counts outcomes
        if result.exit_code == 0:
            assert_accounted_for(lake)
        else:
            assert result.exit_code in (1, 2), result.output
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, result.output
            assert lake.tables() == [], result.output
    finally:
        shutil.rmtree(folder, ignore_errors=True)
