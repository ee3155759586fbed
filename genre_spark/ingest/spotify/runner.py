"""``genre ingest spotify``: tracks per genre from the Spotify Web API into the lake.

The flow, resumable at every step:

1. **Plan.** For each genre, in the order given, walk the owned playlists
   configured for it, then ``/search?q=genre:"<genre>"`` (10 per page since
   2026, following the absolute ``next``) and take the first ``per_genre``
   track ids not already taken by an earlier genre. **Genre rule:** a track's
   label is the genre whose search (or playlist) found it; a track found by
   several genres belongs to the first of them in ``--genres`` order, so no
   track is requested twice. Artist genres are kept in bronze for reference
   only. The plan is stored as ``plan`` rows under a plan id (a hash of the
   arguments), so a re-run with the same arguments asks for the same tracks.
2. **Fetch.** Audio features from the configured provider in batches, then
   each track (``/tracks/{id}``, one at a time since 2026) and its first
   artist (``/artists/{id}``, once per artist). A track that cannot be
   completed is recorded as a tombstone with its reason (``track_not_found``,
   ``no_audio_features``, ``malformed_response``), so it reaches quarantine.
3. **Checkpoint.** Every response lands in ``bronze.spotify_responses`` as it
   arrives, ``checkpoint_batch`` rows per atomic commit. A run that is killed,
   rate-limited beyond the cap or cut off by an outage is resumed by running
   the same command again: only what bronze does not have yet is fetched.
4. **Flatten.** In Spark: plan ⋈ tracks ⋈ features -> ``bronze.tracks_raw``
   rows (``land(source="spotify")``) -> ``refresh_silver``. Every planned track
   ends in silver or in quarantine, exactly once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from genre_spark.config import Settings, SpotifySettings
from genre_spark.ingest.land import IngestSummary, land, refresh_silver
from genre_spark.ingest.providers import AudioFeatureProvider, make_provider
from genre_spark.ingest.spotify_client import (
    IngestStop,
    MalformedResponseError,
    NotFoundError,
    SpotifyClient,
    load_credentials,
)
from genre_spark.lake import Lake
from genre_spark.schema import FEATURES, INGESTED_AT, REJECT_REASON, SOURCE, raw_schema

log = logging.getLogger(__name__)

RESPONSES = "bronze.spotify_responses"
SOURCE_NAME = "spotify"
PLAYLIST_PAGE = 50

#: Reasons a requested track lands in quarantine instead of silver.
TRACK_NOT_FOUND = "track_not_found"
NO_AUDIO_FEATURES = "no_audio_features"
MALFORMED_RESPONSE = "malformed_response"
NOT_FETCHED = "not_fetched"

#: Feature fields read from either provider's object (Spotify units, as received):
#: the model's features plus key and mode.
FEATURE_FIELDS = (*FEATURES, "key", "mode")


def responses_schema() -> T.StructType:
    """bronze.spotify_responses: one row per fetched object (or tombstone), keyed by request."""
    return T.StructType(
        [
            T.StructField("request_key", T.StringType(), nullable=False),
            T.StructField("kind", T.StringType(), nullable=False),
            T.StructField("object_id", T.StringType()),
            T.StructField("genre", T.StringType()),
            T.StructField("position", T.LongType()),
            T.StructField("provider", T.StringType()),
            T.StructField("status", T.IntegerType()),
            T.StructField("body", T.StringType()),
            T.StructField(REJECT_REASON, T.StringType()),
            T.StructField("fetched_at", T.TimestampType()),
        ]
    )


# --- the request and its plan -------------------------------------------------------


@dataclass(frozen=True)
class PlannedTrack:
    track_id: str
    genre: str
    position: int


def plan_id(settings: SpotifySettings) -> str:
    """Same arguments, same id: what makes a re-run resume instead of starting over."""
    request = {
        "genres": settings.genres,
        "per_genre": settings.per_genre,
        "playlists": {g: settings.playlists.get(g, []) for g in settings.genres},
        "search_limit": settings.search_limit,
        "market": settings.market,
    }
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def _offset_of(url: str) -> str:
    return parse_qs(urlparse(url).query).get("offset", ["0"])[0]


def _search_ids(page: dict[str, Any]) -> list[str | None]:
    return [item.get("id") if isinstance(item, dict) else None for item in page["items"]]


def _playlist_ids(page: dict[str, Any]) -> list[str | None]:
    """Playlist items are ``{added_at, added_by, is_local, item}``; local files have no id."""
    ids: list[str | None] = []
    for entry in page["items"]:
        item = entry.get("item") if isinstance(entry, dict) else None
        usable = (
            isinstance(item, dict)
            and not entry.get("is_local")
            and (item.get("type") or "track") == "track"
        )
        ids.append(item.get("id") if usable else None)
    return ids


# --- bronze: writing ------------------------------------------------------------------


def response_row(
    kind: str,
    request_key: str,
    object_id: str | None,
    body: Any = None,
    *,
    genre: str | None = None,
    position: int | None = None,
    provider: str = SOURCE_NAME,
    status: int = 200,
    reject_reason: str | None = None,
) -> tuple[Any, ...]:
    """A row of bronze.spotify_responses; the body is kept as received, as JSON text."""
    text = json.dumps(body, sort_keys=True) if body is not None else None
    now = datetime.now(timezone.utc)
    return (
        request_key,
        kind,
        object_id,
        genre,
        position,
        provider,
        status,
        text,
        reject_reason,
        now,
    )


class ResponseStore:
    """Buffers responses and appends them to bronze, ``checkpoint_batch`` per atomic commit."""

    def __init__(self, lake: Lake, checkpoint_batch: int) -> None:
        self.lake = lake
        self.checkpoint_batch = checkpoint_batch
        self.buffer: list[tuple[Any, ...]] = []
        self.commits = 0
        self.rows = 0

    def add(
        self, kind: str, request_key: str, object_id: str | None, body: Any = None, **kw: Any
    ) -> None:
        """Buffer one response; a full buffer is committed."""
        self.buffer.append(response_row(kind, request_key, object_id, body, **kw))
        if len(self.buffer) >= self.checkpoint_batch:
            self.flush()

    def commit(self, rows: list[tuple[Any, ...]]) -> None:
        """Commit the buffer and ``rows`` now, in one commit: ``rows`` land all or not at all."""
        self.buffer.extend(rows)
        self.flush()

    def flush(self) -> None:
        """One atomic commit of everything buffered (a no-op when empty)."""
        if not self.buffer:
            return
        df = self.lake.spark.createDataFrame(self.buffer, responses_schema())
        self.lake.write(df, RESPONSES, mode="append")
        self.commits += 1
        self.rows += len(self.buffer)
        log.info("checkpoint: %d responses committed to %s", len(self.buffer), RESPONSES)
        self.buffer = []


# --- bronze: what a previous run already has (small keyed lookups) ------------------


def _latest(responses: DataFrame, *kinds: str) -> DataFrame:
    """The newest row per request key among the given kinds."""
    newest = Window.partitionBy("kind", "request_key").orderBy(F.col("fetched_at").desc())
    return (
        responses.where(F.col("kind").isin(*kinds))
        .withColumn("_n", F.row_number().over(newest))
        .where("_n = 1")
        .drop("_n")
    )


def _stored_plan(lake: Lake, pid: str) -> list[PlannedTrack] | None:
    if not lake.exists(RESPONSES):
        return None
    rows = (
        lake.read(RESPONSES)
        .where((F.col("kind") == "plan") & F.col("request_key").startswith(f"plan|{pid}|"))
        .select("object_id", "genre", "position")
        .distinct()
        .orderBy("position")
        .collect()
    )
    return [PlannedTrack(r.object_id, r.genre, r.position) for r in rows] or None


@dataclass(frozen=True)
class PageSummary:
    ids: list[str | None]
    next: str | None


def _stored_pages(lake: Lake, genres: list[str]) -> dict[str, PageSummary]:
    """Ids and ``next`` of the search/playlist pages stored for these genres (no bodies)."""
    if not lake.exists(RESPONSES):
        return {}
    pages = lake.read(RESPONSES).where(
        F.col("kind").isin("search", "playlist_items") & F.col("genre").isin(*genres)
    )
    search = F.from_json("body", "items array<struct<id: string>>, next string")
    playlist = F.from_json(
        "body",
        "items array<struct<is_local: boolean, item: struct<id: string, type: string>>>, next string",
    )
    stored = {}
    for r in pages.select("request_key", "kind", search.alias("s"), playlist.alias("p")).collect():
        page = (r.s if r.kind == "search" else r.p).asDict(recursive=True)
        page["items"] = page["items"] or []
        ids_of = _search_ids if r.kind == "search" else _playlist_ids
        stored[r.request_key] = PageSummary(ids_of(page), page["next"])
    return stored


@dataclass
class Progress:
    """What bronze already holds for the plan's tracks."""

    tracks: set[str] = field(default_factory=set)
    features: dict[str, str] = field(default_factory=dict)
    artist_of: dict[str, str] = field(default_factory=dict)
    artists: set[str] = field(default_factory=set)


def _stored_progress(lake: Lake, plan: list[PlannedTrack]) -> Progress:
    if not lake.exists(RESPONSES):
        return Progress()
    wanted = lake.spark.createDataFrame([(p.track_id,) for p in plan], "object_id string")
    responses = lake.read(RESPONSES)
    done = (
        responses.where(F.col("kind").isin("track", "audio_features"))
        .join(wanted, "object_id", "left_semi")
        .select(
            "kind",
            "object_id",
            "provider",
            F.get_json_object("body", "$.artists[0].id").alias("artist_id"),
        )
        .collect()
    )
    progress = Progress()
    for r in done:
        if r.kind == "track":
            progress.tracks.add(r.object_id)
            if r.artist_id:
                progress.artist_of[r.object_id] = r.artist_id
        else:
            progress.features[r.object_id] = r.provider
    artist_ids = set(progress.artist_of.values())
    if artist_ids:
        wanted_artists = lake.spark.createDataFrame([(a,) for a in artist_ids], "object_id string")
        progress.artists = {
            r.object_id
            for r in responses.where(F.col("kind") == "artist")
            .join(wanted_artists, "object_id", "left_semi")
            .select("object_id")
            .collect()
        }
    return progress


# --- progress display ---------------------------------------------------------------


class ProgressSink(AbstractContextManager["ProgressSink"]):
    """Tracks done / target per genre. The base class shows nothing (tests, library use)."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Nothing to close."""

    def start(self, genre: str, total: int, done: int = 0) -> None:
        """A genre's bar: ``total`` tracks planned, ``done`` already fetched."""

    def advance(self, genre: str) -> None:
        """One more of the genre's tracks is complete (fetched or tombstoned)."""

    def searching(self, genre: str) -> None:
        """Planning has reached this genre."""


class RichProgress(ProgressSink):
    """A rich progress bar per genre on stderr."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
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
            console=console or Console(stderr=True),
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def searching(self, genre: str) -> None:
        self.progress.console.log(f"planning: searching {genre}")

    def start(self, genre: str, total: int, done: int = 0) -> None:
        self.tasks[genre] = self.progress.add_task(genre, total=total, completed=done)

    def advance(self, genre: str) -> None:
        self.progress.advance(self.tasks[genre])


@contextmanager
def log_to(console: Any, verbose: bool) -> Iterator[None]:
    """The ingester's log (every wait, every checkpoint) on the CLI's console, for one run.

    spotipy logs an ERROR for every failed attempt, including those the retry
    policy handles: it is silenced unless ``verbose``.
    """
    from rich.logging import RichHandler

    ours, spotipy_log = logging.getLogger("genre_spark"), logging.getLogger("spotipy")
    saved = ours.level, spotipy_log.level
    handler = RichHandler(console=console, show_path=False)
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    spotipy_log.setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(saved[0])
        spotipy_log.setLevel(saved[1])


# --- the run -------------------------------------------------------------------------


@dataclass(frozen=True)
class SpotifyIngestSummary:
    plan_id: str
    requested: int
    per_genre: dict[str, int]
    providers: dict[str, int]
    commits: int
    responses: int
    faults: dict[str, Any]
    silver: IngestSummary


class SpotifyIngest:
    """One ingest run: plan, fetch with checkpoints, flatten, land, refresh silver."""

    def __init__(
        self,
        lake: Lake,
        settings: Settings,
        client: SpotifyClient,
        provider: AudioFeatureProvider | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.lake = lake
        self.settings = settings
        self.cfg = settings.ingest.spotify
        self.client = client
        self.provider = provider or make_provider(self.cfg, client)
        self.progress = progress or ProgressSink()
        self.store = ResponseStore(lake, self.cfg.checkpoint_batch)
        self.plan_id = plan_id(self.cfg)
        self.done = Progress()

    def run(self) -> SpotifyIngestSummary:
        try:
            plan = self.plan()
            self.fetch(plan)
        except (IngestStop, KeyboardInterrupt):
            self.store.flush()
            raise
        self.store.flush()
        silver = self.land()
        per_genre: dict[str, int] = {}
        for track in plan:
            per_genre[track.genre] = per_genre.get(track.genre, 0) + 1
        return SpotifyIngestSummary(
            plan_id=self.plan_id,
            requested=len(plan),
            per_genre=per_genre,
            providers=dict(Counter(self.done.features[t.track_id] for t in plan)),
            commits=self.store.commits,
            responses=self.store.rows,
            faults=self.client.stats.as_dict(),
            silver=silver,
        )

    # --- 1. plan -----------------------------------------------------------------

    def plan(self) -> list[PlannedTrack]:
        """The stored plan for these arguments, or a new one (committed in one piece)."""
        stored = _stored_plan(self.lake, self.plan_id)
        if stored is not None:
            log.info("resuming plan %s: %d tracks", self.plan_id, len(stored))
            return stored
        pages = _stored_pages(self.lake, self.cfg.genres)
        claimed: set[str] = set()
        plan: list[PlannedTrack] = []
        for genre in self.cfg.genres:
            self.progress.searching(genre)
            chosen = self._choose(genre, pages, claimed, plan)
            if chosen < self.cfg.per_genre:
                log.warning(
                    "only %d of %d tracks found for genre %r", chosen, self.cfg.per_genre, genre
                )
        self.store.commit(
            [
                response_row(
                    "plan",
                    f"plan|{self.plan_id}|{t.track_id}",
                    t.track_id,
                    genre=t.genre,
                    position=t.position,
                )
                for t in plan
            ]
        )
        return plan

    def _choose(
        self, genre: str, pages: dict[str, PageSummary], claimed: set[str], plan: list[PlannedTrack]
    ) -> int:
        chosen = 0
        for ids in self._candidates(genre, pages):
            for track_id in ids:
                if chosen == self.cfg.per_genre:
                    return chosen
                if track_id and track_id not in claimed:
                    claimed.add(track_id)
                    plan.append(PlannedTrack(track_id, genre, len(plan)))
                    chosen += 1
            if chosen == self.cfg.per_genre:
                return chosen
        return chosen

    def _candidates(self, genre: str, pages: dict[str, PageSummary]) -> Iterator[list[str | None]]:
        """Id lists, page by page: owned playlists first, then search. Pages fetched lazily."""
        for playlist in self.cfg.playlists.get(genre, []):
            yield from self._walk(
                pages,
                "playlist_items",
                genre,
                f"playlist|{playlist}",
                lambda p=playlist: self.client.playlist_items(p, PLAYLIST_PAGE),
                _playlist_ids,
            )
        limit, market = self.cfg.search_limit, self.cfg.market
        yield from self._walk(
            pages,
            "search",
            genre,
            f"search|{genre}|limit={limit}|market={market or ''}",
            lambda: self.client.search_tracks(genre, limit, market),
            _search_ids,
        )

    def _walk(
        self,
        pages: dict[str, PageSummary],
        kind: str,
        genre: str,
        prefix: str,
        first: Callable[[], dict[str, Any]],
        ids_of: Callable[[dict[str, Any]], list[str | None]],
    ) -> Iterator[list[str | None]]:
        next_url: str | None = None
        key = f"{prefix}|offset=0"
        while True:
            summary = pages.get(key)
            if summary is None:
                page = (
                    first() if next_url is None else self.client.next_page({"next": next_url}, key)
                )
                summary = PageSummary(ids_of(page), page.get("next"))
                self.store.add(kind, key, genre, page, genre=genre)
            yield summary.ids
            if not summary.next:
                return
            next_url = summary.next
            key = f"{prefix}|offset={_offset_of(next_url)}"

    # --- 2. fetch ------------------------------------------------------------------

    def fetch(self, plan: list[PlannedTrack]) -> None:
        done = self.done = _stored_progress(self.lake, plan)
        complete = {
            t.track_id for t in plan if t.track_id in done.tracks and t.track_id in done.features
        }
        for genre in self.cfg.genres:
            mine = [t.track_id for t in plan if t.genre == genre]
            self.progress.start(genre, len(mine), len(complete.intersection(mine)))
        start = 0
        while start < len(plan):
            chunk = plan[start : start + self.provider.batch_size]
            start += len(chunk)
            self._features([t.track_id for t in chunk if t.track_id not in done.features], done)
            for track in chunk:
                self._track(track.track_id, done)
                if track.track_id not in complete:
                    self.progress.advance(track.genre)

    def _features(self, track_ids: list[str], done: Progress) -> None:
        if not track_ids:
            return
        try:
            found = self.provider.fetch(track_ids)
            reason = NO_AUDIO_FEATURES
        except MalformedResponseError:
            found, reason = dict.fromkeys(track_ids), MALFORMED_RESPONSE
        for track_id in track_ids:
            features = found.get(track_id)
            self.store.add(
                "audio_features",
                f"audio_features|{track_id}",
                track_id,
                features,
                provider=self.provider.name,
                reject_reason=None if features is not None else reason,
            )
            done.features[track_id] = self.provider.name

    def _track(self, track_id: str, done: Progress) -> None:
        if track_id not in done.tracks:
            body, status, reason = self._get(self.client.track, track_id, TRACK_NOT_FOUND)
            self.store.add(
                "track", f"track|{track_id}", track_id, body, status=status, reject_reason=reason
            )
            artists = (body or {}).get("artists") or [{}]
            if isinstance(artists[0], dict) and isinstance(artists[0].get("id"), str):
                done.artist_of[track_id] = artists[0]["id"]
        artist_id = done.artist_of.get(track_id)
        if artist_id and artist_id not in done.artists:
            body, status, reason = self._get(self.client.artist, artist_id, "artist_not_found")
            self.store.add(
                "artist",
                f"artist|{artist_id}",
                artist_id,
                body,
                status=status,
                reject_reason=reason,
            )
            done.artists.add(artist_id)

    @staticmethod
    def _get(
        get: Callable[[str], dict[str, Any]], object_id: str, not_found: str
    ) -> tuple[dict[str, Any] | None, int, str | None]:
        """(body, status, reject reason): a missing or unreadable object becomes a tombstone."""
        try:
            return get(object_id), 200, None
        except NotFoundError:
            return None, 404, not_found
        except MalformedResponseError:
            return None, 200, MALFORMED_RESPONSE

    # --- 3. flatten, land, silver --------------------------------------------------

    def land(self) -> IngestSummary:
        raw = responses_to_raw(self.lake.read(RESPONSES), self.plan_id)
        land(self.lake, raw, SOURCE_NAME)
        return refresh_silver(self.lake, self.settings)


# --- flatten (pure) -----------------------------------------------------------------

_TRACK_JSON = (
    "name string, artists array<struct<id: string, name: string>>, "
    "album struct<release_date: string>, duration_ms string, popularity string"
)
_FEATURES_JSON = ", ".join(f"{name} string" for name in FEATURE_FIELDS)


def responses_to_raw(responses: DataFrame, pid: str) -> DataFrame:
    """bronze.spotify_responses -> bronze.tracks_raw rows for one plan, one row per planned track.

    Values stay strings as received; a track missing its object or its features
    carries the reason in ``reject_reason`` (track first, then features).
    ReccoBeats-shaped features have no duration: the track object's is used.
    """
    plan = (
        _latest(responses, "plan")
        .where(F.col("request_key").startswith(f"plan|{pid}|"))
        .select(F.col("object_id").alias("track_id"), "genre", "position")
    )
    tracks = _latest(responses, "track").select(
        F.col("object_id").alias("track_id"),
        F.from_json("body", _TRACK_JSON).alias("t"),
        F.col("body").isNotNull().alias("t_found"),
        F.col(REJECT_REASON).alias("t_reason"),
        F.lit(True).alias("t_fetched"),
    )
    features = _latest(responses, "audio_features").select(
        F.col("object_id").alias("track_id"),
        F.from_json("body", _FEATURES_JSON).alias("f"),
        F.col(REJECT_REASON).alias("f_reason"),
        F.lit(True).alias("f_fetched"),
    )
    joined = plan.join(tracks, "track_id", "left").join(features, "track_id", "left")
    reason = F.coalesce(
        F.when(F.col("t_fetched").isNull(), F.lit(NOT_FETCHED)),
        F.col("t_reason"),
        F.when(~F.col("t_found"), F.lit(TRACK_NOT_FOUND)),
        F.when(F.col("f_fetched").isNull(), F.lit(NOT_FETCHED)),
        F.col("f_reason"),
    )
    values = {
        "track_id": F.col("track_id"),
        "title": F.col("t.name"),
        "artist": F.array_join(F.col("t.artists.name"), ", "),
        "genre": F.col("genre"),
        "year": F.substring(F.col("t.album.release_date"), 1, 4),
        "duration_ms": F.coalesce(F.col("f.duration_ms"), F.col("t.duration_ms")),
        "popularity": F.col("t.popularity"),
        SOURCE: F.lit(SOURCE_NAME),
        "source_row": F.col("position").cast("long"),
        REJECT_REASON: reason,
        INGESTED_AT: F.current_timestamp(),
    }
    for name in FEATURE_FIELDS:
        values.setdefault(name, F.col(f"f.{name}"))
    return joined.select(
        *[values[f.name].cast(f.dataType).alias(f.name) for f in raw_schema().fields]
    )


# --- entry point -----------------------------------------------------------------------


def run(
    lake: Lake,
    settings: Settings,
    client: SpotifyClient | None = None,
    progress: ProgressSink | None = None,
    environ: dict[str, str] | None = None,
) -> SpotifyIngestSummary:
    """Ingest ``settings.ingest.spotify.genres`` x ``per_genre`` tracks; resumable by re-running."""
    cfg = settings.ingest.spotify
    if client is None:
        client = SpotifyClient(cfg, load_credentials(environ, cfg.dotenv))
    return SpotifyIngest(lake, settings, client, progress=progress).run()
