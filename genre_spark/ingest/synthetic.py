"""A synthetic Spotify-like catalogue, generated in Spark, for tests, demos and benchmarks.

Each row is a function of its ``id`` and the seed only: uniforms come from
``xxhash64(id, seed, salt)`` and normals from Box-Muller over two of them, so
the catalogue is the same however it is partitioned, and any size can be
generated on executors without a driver-side list of rows.

Genres have overlapping, correlated feature distributions shaped like
Spotify's (energy drives loudness and, negatively, acousticness; hip-hop is
speechy; classical and jazz are acoustic and instrumental; electronic and
hip-hop skew recent), tuned so a plain classifier reaches roughly 75-85 %
accuracy rather than 100 %. A share of rows is broken the ways real feeds
break (``bad_fraction``) and a share are true outliers (``outlier_fraction``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from genre_spark.config import Settings, SyntheticSettings
from genre_spark.errors import UsageError
from genre_spark.ingest.genres import coarse_genre, load_genre_map
from genre_spark.ingest.land import IngestSummary, land, refresh_silver
from genre_spark.lake import Lake
from genre_spark.lake.catalog import raw_row_schema
from genre_spark.schema import INGESTED_AT, REJECT_REASON, SOURCE

SOURCE_NAME = "synthetic"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SPOTIFY_ID_LENGTH = 22

#: How far each genre's tracks spread around its profile: the difficulty knob
#: (0.7 gives ~80 % accuracy with logistic regression or a random forest).
SPREAD = 0.7


class SyntheticGenreError(UsageError):
    """A synthetic genre that the configured genre map would rename or reject."""


@dataclass(frozen=True)
class GenreProfile:
    """A genre's typical track: centres of the feature distributions, in Spotify's units."""

    tempo: float
    tempo_sd: float
    energy: float
    danceability: float
    loudness: float
    liveness: float
    valence: float
    duration_s: float
    acousticness: float
    speechiness: float
    instrumental_share: float
    major_share: float
    year: float
    year_sd: float
    popularity: float


PROFILES: dict[str, GenreProfile] = {
    "pop": GenreProfile(
        118, 22, 0.66, 0.66, -6.5, 0.16, 0.52, 212, 0.2, 0.06, 0.02, 0.62, 2008, 12, 52
    ),
    "rock": GenreProfile(
        124, 26, 0.72, 0.5, -7.0, 0.2, 0.5, 242, 0.12, 0.05, 0.06, 0.7, 1992, 15, 44
    ),
    "hip-hop": GenreProfile(
        104, 26, 0.64, 0.76, -6.8, 0.2, 0.48, 222, 0.14, 0.22, 0.02, 0.52, 2011, 8, 50
    ),
    "electronic": GenreProfile(
        125, 14, 0.78, 0.66, -5.8, 0.2, 0.4, 262, 0.06, 0.07, 0.45, 0.5, 2013, 7, 42
    ),
    "jazz": GenreProfile(
        112, 30, 0.38, 0.56, -11.5, 0.16, 0.5, 290, 0.66, 0.05, 0.3, 0.6, 1976, 17, 34
    ),
    "classical": GenreProfile(
        102, 30, 0.2, 0.34, -17.5, 0.13, 0.28, 330, 0.88, 0.045, 0.75, 0.6, 1986, 18, 30
    ),
    "country": GenreProfile(
        120, 26, 0.6, 0.58, -7.4, 0.17, 0.6, 208, 0.32, 0.04, 0.02, 0.85, 2002, 14, 46
    ),
    "metal": GenreProfile(
        132, 28, 0.9, 0.42, -5.0, 0.21, 0.32, 268, 0.02, 0.07, 0.18, 0.55, 1999, 12, 40
    ),
    "r&b": GenreProfile(
        102, 24, 0.56, 0.67, -7.6, 0.15, 0.5, 236, 0.24, 0.1, 0.02, 0.48, 2004, 13, 46
    ),
    "latin": GenreProfile(
        112, 24, 0.72, 0.72, -5.6, 0.18, 0.66, 214, 0.2, 0.08, 0.01, 0.6, 2013, 8, 52
    ),
}

ARTIST_WORDS = (
    ("The", "Los", "DJ", "Little", "Big", "MC", "Saint", "Lady", "Young", "Old", "Lil", "Die"),
    ("Velvet", "Neon", "Golden", "Silent", "Electric", "Crimson", "Midnight", "Paper",
     "Wild", "Blue", "Iron", "Sunny", "Broken", "Lucky", "Northern", "Glass"),
    ("Owls", "Riders", "Echo", "Kings", "Rivers", "Ghosts", "Lights", "Hearts",
     "Machines", "Sisters", "Wolves", "Dreamers", "Tigers", "Saints", "Waves", "Rebels"),
)  # fmt: skip
TITLE_WORDS = (
    ("Midnight", "Summer", "Lonely", "Burning", "Endless", "Sweet", "Broken", "Golden",
     "Electric", "Silver", "Wild", "Quiet", "Falling", "Dancing", "Last", "Crazy"),
    ("Heart", "Road", "Dreams", "Night", "Fire", "Rain", "Love", "City",
     "Sky", "Eyes", "Train", "Ocean", "Song", "Light", "Shadow", "Home"),
)  # fmt: skip

#: Bad-row kinds, in order; each bad row gets one, chosen by a uniform.
BAD_KINDS = ("null", "unparseable", "out_of_range", "duplicate", "conflicting", "unknown_genre")
NULLABLE_REQUIRED = ("track_id", "genre", "tempo", "energy", "loudness", "acousticness")
UNPARSEABLE = ("abc", "n/a", "1,5", "--", "0.5.1", "loud")
OUT_OF_RANGE = {
    "energy": "1.7",
    "tempo": "-12.0",
    "loudness": "21.5",
    "danceability": "-0.3",
    "duration_ms": "0",
    "year": "1850",
    "popularity": "140",
    "key": "14",
}


def _profile(genre: str) -> GenreProfile:
    """The genre's profile; a genre without one blends two known profiles, picked by its name."""
    if genre in PROFILES:
        return PROFILES[genre]
    digest = hashlib.sha256(genre.encode()).digest()
    names = sorted(PROFILES)
    a, b = PROFILES[names[digest[0] % len(names)]], PROFILES[names[digest[1] % len(names)]]
    w = 0.25 + 0.5 * digest[2] / 255
    return GenreProfile(
        *[w * getattr(a, f.name) + (1 - w) * getattr(b, f.name) for f in fields(GenreProfile)]
    )


class _Draws:
    """Per-row random numbers that depend only on (id, seed, salt)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def uniform(self, salt: str, key: Column | None = None) -> Column:
        """U[0, 1) from the top 53 bits of a 64-bit hash: uniform and exactly reproducible."""
        h = F.xxhash64(key if key is not None else F.col("id"), F.lit(self.seed), F.lit(salt))
        return (F.shiftrightunsigned(h, 11).cast("double") + 0.5) / float(2**53)

    def normal(self, salt: str) -> Column:
        """N(0, 1) by Box-Muller from two independent uniforms."""
        radius = F.sqrt(-2.0 * F.log(self.uniform(f"{salt}:r")))
        return radius * F.cos(2.0 * math.pi * self.uniform(f"{salt}:t"))

    def pick(self, salt: str, n: int, key: Column | None = None) -> Column:
        """An integer in [0, n), uniformly."""
        return F.floor(self.uniform(salt, key) * n).cast("int")


def _per_genre(values: Sequence[float], genre_idx: Column) -> Column:
    """A genre's parameter as a column: an array literal indexed by the row's genre."""
    return F.element_at(F.array(*[F.lit(float(v)) for v in values]), genre_idx + 1)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _score(centre: Column, spread: float, noise: Column) -> Column:
    """A 0-1 score: a logistic curve around the genre's centre (given on the logit scale)."""
    return 1.0 / (1.0 + F.exp(-(centre + SPREAD * spread * noise)))


def _clip(value: Column, low: float, high: float) -> Column:
    return F.least(F.greatest(value, F.lit(low)), F.lit(high))


def _features(d: _Draws, profiles: list[GenreProfile], g: Column) -> dict[str, Column]:
    """Clean feature columns for a row of genre index ``g``, with Spotify-like correlations."""

    def centre(name: str, logit: bool = False) -> Column:
        values = [getattr(p, name) for p in profiles]
        return _per_genre([_logit(v) if logit else v for v in values], g)

    drive, groove = d.normal("drive"), d.normal("groove")
    energy = _score(centre("energy", True), 0.75, drive)
    instrumental = d.uniform("instrumental") < centre("instrumental_share")
    tempo = centre("tempo") + SPREAD * centre("tempo_sd") * d.normal("tempo")
    year = centre("year") + centre("year_sd") * d.normal("year")
    return {
        "tempo": _clip(tempo, 55.0, 215.0),
        "energy": energy,
        "danceability": _score(centre("danceability", True), 0.5, groove),
        "loudness": _clip(
            centre("loudness") + SPREAD * (2.2 * drive + 1.6 * d.normal("loudness")), -40.0, -1.0
        ),
        "liveness": _score(centre("liveness", True), 0.55, d.normal("liveness")),
        "valence": _score(centre("valence", True), 0.7, 0.55 * groove + 0.84 * d.normal("valence")),
        "duration_ms": 1000.0
        * F.exp(F.log(centre("duration_s")) + SPREAD * 0.22 * d.normal("duration")),
        "acousticness": _score(
            centre("acousticness", True), 1.2, -0.55 * drive + 0.84 * d.normal("acoustic")
        ),
        "speechiness": _score(centre("speechiness", True), 0.55, d.normal("speech")),
        "instrumentalness": F.when(
            instrumental, _score(F.lit(1.2), 1.0, d.normal("instrumentalness"))
        ).otherwise(_score(F.lit(-6.0), 1.5, d.normal("instrumentalness"))),
        "key": F.when(d.uniform("keyless") < 0.01, F.lit(-1)).otherwise(d.pick("key", 12)),
        "mode": (d.uniform("mode") < centre("major_share")).cast("int"),
        "year": _clip(F.round(year), 1960.0, 2025.0),
        "popularity": _clip(
            F.round(centre("popularity") + 0.25 * (year - 2000.0) + 18.0 * d.normal("pop")),
            0.0,
            100.0,
        ),
    }


def _outlier_features(d: _Draws) -> dict[str, Column]:
    """Extreme yet valid values, each feature independently at one end: far from every genre."""

    def extreme(name: str, low: tuple[float, float], high: tuple[float, float]) -> Column:
        at_low = d.uniform(f"outlier:{name}:end") < 0.5
        u = d.uniform(f"outlier:{name}")
        return F.when(at_low, low[0] + u * (low[1] - low[0])).otherwise(
            high[0] + u * (high[1] - high[0])
        )

    unit = ((0.0, 0.03), (0.97, 1.0))
    scores = ("energy", "danceability", "liveness", "valence", "acousticness", "speechiness")
    return {
        **{name: extreme(name, *unit) for name in scores},
        "instrumentalness": extreme("instrumentalness", *unit),
        "tempo": extreme("tempo", (35.0, 45.0), (235.0, 260.0)),
        "loudness": extreme("loudness", (-48.0, -40.0), (-1.0, 0.0)),
        "duration_ms": extreme("duration_ms", (20_000.0, 40_000.0), (1_500_000.0, 2_400_000.0)),
    }


def _spotify_id(d: _Draws, key: Column) -> Column:
    """22 base62 characters, like a Spotify track id: 11 digits from each of two 63-bit hashes."""
    half = SPOTIFY_ID_LENGTH // 2
    chars = []
    for part in ("a", "b"):
        h = F.shiftrightunsigned(F.xxhash64(key, F.lit(d.seed), F.lit(f"id:{part}")), 1)
        for i in range(half):
            digit = F.pmod(F.floor(h / F.lit(62**i)), F.lit(62)).cast("int")
            chars.append(F.substring(F.lit(BASE62), digit + 1, 1))
    return F.concat(*chars)


def _words(d: _Draws, salt: str, lists: Sequence[Sequence[str]], key: Column) -> Column:
    parts = [
        F.element_at(
            F.array(*[F.lit(w) for w in words]), d.pick(f"{salt}:{i}", len(words), key) + 1
        )
        for i, words in enumerate(lists)
    ]
    return F.concat_ws(" ", *parts)


def _as_text(value: Column, decimals: int | None) -> Column:
    rounded = F.round(value, decimals) if decimals is not None else value.cast("long")
    return rounded.cast("string")


def _bad_kind(d: _Draws, bad_fraction: float) -> Column:
    """Index into BAD_KINDS for a bad row, null for a good one."""
    return F.when(d.uniform("bad") < bad_fraction, d.pick("bad:kind", len(BAD_KINDS)))


def _track_key(kind: Column, n_genres: int) -> Column:
    """The id whose track_id a row carries: its own, or a same-genre / next row's for reused ids.

    Genres take turns by id, so ``id ± n_genres`` has the same genre and
    ``id + 1`` (with at least two genres) a different one.
    """
    same_genre = F.when(F.col("id") >= n_genres, F.col("id") - n_genres).otherwise(
        F.col("id") + n_genres
    )
    return (
        F.when(kind == BAD_KINDS.index("duplicate"), same_genre)
        .when(kind == BAD_KINDS.index("conflicting"), F.col("id") + 1)
        .otherwise(F.col("id"))
    )


def _corrupt(d: _Draws, values: dict[str, Column], kind: Column) -> dict[str, Column]:
    """Break a bad row: a null, junk text, an impossible value or a bad genre (ids: ``_track_key``)."""
    null_field = d.pick("bad:null", len(NULLABLE_REQUIRED))
    junk_field = d.pick("bad:junk", len(OUT_OF_RANGE))
    junk = F.element_at(F.array(*[F.lit(v) for v in UNPARSEABLE]), d.pick("bad:text", 6) + 1)
    broken = dict(values)
    for name in values:
        if name in NULLABLE_REQUIRED:
            i = NULLABLE_REQUIRED.index(name)
            nulled = (kind == BAD_KINDS.index("null")) & (null_field == i)
            broken[name] = F.when(nulled, F.lit(None)).otherwise(broken[name])
        if name in OUT_OF_RANGE:
            i = list(OUT_OF_RANGE).index(name)
            hit = junk_field == i
            broken[name] = (
                F.when((kind == BAD_KINDS.index("unparseable")) & hit, junk)
                .when((kind == BAD_KINDS.index("out_of_range")) & hit, F.lit(OUT_OF_RANGE[name]))
                .otherwise(broken[name])
            )
    broken["genre"] = F.when(
        kind == BAD_KINDS.index("unknown_genre"),
        F.element_at(
            F.array(F.lit("unknown"), F.lit("N/A"), F.lit("other")), d.pick("bad:g", 3) + 1
        ),
    ).otherwise(broken["genre"])
    return broken


def generate(spark: SparkSession, cfg: SyntheticSettings) -> DataFrame:
    """``cfg.tracks`` rows in ``catalog.raw_row_schema()``, source "synthetic", values as strings.

    Deterministic in ``cfg.seed`` and independent of ``cfg.partitions``.
    Genres take turns by id, so they are balanced; about ``bad_fraction`` of
    the rows are broken (see ``BAD_KINDS``) and ``outlier_fraction`` of the
    rest carry extreme feature values.
    """
    d = _Draws(cfg.seed)
    n_genres = len(cfg.genres)
    rows = spark.range(cfg.tracks, numPartitions=cfg.partitions).select(
        "id",
        F.pmod(F.col("id") + F.lit(cfg.seed), F.lit(n_genres)).cast("int").alias("_g"),
        _bad_kind(d, cfg.bad_fraction).alias("_kind"),
        (d.uniform("outlier") < cfg.outlier_fraction).alias("_outlier"),
    )
    g, kind = F.col("_g"), F.col("_kind")
    clean = _features(d, [_profile(name) for name in cfg.genres], g)
    extremes = _outlier_features(d)
    numbers = rows.select(
        "*",
        *[
            (
                F.when(F.col("_outlier"), extremes[name]).otherwise(value)
                if name in extremes
                else value
            ).alias(name)
            for name, value in clean.items()
        ],
    )
    # Built in stages (ids and genres, then numbers, then text) so that each
    # projection stays small enough for Spark's code generator.
    decimals = {"tempo": 3, "loudness": 3, "duration_ms": None, "instrumentalness": 6}
    values: dict[str, Column] = {
        "track_id": _spotify_id(d, _track_key(kind, n_genres)),
        "title": _words(d, "title", TITLE_WORDS, F.col("id")),
        "artist": _words(d, "artist", ARTIST_WORDS, g * 1000 + d.pick("artist", 150)),
        "genre": F.element_at(F.array(*[F.lit(x) for x in cfg.genres]), g + 1),
        **{name: _as_text(F.col(name), decimals.get(name, 4)) for name in clean},
    }
    for name in ("year", "key", "mode", "popularity"):
        values[name] = _as_text(F.col(name), None)
    values = _corrupt(d, values, kind)
    values[SOURCE] = F.lit(SOURCE_NAME)
    values["source_row"] = F.col("id")
    values[REJECT_REASON] = F.lit(None)
    values[INGESTED_AT] = F.current_timestamp()
    return numbers.select(
        *[values[f.name].cast(f.dataType).alias(f.name) for f in raw_row_schema().fields]
    )


def check_genres(spark: SparkSession, genres: Sequence[str], genre_map_spec: str | None) -> None:
    """Fail early when the genre map would rename or reject a synthetic genre.

    A tiny DataFrame of the configured names goes through the same expression
    as the real rows, so this can never disagree with ``coarsen``.
    """
    names = spark.createDataFrame([(g,) for g in genres], "genre string")
    mapped = names.select(
        "genre", coarse_genre(F.col("genre"), load_genre_map(genre_map_spec)).alias("to")
    )
    changed = {r["genre"]: r["to"] for r in mapped.collect() if r["genre"] != r["to"]}
    if changed:
        raise SyntheticGenreError(
            f"the genre map {genre_map_spec!r} changes synthetic genre(s) {changed}; "
            "use genres the map keeps, or --set validation.genre_map=none"
        )


def run(lake: Lake, settings: Settings) -> IngestSummary:
    """Generate the catalogue, land it as source "synthetic", rebuild silver."""
    cfg = settings.ingest.synthetic
    check_genres(lake.spark, cfg.genres, settings.validation.genre_map)
    land(lake, generate(lake.spark, cfg), SOURCE_NAME)
    return refresh_silver(lake, settings)
