"""Audio-feature providers behind one interface (ARCHITECTURE decision 10).

Spotify blocks ``/audio-features`` for apps created after 2024-11-27 (403 with
body ``{"error": {"status": 403}}``). The ingester therefore asks a provider:

- ``SpotifyAudioFeatures``: Spotify itself, for apps that kept extended access;
- ``ReccoBeatsProvider``: a Spotify-ID-keyed service in ReccoBeats' shape, which
  answers with its own ids, puts the Spotify id inside ``href`` and leaves
  unknown ids out (so results are joined back on the id in ``href``, never by
  position); it has no duration or time signature (the track object's duration
  is used);
- ``AutoProvider`` (``provider: auto``): Spotify first, and on its 403 the
  ReccoBeats-shaped provider for the rest of the run.

Every provider returns, for each requested id, the feature object or ``None``
(the provider does not know the track), so the ingester can record "no audio
features" for exactly those tracks.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from genre_spark.config import SpotifySettings
from genre_spark.ingest.spotify.client import SpotifyClient
from genre_spark.ingest.spotify.errors import (
    ApiStatusError,
    ForbiddenError,
    IngestStop,
    SpotifyAuthError,
    SpotifyUnavailableError,
)

log = logging.getLogger(__name__)

Features = dict[str, Any]


class ProviderUnavailableError(IngestStop):
    """No configured provider can deliver audio features; the message names the options."""


def _options(settings: SpotifySettings) -> str:
    return (
        "options: ingest a public CSV export with `genre ingest csv`; point "
        f"ingest.spotify.provider_base (now {settings.provider_base}) at another "
        "Spotify-ID-keyed provider with the ReccoBeats API shape; or use "
        "ingest.spotify.provider=spotify with an app that still has audio-feature access"
    )


class AudioFeatureProvider(ABC):
    """Features for Spotify track ids, in batches of at most ``batch_size``."""

    name: str
    batch_size: int

    @abstractmethod
    def fetch(self, track_ids: Sequence[str]) -> dict[str, Features | None]:
        """One entry per requested id: its features, or None when the provider has none."""


class SpotifyAudioFeatures(AudioFeatureProvider):
    """Spotify's own ``/audio-features`` (up to 100 ids, ``null`` for unknown ones)."""

    name = "spotify"

    def __init__(self, settings: SpotifySettings, client: SpotifyClient) -> None:
        self.settings = settings
        self.client = client
        self.batch_size = settings.features_batch

    def fetch(self, track_ids: Sequence[str]) -> dict[str, Features | None]:
        try:
            answer = self.client.audio_features(list(track_ids))
        except ForbiddenError:
            raise ProviderUnavailableError(
                "Spotify answered 403 to /audio-features: the endpoint is blocked for apps "
                f"created after 2024-11-27; {_options(self.settings)}"
            ) from None
        by_id = {f["id"]: f for f in answer if isinstance(f, dict) and isinstance(f.get("id"), str)}
        return {i: by_id.get(i) for i in track_ids}


def spotify_id_of(href: Any) -> str | None:
    """``https://open.spotify.com/track/<id>`` -> ``<id>``; None for anything else."""
    if not isinstance(href, str):
        return None
    parts = [p for p in urlparse(href).path.split("/") if p]
    return parts[-1] if len(parts) >= 2 and parts[-2] == "track" else None


class ReccoBeatsProvider(AudioFeatureProvider):
    """``GET {base}/v1/audio-features?ids=...``: ``{"content": [...]}``, joined on ``href``."""

    name = "reccobeats"

    def __init__(self, settings: SpotifySettings, client: SpotifyClient) -> None:
        self.settings = settings
        self.client = client
        self.batch_size = settings.provider_batch
        self.url = settings.provider_base.rstrip("/") + "/v1/audio-features"

    def fetch(self, track_ids: Sequence[str]) -> dict[str, Features | None]:
        if len(track_ids) > self.batch_size:
            raise ValueError(f"at most {self.batch_size} ids per request, got {len(track_ids)}")
        try:
            answer = self.client.get_json(
                self.url,
                {"ids": ",".join(track_ids)},
                f"provider {self.url}",
                lambda r: isinstance(r, dict) and isinstance(r.get("content"), list),
            )
        except (ApiStatusError, SpotifyAuthError, SpotifyUnavailableError) as exc:
            raise ProviderUnavailableError(
                f"the audio-feature provider at {self.settings.provider_base} is not available "
                f"({exc}); {_options(self.settings)}"
            ) from None
        wanted = set(track_ids)
        by_id: dict[str, Features] = {}
        for item in answer["content"]:
            track_id = spotify_id_of(item.get("href")) if isinstance(item, dict) else None
            if track_id in wanted and track_id not in by_id:
                by_id[track_id] = item
        return {i: by_id.get(i) for i in track_ids}


class AutoProvider(AudioFeatureProvider):
    """Spotify while it answers; after its first 403, the ReccoBeats-shaped provider."""

    def __init__(self, settings: SpotifySettings, client: SpotifyClient) -> None:
        self.spotify = SpotifyAudioFeatures(settings, client)
        self.fallback = ReccoBeatsProvider(settings, client)
        self.current: AudioFeatureProvider = self.spotify

    @property
    def name(self) -> str:  # type: ignore[override]  # the base's attribute, live here
        return self.current.name

    @property
    def batch_size(self) -> int:  # type: ignore[override]  # follows the current provider
        return self.current.batch_size

    def fetch(self, track_ids: Sequence[str]) -> dict[str, Features | None]:
        if self.current is self.spotify:
            try:
                return self.spotify.fetch(track_ids)
            except ProviderUnavailableError:
                log.warning(
                    "Spotify /audio-features answered 403 (blocked for this app): switching to "
                    "the provider at %s",
                    self.fallback.settings.provider_base,
                )
                self.current = self.fallback
        result: dict[str, Features | None] = {}
        size = self.fallback.batch_size
        try:
            for start in range(0, len(track_ids), size):
                result.update(self.fallback.fetch(track_ids[start : start + size]))
        except ProviderUnavailableError as exc:
            raise ProviderUnavailableError(
                f"no audio-feature provider is available: Spotify /audio-features is blocked "
                f"for this app (403) and {exc}"
            ) from None
        return result


def make_provider(settings: SpotifySettings, client: SpotifyClient) -> AudioFeatureProvider:
    """The provider ``ingest.spotify.provider`` names."""
    if settings.provider == "spotify":
        return SpotifyAudioFeatures(settings, client)
    if settings.provider == "reccobeats":
        return ReccoBeatsProvider(settings, client)
    return AutoProvider(settings, client)
