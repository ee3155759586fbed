"""The plan: which tracks to request for which genre, chosen once and stored.

For each genre, in the order given, the owned playlists configured for it,
then ``/search?q=genre:"<genre>"`` (10 per page since 2026, following the
absolute ``next``); the first ``per_genre`` track ids not already taken by an
earlier genre. **Genre rule:** a track's label is the genre whose search (or
playlist) found it; a track found by several genres belongs to the first of
them in ``--genres`` order, so no track is requested twice.

The plan is stored as ``plan`` rows under a plan id (a hash of the arguments),
in one commit: a re-run with the same arguments asks for the same tracks, and
pages stored by an earlier run are not fetched again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from genre_spark.config import SpotifySettings
from genre_spark.ingest.spotify.client import SpotifyClient
from genre_spark.ingest.spotify.events import OnProgress, Planning, ignore
from genre_spark.ingest.spotify.store import PlannedTrack, ResponseStore, response

log = logging.getLogger(__name__)

PLAYLIST_PAGE = 50


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


def search_ids(page: dict[str, Any]) -> list[str | None]:
    return [item.get("id") if isinstance(item, dict) else None for item in page["items"]]


def playlist_ids(page: dict[str, Any]) -> list[str | None]:
    """Playlist items are ``{added_at, added_by, is_local, item}``; local files have no id."""
    ids: list[str | None] = []
    for entry in page["items"]:
        item: Any = entry.get("item") if isinstance(entry, dict) else None  # untyped JSON
        usable = (
            isinstance(item, dict)
            and not entry.get("is_local")
            and (item.get("type") or "track") == "track"
        )
        ids.append(item.get("id") if usable else None)
    return ids


@dataclass(frozen=True)
class _Source:
    """One paged source of candidate ids: a playlist, or a genre's search."""

    kind: str
    genre: str
    prefix: str  # request keys are f"{prefix}|offset=N"
    first: Callable[[], dict[str, Any]]
    ids_of: Callable[[dict[str, Any]], list[str | None]]


class Planner:
    """Chooses the plan's tracks, fetching only pages bronze does not have yet."""

    def __init__(
        self,
        store: ResponseStore,
        client: SpotifyClient,
        settings: SpotifySettings,
        on_progress: OnProgress = ignore,
    ) -> None:
        self.store = store
        self.client = client
        self.cfg = settings
        self.on_progress = on_progress
        self.plan_id = plan_id(settings)

    def plan(self) -> list[PlannedTrack]:
        """The stored plan for these arguments, or a new one (committed in one piece)."""
        stored = self.store.stored_plan(self.plan_id)
        if stored is not None:
            log.info("resuming plan %s: %d tracks", self.plan_id, len(stored))
            return stored
        pages = self.store.stored_pages(self.cfg.genres)
        claimed: set[str] = set()
        plan: list[PlannedTrack] = []
        for genre in self.cfg.genres:
            self.on_progress(Planning(genre))
            chosen = self._choose(genre, pages, claimed, plan)
            if chosen < self.cfg.per_genre:
                log.warning(
                    "only %d of %d tracks found for genre %r", chosen, self.cfg.per_genre, genre
                )
        self.store.commit(
            response(
                "plan",
                f"plan|{self.plan_id}|{t.track_id}",
                t.track_id,
                genre=t.genre,
                position=t.position,
            )
            for t in plan
        )
        return plan

    def _choose(
        self,
        genre: str,
        pages: dict[str, dict[str, Any]],
        claimed: set[str],
        plan: list[PlannedTrack],
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

    def _candidates(
        self, genre: str, pages: dict[str, dict[str, Any]]
    ) -> Iterator[list[str | None]]:
        """Id lists, page by page: owned playlists first, then search. Pages fetched lazily."""
        for playlist in self.cfg.playlists.get(genre, []):
            yield from self._walk(
                pages,
                _Source(
                    "playlist_items",
                    genre,
                    f"playlist|{playlist}",
                    functools.partial(self.client.playlist_items, playlist, PLAYLIST_PAGE),
                    playlist_ids,
                ),
            )
        limit, market = self.cfg.search_limit, self.cfg.market
        yield from self._walk(
            pages,
            _Source(
                "search",
                genre,
                f"search|{genre}|limit={limit}|market={market or ''}",
                lambda: self.client.search_tracks(genre, limit, market),
                search_ids,
            ),
        )

    def _walk(
        self, pages: dict[str, dict[str, Any]], source: _Source
    ) -> Iterator[list[str | None]]:
        next_url: str | None = None
        key = f"{source.prefix}|offset=0"
        while True:
            page = pages.get(key)
            if page is None:
                page = source.first() if next_url is None else self.client.next_page(next_url, key)
                self.store.add(response(source.kind, key, source.genre, page, genre=source.genre))
            yield source.ids_of(page)
            next_url = page.get("next")
            if not next_url:
                return
            key = f"{source.prefix}|offset={_offset_of(next_url)}"


def _offset_of(url: str) -> str:
    return parse_qs(urlparse(url).query).get("offset", ["0"])[0]
