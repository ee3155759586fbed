"""The fetch: audio features, tracks and first artists of the plan, into the store.

Features come from the provider in batches; then each track (``/tracks/{id}``,
one at a time since 2026) and its first artist (``/artists/{id}``, once per
artist). Only what bronze lacks is asked for. A track that cannot be completed
is stored as a tombstone with its reason (``track_not_found``,
``no_audio_features``, ``malformed_response``), so it reaches quarantine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from genre_spark.ingest.spotify.client import SpotifyClient
from genre_spark.ingest.spotify.errors import MalformedResponseError, NotFoundError
from genre_spark.ingest.spotify.events import Fetching, OnProgress, TrackDone, ignore
from genre_spark.ingest.spotify.providers import AudioFeatureProvider
from genre_spark.ingest.spotify.store import (
    ARTIST_NOT_FOUND,
    MALFORMED_RESPONSE,
    NO_AUDIO_FEATURES,
    TRACK_NOT_FOUND,
    Fetched,
    PlannedTrack,
    ResponseStore,
    response,
)


class Fetcher:
    """Completes every planned track in the store: features, track object, first artist."""

    def __init__(
        self,
        store: ResponseStore,
        client: SpotifyClient,
        provider: AudioFeatureProvider,
        on_progress: OnProgress = ignore,
    ) -> None:
        self.store = store
        self.client = client
        self.provider = provider
        self.on_progress = on_progress

    def fetch(self, plan: list[PlannedTrack], genres: list[str]) -> Fetched:
        """Fetch what bronze lacks for ``plan``; returns what bronze then holds."""
        done = self.store.fetched([t.track_id for t in plan])
        complete = {
            t.track_id for t in plan if t.track_id in done.tracks and t.track_id in done.features
        }
        for genre in genres:
            mine = [t.track_id for t in plan if t.genre == genre]
            self.on_progress(Fetching(genre, len(mine), len(complete.intersection(mine))))
        start = 0
        while start < len(plan):
            chunk = plan[start : start + self.provider.batch_size]
            start += len(chunk)
            self._features([t.track_id for t in chunk if t.track_id not in done.features], done)
            for track in chunk:
                self._track(track.track_id, done)
                if track.track_id not in complete:
                    self.on_progress(TrackDone(track.genre))
        return done

    def _features(self, track_ids: list[str], done: Fetched) -> None:
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
                response(
                    "audio_features",
                    f"audio_features|{track_id}",
                    track_id,
                    features,
                    provider=self.provider.name,
                    reject_reason=None if features is not None else reason,
                )
            )
            done.features[track_id] = self.provider.name

    def _track(self, track_id: str, done: Fetched) -> None:
        if track_id not in done.tracks:
            body = self._get("track", self.client.track, track_id, TRACK_NOT_FOUND)
            artists = (body or {}).get("artists") or [{}]
            if isinstance(artists[0], dict) and isinstance(artists[0].get("id"), str):
                done.artist_of[track_id] = artists[0]["id"]
        artist_id = done.artist_of.get(track_id)
        if artist_id and artist_id not in done.artists:
            self._get("artist", self.client.artist, artist_id, ARTIST_NOT_FOUND)
            done.artists.add(artist_id)

    def _get(
        self, kind: str, get: Callable[[str], dict[str, Any]], object_id: str, not_found: str
    ) -> dict[str, Any] | None:
        """Fetch and store one object; a missing or unreadable one is stored as a tombstone."""
        body: dict[str, Any] | None = None
        status, reason = 200, None
        try:
            body = get(object_id)
        except NotFoundError:
            status, reason = 404, not_found
        except MalformedResponseError:
            reason = MALFORMED_RESPONSE
        self.store.add(
            response(
                kind, f"{kind}|{object_id}", object_id, body, status=status, reject_reason=reason
            )
        )
        return body
