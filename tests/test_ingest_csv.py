"""CSV ingestion: known exports by header, mapping files, units, derived ids, bad lines, bad mappings.

The fixtures are written here, byte for byte, to reproduce each real file's
quirks (BOM, CRLF, quoted thousands, ``NA``, R-style numbers, mixed-precision
dates, Latin-1) in a few rows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import Settings
from genre_spark.ingest.csv import MALFORMED_ROW, read_csv, run_csv
from genre_spark.ingest.mapping import (
    MappingError,
    absent_fields,
    detect_mapping,
    load_mapping,
    parse_mapping,
    resolve_columns,
    shipped_mappings,
)
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_TRACKS_RAW,
    SILVER_TRACKS,
    raw_row_schema,
    spec,
)
from genre_spark.schema import INGESTED_AT, TRACK_COLUMNS

TOP2000_HEADER = (
    "Index,Title,Artist,Top Genre,Year,Beats Per Minute (BPM),Energy,Danceability,"
    "Loudness (dB),Liveness,Valence,Length (Duration),Acousticness,Speechiness,Popularity"
)
TOP2000_ROWS = [
    "1,Sunrise,Norah Jones,adult standards,2004,157,30,53,-14,11,68,201,94,3,71",
    '2,"Listen (From the Motion Picture ""Dreamgirls"")",Beyoncé,dance pop,2006,123,59,48,-5,18,20,218,27,5,44',
    '3,Echoes,Pink Floyd,album rock,1971,134,32,28,-17,11,14,"1,412",37,4,58',
]
TIDY_HEADER = (
    "track_id,track_name,track_artist,track_popularity,track_album_id,track_album_name,"
    "track_album_release_date,playlist_name,playlist_id,playlist_genre,playlist_subgenre,"
    "danceability,energy,key,loudness,mode,speechiness,acousticness,instrumentalness,liveness,"
    "valence,tempo,duration_ms"
)
TIDY_ROWS = [
    "t1,Song A,Artist A,66,al1,Album A,2019-06-14,Pop Remix,p1,pop,dance pop,0.748,0.916,6,-2.634,1,0.0583,0.102,0,0.0653,0.518,122.036,194754",
    "t2,NA,NA,0,al2,NA,2012,HIP&HOP,p2,rap,southern hip hop,0.714,0.821,6,-7.635,1,0.176,0.041,2.26e-4,0.116,0.649,95.999,282707",
    "t3,Song C,Artist C,40,al3,Album C,1998-03,Rock Classics,p3,rock,classic rock,0.5,0.6,2,-5.1,0,0.04,0.2,1.5E-3,0.1,0.4,130.5,200000",
    "t1,Song A,Artist A,66,al1,Album A,2019-06-14,Latin Hits,p4,latin,reggaeton,0.748,0.916,6,-2.634,1,0.0583,0.102,0,0.0653,0.518,122.036,194754",
    "t3,Song C,Artist C,40,al3,Album C,1998-03,Rock Legends,p5,rock,album rock,0.5,0.6,2,-5.1,0,0.04,0.2,1.5E-3,0.1,0.4,130.5,200000",
]

#: A never-seen export: ';'-separated Latin-1, decimal commas, percentages, m:ss durations,
#: note-name keys, German mode names, 0-1 popularity, '?' and '-1' meaning missing, dates of any
#: precision.
ODD_CSV = """Song Name;Singer;Style;Released;Speed;Power %;Dance %;Volume;Live %;Mood %;Length;Acoustic %;Speech %;Instrumental;Tonality;Scale;Popularity
Café del Mar;Energy 52;Chill;14/06/1998;120,5;45;60;-8,5;10;30;3:45;20;5;0,85;F#;Moll;0,55
Ça plane pour moi;Plastic Bertrand;Punk;1977-11;150;80;70;-6;15;90;2:59;1;6;?;Db;Dur;-1
listen  (from the motion picture dreamgirls);BEYONCE;dance pop;2006;123;59;48;-5;18;20;3:38;27;5;0;a;dur;0,44
Nobody Knows;Someone;Chill;2001;?;50;50;-7;10;50;4:00;10;5;0;C;Dur;0,1
"""
ODD_MAPPING = """
name: odd_export
description: a never-seen export, mapped without code
csv: {delimiter: ";", encoding: latin-1, decimal: ","}
missing: ["", "?"]
fields:
  title: Song Name
  artist: Singer
  genre: Style
  year: Released
  tempo: Speed
  energy: {column: Power %, unit: percent}
  danceability: {column: Dance %, unit: percent}
  loudness: Volume
  liveness: {column: Live %, unit: percent}
  valence: {column: Mood %, unit: percent}
  duration_ms: {column: Length, unit: "m:ss"}
  acousticness: {column: Acoustic %, unit: percent}
  speechiness: {column: Speech %, unit: percent}
  instrumentalness: Instrumental
  key: Tonality
  mode: {column: Scale, values: {Dur: 1, Moll: 0}}
  popularity: {column: Popularity, scale: 100, missing: [-1]}
"""

runner = CliRunner()


def reference_id(artist: str, title: str) -> str:
    """The derived track_id computed in plain Python (NFKD), independently of the Spark code."""

    def norm(text: str) -> str:
        text = unicodedata.normalize("NFKD", text.lower())
        text = "".join(c for c in text if not unicodedata.combining(c)).replace("&", " and ")
        text = re.sub(r"['’ʼ`´]", "", text)
        return " ".join(re.sub(r"[\W_]+", " ", text).split())

    return "derived:" + hashlib.sha256(f"{norm(artist)}|{norm(title)}".encode()).hexdigest()[:24]


def write(path: Path, lines: list[str], *, bom: bool = False, eol: str = "\n") -> Path:
    data = (eol.join(lines) + eol).encode("utf-8")
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def top2000(tmp_path: Path, rows: list[str] = TOP2000_ROWS, name: str = "top.csv") -> Path:
    return write(tmp_path / name, [TOP2000_HEADER, *rows], bom=True, eol="\r\n")


def raw_frame(spark: SparkSession, rows: list[dict]) -> object:
    schema = T.StructType([f for f in raw_row_schema().fields if f.name != INGESTED_AT])
    return spark.createDataFrame([{c: r.get(c) for c in schema.names} for r in rows], schema)


def silver_frame(spark: SparkSession, rows: list[dict]) -> object:
    schema = T.StructType([f for f in spec(SILVER_TRACKS).schema.fields if f.name != INGESTED_AT])
    return spark.createDataFrame([{c: r.get(c) for c in schema.names} for r in rows], schema)


def test_top2000_is_recognised_and_brought_to_spotify_units(
    spark: SparkSession, tmp_path: Path
) -> None:
    read = read_csv(spark, str(top2000(tmp_path)))
    assert read.mapping.name == "spotify_top2000"
    assert (read.records, read.empty_lines, read.malformed, read.rows_in) == (3, 0, 0, 3)
    source = f"csv:{tmp_path / 'top.csv'}"
    common = {"source": source, "instrumentalness": None, "key": None, "mode": None}
    expected = [
        {
            **common,
            "track_id": reference_id("Norah Jones", "Sunrise"),
            "title": "Sunrise", "artist": "Norah Jones", "genre": "adult standards",
            "year": "2004", "tempo": "157", "energy": "0.3", "danceability": "0.53",
            "loudness": "-14", "liveness": "0.11", "valence": "0.68", "duration_ms": "201000.0",
            "acousticness": "0.94", "speechiness": "0.03", "popularity": "71", "source_row": 1,
        },
        {
            **common,
            "track_id": reference_id("Beyoncé", 'Listen (From the Motion Picture "Dreamgirls")'),
            "title": 'Listen (From the Motion Picture "Dreamgirls")', "artist": "Beyoncé",
            "genre": "dance pop", "year": "2006", "tempo": "123", "energy": "0.59",
            "danceability": "0.48", "loudness": "-5", "liveness": "0.18", "valence": "0.2",
            "duration_ms": "218000.0", "acousticness": "0.27", "speechiness": "0.05",
            "popularity": "44", "source_row": 2,
        },
        {
            **common,
            "track_id": reference_id("Pink Floyd", "Echoes"),
            "title": "Echoes", "artist": "Pink Floyd", "genre": "album rock", "year": "1971",
            "tempo": "134", "energy": "0.32", "danceability": "0.28", "loudness": "-17",
            "liveness": "0.11", "valence": "0.14", "duration_ms": "1412000.0",
            "acousticness": "0.37", "speechiness": "0.04", "popularity": "58", "source_row": 3,
        },
    ]  # fmt: skip
    assertDataFrameEqual(read.raw.drop(INGESTED_AT), raw_frame(spark, expected))


def test_tidytuesday_is_recognised_and_lands_one_row_per_track(
    spark: SparkSession, lake: Lake, settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path / "songs.csv.gz", [TIDY_HEADER, *TIDY_ROWS])
    read = read_csv(spark, str(path))
    assert read.mapping.name == "tidytuesday_spotify_songs"
    second = read.raw.filter("source_row = 2").drop(INGESTED_AT).first().asDict()
    assert second == {
        **dict.fromkeys(n for n in raw_row_schema().names if n != INGESTED_AT),
        "track_id": "t2", "genre": "rap", "year": "2012", "tempo": "95.999", "energy": "0.821",
        "danceability": "0.714", "loudness": "-7.635", "liveness": "0.116", "valence": "0.649",
        "duration_ms": "282707", "acousticness": "0.041", "speechiness": "0.176",
        "instrumentalness": "2.26e-4", "key": "6", "mode": "1", "popularity": "0",
        "source": f"csv:{path}", "source_row": 2,
    }  # fmt: skip
    assert [r.year for r in read.raw.orderBy("source_row").collect()] == [
        "2019", "2012", "1998", "2019", "1998",
    ]  # fmt: skip

    settings.validation.genre_map = None
    report = run_csv(lake, settings, path)
    summary = report.summary
    assert (summary.rows_in, summary.silver_rows, summary.quarantined) == (5, 2, 3)
    assert summary.reasons == {"conflicting_genre": 2, "duplicate_track_id": 1}
    common = {"source": f"csv:{path}", "popularity": None}
    assertDataFrameEqual(
        lake.read(SILVER_TRACKS).drop(INGESTED_AT),
        silver_frame(
            spark,
            [
                {
                    **common, "track_id": "t2", "genre": "rap", "year": 2012, "tempo": 95.999,
                    "energy": 0.821, "danceability": 0.714, "loudness": -7.635, "liveness": 0.116,
                    "valence": 0.649, "duration_ms": 282707.0, "acousticness": 0.041,
                    "speechiness": 0.176, "instrumentalness": 2.26e-4, "key": 6, "mode": 1,
                    "popularity": 0,
                },
                {
                    **common, "track_id": "t3", "title": "Song C", "artist": "Artist C",
                    "genre": "rock", "year": 1998, "tempo": 130.5, "energy": 0.6,
                    "danceability": 0.5, "loudness": -5.1, "liveness": 0.1, "valence": 0.4,
                    "duration_ms": 200000.0, "acousticness": 0.2, "speechiness": 0.04,
                    "instrumentalness": 1.5e-3, "key": 2, "mode": 0, "popularity": 40,
                },
            ],
        ),
    )  # fmt: skip
    quarantined = lake.read(BRONZE_QUARANTINE).select("track_id", "source_row", "reason")
    assert sorted(tuple(r) for r in quarantined.collect()) in (
        [("t1", 1, "conflicting_genre"), ("t1", 4, "conflicting_genre"), (t3, n, "duplicate_track_id")]
        for t3, n in (("t3", 3), ("t3", 5))
    )  # fmt: skip

    hashes = {t: lake.content_hash(t) for t in (BRONZE_TRACKS_RAW, SILVER_TRACKS)}
    run_csv(lake, settings, path)
    assert {t: lake.content_hash(t) for t in hashes} == hashes


def test_unfamiliar_export_gets_in_with_a_mapping_file_alone(
    spark: SparkSession, lake: Lake, settings: Settings, tmp_path: Path
) -> None:
    """Also: the Top 2000 file's 'Beyoncé' row, landed first, is the same track as the odd
    export's 'BEYONCE' row (one derived track_id); the later row is the one kept."""
    path = tmp_path / "odd export.csv"
    path.write_bytes(ODD_CSV.encode("latin-1"))
    mapping = tmp_path / "odd.yaml"
    mapping.write_text(ODD_MAPPING)
    settings.validation.genre_map = None
    run_csv(lake, settings, top2000(tmp_path, TOP2000_ROWS[1:2]))

    report = run_csv(lake, settings, path, str(mapping))

    assert report.format == "odd_export"
    assert report.summary.reasons == {"duplicate_track_id": 1, "missing:tempo": 1}
    listen = reference_id("Beyonce", "Listen (From the Motion Picture Dreamgirls)")
    sources = lake.read(BRONZE_TRACKS_RAW).filter(f"track_id = '{listen}'").select("source")
    source = f"csv:{path}"
    assertDataFrameEqual(sources, [(f"csv:{tmp_path / 'top.csv'}",), (source,)])
    expected = [
        {
            "track_id": reference_id("Energy 52", "Café del Mar"), "title": "Café del Mar",
            "artist": "Energy 52", "genre": "chill", "year": 1998, "tempo": 120.5,
            "energy": 0.45, "danceability": 0.6, "loudness": -8.5, "liveness": 0.1,
            "valence": 0.3, "duration_ms": 225000.0, "acousticness": 0.2, "speechiness": 0.05,
            "instrumentalness": 0.85, "key": 6, "mode": 0, "popularity": 55, "source": source,
        },
        {
            "track_id": reference_id("Plastic Bertrand", "Ça plane pour moi"),
            "title": "Ça plane pour moi", "artist": "Plastic Bertrand", "genre": "punk",
            "year": 1977, "tempo": 150.0, "energy": 0.8, "danceability": 0.7, "loudness": -6.0,
            "liveness": 0.15, "valence": 0.9, "duration_ms": 179000.0, "acousticness": 0.01,
            "speechiness": 0.06, "instrumentalness": None, "key": 1, "mode": 1,
            "popularity": None, "source": source,
        },
        {
            "track_id": reference_id("Beyoncé", 'Listen (From the Motion Picture "Dreamgirls")'),
            "title": "listen  (from the motion picture dreamgirls)", "artist": "BEYONCE",
            "genre": "dance pop", "year": 2006, "tempo": 123.0, "energy": 0.59,
            "danceability": 0.48, "loudness": -5.0, "liveness": 0.18, "valence": 0.2,
            "duration_ms": 218000.0, "acousticness": 0.27, "speechiness": 0.05,
            "instrumentalness": 0.0, "key": 9, "mode": 1, "popularity": 44, "source": source,
        },
    ]  # fmt: skip
    assertDataFrameEqual(lake.read(SILVER_TRACKS).drop(INGESTED_AT), silver_frame(spark, expected))


def test_same_file_name_in_two_folders_is_two_sources_same_file_twice_is_one(
    spark: SparkSession, lake: Lake, settings: Settings, tmp_path: Path
) -> None:
    """A source is its whole location: neither export replaces the other's rows."""
    settings.validation.genre_map = None
    for year in ("2023", "2024"):
        (tmp_path / year).mkdir()
    first = top2000(tmp_path / "2023", TOP2000_ROWS[:1])
    second = top2000(tmp_path / "2024", TOP2000_ROWS[2:])
    run_csv(lake, settings, first)
    report = run_csv(lake, settings, second)
    assert report.summary.rows_in == 2 and report.summary.silver_rows == 2
    sources = lake.read(BRONZE_TRACKS_RAW).select("source", "title")
    expected = [(f"csv:{first}", "Sunrise"), (f"csv:{second}", "Echoes")]
    assertDataFrameEqual(sources, expected)

    # The first file again, named by a relative path and as a file: URI: still one source.
    relative = os.path.relpath(first)
    assert run_csv(lake, settings, relative).summary.rows_in == 2
    assert run_csv(lake, settings, first.as_uri()).summary.rows_in == 2
    assertDataFrameEqual(lake.read(BRONZE_TRACKS_RAW).select("source", "title"), expected)


def test_empty_lines_are_counted_and_malformed_rows_quarantined(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    rows = [
        TOP2000_ROWS[0],
        "",
        "   ",
        "2,Too Few,Someone,pop,2004",
        "3,Too Many,Someone,pop,2004,157,30,53,-14,11,68,201,94,3,71,99",
        ",,,,,,,,,,,,,,",
        '4,"Broken quote,Someone,pop,2004,157,30,53,-14,11,68,201,94,3,71',
        TOP2000_ROWS[2],
    ]
    path = top2000(tmp_path, rows, name="messy.csv")
    read = read_csv(spark, str(path))
    assert (read.records, read.blank_lines, read.empty_records, read.malformed) == (6, 2, 1, 3)
    assert (read.empty_lines, read.rows_read, read.rows_in) == (3, 8, 5)
    flags = read.raw.select("source_row", "title", "reject_reason")
    assertDataFrameEqual(
        flags,
        [(1, "Sunrise", None), (2, "Too Few", MALFORMED_ROW), (3, "Too Many", MALFORMED_ROW),
         (5, "Broken quote,Someone,pop,2004,157,30,53,-14,11,68,201,94,3,71", MALFORMED_ROW),
         (6, "Echoes", None)],
    )  # fmt: skip

    result = runner.invoke(
        app,
        ["ingest", "csv", str(path), "-m", "spotify_top2000", "--genre-map", "none",
         "--lake", settings.lake],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for label, count in [("empty lines skipped", 3), ("malformed rows", 3), (SILVER_TRACKS, 2)]:
        assert re.search(rf"{label}[^\n]*│ {count} ", result.stdout), (label, result.stdout)
    assert "spotify_top2000" in result.stdout and "malformed_row" in result.stdout
    quarantine = Lake(spark, settings.lake).read(BRONZE_QUARANTINE)
    assert sorted(r.source_row for r in quarantine.collect()) == [2, 3, 5]
    assert {r.reason for r in quarantine.collect()} == {MALFORMED_ROW}
    assert json.loads(quarantine.filter("source_row = 3").first().record)["title"] == "Too Many"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fields: {energie: E}", r"'energie' is not a canonical field \(did you mean 'energy'\?\)"),
        ("fields: {energy: {column: E, unit: kelvin}}", r"energy: unit 'kelvin' is not allowed"),
        ("fields: {title: {column: T, value: x}}", r"exactly one of 'column'"),
        ("csv: {encoding: klingon}\nfields: {}", r"unknown encoding 'klingon'"),
        ("delimiter: ';'\nfields: {}", r"delimiter: unknown key"),
        ("fields: {genre: G}", r"no mapping for required field\(s\) \['tempo', 'energy'"),
    ],
)
def test_a_bad_mapping_names_the_problem(text: str, message: str) -> None:
    import yaml

    with pytest.raises(MappingError, match=message):
        parse_mapping({"name": "bad", **yaml.safe_load(text)}, "bad.yaml")


def test_a_mapping_that_does_not_fit_the_file_fails_before_anything_is_written(
    spark: SparkSession, lake: Lake, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "odd.csv"
    path.write_bytes(ODD_CSV.encode("latin-1"))
    mapping = tmp_path / "typo.yaml"
    mapping.write_text(ODD_MAPPING.replace("Power %", "Power"))
    with pytest.raises(MappingError, match=r"column\(s\) \['Power'\] are not in its header"):
        run_csv(lake, settings, path, load_mapping(mapping))
    with pytest.raises(MappingError, match=r"matches no known export .*'spotify_top2000'"):
        run_csv(lake, settings, path)
    assert lake.tables() == []

    (tmp_path / "broken.yaml").write_text("fields: [unclosed")
    result = runner.invoke(
        app,
        ["ingest", "csv", str(path), "-m", str(tmp_path / "broken.yaml"), "--lake", settings.lake],
    )
    assert result.exit_code == 2 and "not valid YAML" in " ".join(result.output.split())
    assert lake.tables() == []


@pytest.mark.parametrize(
    ("dropped", "absent"),
    [((), ()), (("Year", "Popularity"), ("popularity", "year")), (("Title",), ())],
)
def test_a_known_export_without_optional_columns_is_still_recognised(
    dropped: tuple[str, ...], absent: tuple[str, ...]
) -> None:
    """Only required fields' columns (and ``detect``) identify an export; optional ones may be gone.

    Without a track_id, title and artist make the id, so they are needed too.
    """
    header = [c for c in TOP2000_HEADER.split(",") if c not in dropped]
    if "Title" in dropped:
        with pytest.raises(MappingError, match=r"matches no known export"):
            detect_mapping(lambda _: header, "x.csv")
        return
    mapping, found = detect_mapping(lambda _: header, "x.csv")
    assert mapping.name == "spotify_top2000" and found == header
    columns = resolve_columns(mapping, header, "x.csv")
    assert columns == {k: v for k, v in mapping.columns.items() if v in header}
    assert absent_fields(mapping, columns) == absent


def test_a_missing_required_column_is_one_error_naming_it() -> None:
    mapping = next(m for m in shipped_mappings() if m.name == "spotify_top2000")
    header = [c for c in TOP2000_HEADER.split(",") if c not in ("Energy", "Popularity")]
    with pytest.raises(MappingError, match=r"column\(s\) \['Energy'\] are not in its header"):
        resolve_columns(mapping, header, "x.csv")


def test_every_canonical_field_can_be_mapped() -> None:
    """A mapping that names every canonical field by its own name is valid (the identity export)."""
    mapping = parse_mapping({"name": "identity", "fields": {c: c for c in TRACK_COLUMNS}}, "x")
    assert mapping.columns == {c: c for c in TRACK_COLUMNS} and not mapping.derives_track_id
