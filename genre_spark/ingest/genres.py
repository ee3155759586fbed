"""Genre labels: coarsen fine labels onto a few genres, and pick the genres to learn.

Real catalogues label tracks with hundreds of fine genres ("album rock",
"dutch pop"), most with a handful of tracks: no classifier learns those. A
genre map (YAML, see ``resources/genre_map.yaml``) folds them onto a few
coarse genres with column expressions, so coarsening runs on executors at any
scale. ``select_genres`` then keeps the largest genres and caps each one, and
every row it leaves out becomes a quarantine row with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from genre_spark.errors import GenreError
from genre_spark.ingest.validate import quarantine_rows
from genre_spark.schema import REJECT_REASON

DEFAULT_MAP = "default"
IDENTITY_MAPS = ("none", "identity")
UNKNOWN_GENRE = "unknown_genre"
NOT_IN_TOP_N = "genre_not_in_top_n"
OVER_CAP = "over_genre_cap"

#: Labels that say "no genre" rather than naming one; used by the identity map too.
UNKNOWN_LABELS: tuple[str, ...] = ("unknown", "n/a", "na", "none", "null", "other", "-", "?")


class GenreMapError(GenreError):
    """A genre map file that is missing or malformed."""


@dataclass(frozen=True)
class GenreMap:
    """How fine labels become coarse genres; see ``resources/genre_map.yaml`` for the rules.

    ``exact`` is looked up first, then the ordered ``rules`` (regex, genre);
    a label neither names is kept (``unmapped="keep"``) or rejected as unknown.
    """

    exact: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[tuple[str, str], ...] = ()
    unknown: frozenset[str] = frozenset(UNKNOWN_LABELS)
    unmapped: Literal["keep", "unknown"] = "keep"

    @property
    def genres(self) -> list[str]:
        """The coarse genres this map can produce (empty for the identity map)."""
        return sorted(set(self.exact.values()) | {genre for _, genre in self.rules})


@dataclass(frozen=True)
class GenreReport:
    """Per-genre counts before and after selection, and the genres below the minimum."""

    counts_before: dict[str, int]
    counts: dict[str, int]
    kept: list[str]
    short_genres: list[str]


def normalise_label(label: str) -> str:
    """The driver-side twin of ``_normalised``: trim, lower-case, collapse whitespace."""
    return re.sub(r"\s+", " ", label.strip().lower())


def load_genre_map(spec: str | None) -> GenreMap:
    """``"default"``: the packaged map; a path: that YAML file; ``None``/``"none"``: labels as given.

    ``"none"`` exists because a command line cannot pass a null (``--set
    validation.genre_map=none``).
    """
    if spec is None or spec.lower() in IDENTITY_MAPS:
        return GenreMap()
    if spec == DEFAULT_MAP:
        text = resources.files("genre_spark").joinpath("resources", "genre_map.yaml").read_text()
        return parse_genre_map(yaml.safe_load(text), "default genre map")
    path = Path(spec)
    if not path.is_file():
        raise GenreMapError(
            f"genre map file not found: {spec} (use 'default', 'none' or a YAML path)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GenreMapError(f"{spec}: not valid YAML: {exc}") from None
    return parse_genre_map(data, spec)


def parse_genre_map(data: Any, where: str) -> GenreMap:
    """Check a map's structure and regexes at load time, so a typo fails before Spark runs."""
    if not isinstance(data, dict):
        raise GenreMapError(f"{where}: expected a mapping with exact/rules/unknown/unmapped")
    extra = set(data) - {"exact", "rules", "unknown", "unmapped"}
    if extra:
        raise GenreMapError(f"{where}: unknown key(s) {sorted(extra)}")
    unmapped = data.get("unmapped", "keep")
    if unmapped not in ("keep", "unknown"):
        raise GenreMapError(f"{where}: unmapped must be 'keep' or 'unknown', got {unmapped!r}")
    exact_raw = data.get("exact") or {}
    if not isinstance(exact_raw, dict):
        raise GenreMapError(f"{where}: exact must map labels to genres")
    exact = {normalise_label(str(k)): str(v) for k, v in exact_raw.items()}
    rules = []
    for i, rule in enumerate(data.get("rules") or []):
        if not isinstance(rule, dict) or set(rule) != {"pattern", "genre"}:
            raise GenreMapError(f"{where}: rule {i} must be {{pattern: ..., genre: ...}}")
        try:
            re.compile(rule["pattern"])
        except re.error as exc:
            raise GenreMapError(f"{where}: rule {i} pattern {rule['pattern']!r}: {exc}") from None
        rules.append((str(rule["pattern"]), str(rule["genre"])))
    unknown = frozenset(normalise_label(str(u)) for u in data.get("unknown", UNKNOWN_LABELS))
    return GenreMap(exact=exact, rules=tuple(rules), unknown=unknown, unmapped=unmapped)


def _normalised(column: Column) -> Column:
    return F.lower(F.regexp_replace(F.trim(column), r"\s+", " "))


def coarse_genre(label: Column, genre_map: GenreMap) -> Column:
    """The coarse genre of ``label``: null when empty, unknown, or unmapped under ``unknown``."""
    norm = _normalised(label)
    expr = F.when(norm.isNull() | (norm == "") | norm.isin(*sorted(genre_map.unknown)), None)
    if genre_map.exact:
        lookup = F.create_map(*[F.lit(x) for kv in sorted(genre_map.exact.items()) for x in kv])
        expr = expr.when(lookup[norm].isNotNull(), lookup[norm])
    for pattern, genre in genre_map.rules:
        expr = expr.when(norm.rlike(pattern), F.lit(genre))
    return expr.otherwise(norm if genre_map.unmapped == "keep" else F.lit(None))


def coarsen(raw: DataFrame, genre_map: GenreMap) -> DataFrame:
    """Replace ``genre`` by its coarse genre; a non-empty label that maps to none is rejected.

    Such a row keeps a null genre and gets ``reject_reason = "unknown_genre"``
    (unless a source already rejected it), so validation quarantines it under
    that reason rather than as a missing genre. An empty label stays empty and
    is quarantined as ``missing:genre``. Attach the as-received ``record``
    first (``validate.with_record``) to keep the fine label in the quarantine.
    """
    coarse = coarse_genre(F.col("genre"), genre_map)
    given = F.trim(F.col("genre")) != ""
    rejected = F.coalesce(given & coarse.isNull(), F.lit(False))
    reason = F.nullif(F.trim(F.col(REJECT_REASON)), F.lit(""))
    return raw.withColumns(
        {
            "genre": coarse,
            REJECT_REASON: F.when(rejected, F.coalesce(reason, F.lit(UNKNOWN_GENRE))).otherwise(
                F.col(REJECT_REASON)
            ),
        }
    )


def select_genres(
    silver: DataFrame,
    top_genres: int | None,
    cap_per_genre: int | None,
    min_per_genre: int | None,
) -> tuple[DataFrame, DataFrame, GenreReport]:
    """Keep the ``top_genres`` largest genres, at most ``cap_per_genre`` tracks each.

    Returns (kept silver rows, quarantine rows for the rest, report). Ties in
    genre size break by name, and a cap keeps the tracks with the smallest
    ``xxhash64(track_id)``: the same catalogue always gives the same selection,
    and a track's fate does not depend on partitioning. The per-genre counts
    are a small aggregate, so they come to the driver.
    """
    counts_before = {
        row["genre"]: int(row["count"]) for row in silver.groupBy("genre").count().collect()
    }
    ranked = sorted(counts_before, key=lambda g: (-counts_before[g], g))
    kept = sorted(ranked[:top_genres] if top_genres is not None else ranked)
    reason = F.when(~F.col("genre").isin(*kept), F.lit(NOT_IN_TOP_N))
    if cap_per_genre is not None:
        order = Window.partitionBy("genre").orderBy(F.xxhash64("track_id"), "track_id")
        reason = reason.when(F.row_number().over(order) > cap_per_genre, F.lit(OVER_CAP))
    decided = silver.withColumn("_reason", reason)
    kept_rows = decided.filter(F.col("_reason").isNull()).drop("_reason")
    quarantine = quarantine_rows(decided.filter(F.col("_reason").isNotNull()), F.col("_reason"))
    counts = {g: min(counts_before[g], cap_per_genre or counts_before[g]) for g in kept}
    floor = min_per_genre or 0
    report = GenreReport(
        counts_before=counts_before,
        counts=counts,
        kept=kept,
        short_genres=[g for g in kept if counts[g] < floor],
    )
    return kept_rows, quarantine, report
