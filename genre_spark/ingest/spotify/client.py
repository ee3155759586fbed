"""HTTP to the Spotify Web API and the feature provider: the endpoints the ingester uses.

Plain ``requests`` (one send per attempt, no retries underneath) so that
``RetryPolicy`` is the only layer deciding to send again. The client speaks the
2026 shapes of SPOTIFY_API.md: a client-credentials token from ``token_url``
(HTTP Basic), fetched again when it nears expiry or is reported expired; GETs
under ``api_base`` with ``Bearer``; paging by the absolute ``next`` URL.

No header is ever logged (debug lines name the method and URL only), so the
client secret and the token cannot reach a log; the secret is sent only to the
token endpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import requests

from genre_spark.config import SpotifySettings
from genre_spark.ingest.spotify.credentials import Credentials
from genre_spark.ingest.spotify.retry import FaultStats, HttpFailure, RetryPolicy, TokenRefused

log = logging.getLogger(__name__)

#: A token this close to its expiry is renewed before use (as spotipy does).
TOKEN_MARGIN_S = 60.0


class AccessToken:
    """The client-credentials access token: fetched on first use, renewed near expiry."""

    def __init__(
        self,
        credentials: Credentials,
        url: str,
        session: requests.Session,
        timeout: tuple[float, float],
    ) -> None:
        self._credentials = credentials
        self._url = url
        self._session = session
        self._timeout = timeout
        self._value: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"AccessToken(url={self._url!r})"

    def get(self) -> str:
        if self._value is None or time.monotonic() > self._expires_at - TOKEN_MARGIN_S:
            self._value, self._expires_at = self._fetch()
        return self._value

    def forget(self) -> None:
        """The API said the token expired: the next ``get`` fetches a new one."""
        self._value = None

    def _fetch(self) -> tuple[str, float]:
        log.debug("POST %s (client credentials)", self._url)
        response = self._session.post(
            self._url,
            data={"grant_type": "client_credentials"},
            auth=(self._credentials.client_id, self._credentials.client_secret),
            timeout=self._timeout,
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if response.status_code >= 400 or not isinstance(token, str):
            error = body.get("error")
            raise TokenRefused(
                error if isinstance(error, str) else f"HTTP {response.status_code}",
                body.get("error_description"),
            )
        lifetime_s = float(lifetime) if isinstance(lifetime, (int, float)) else 3600.0
        return token, time.monotonic() + lifetime_s


class SpotifyClient:
    """The ingester's only door to Spotify and the feature provider.

    ``sleep`` is injectable so tests can observe waits; by default it is ``time.sleep``.
    """

    def __init__(
        self,
        settings: SpotifySettings,
        credentials: Credentials,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.timeout = (settings.connect_timeout_s, settings.read_timeout_s)
        self.session = requests.Session()
        self.api = settings.api_base.rstrip("/") + "/v1/"
        self.token = AccessToken(credentials, settings.token_url, self.session, self.timeout)
        self.policy = RetryPolicy(settings, self.token.forget, sleep)

    def __repr__(self) -> str:
        return f"SpotifyClient(api_base={self.settings.api_base!r})"

    @property
    def stats(self) -> FaultStats:
        return self.policy.stats

    # --- endpoints ----------------------------------------------------------------

    def search_tracks(self, genre: str, limit: int, market: str | None) -> dict[str, Any]:
        """First page of ``genre:"<genre>"``; the rest via ``next_page``."""
        params = {"q": f'genre:"{genre}"', "type": "track", "limit": limit, "market": market}
        result = self._api(f'search genre:"{genre}"', "search", params, _is_search)
        return result["tracks"]

    def next_page(self, url: str, what: str) -> dict[str, Any]:
        """Follow a paging object's absolute ``next`` URL (search pages nest it under 'tracks')."""
        result = self._api(what, url, {}, lambda r: _is_paging(_paging_of(r)))
        return _paging_of(result)

    def playlist_items(self, playlist_id: str, limit: int) -> dict[str, Any]:
        params = {"limit": limit, "additional_types": "track"}
        return self._api(
            f"playlist {playlist_id}", f"playlists/{playlist_id}/items", params, _is_paging
        )

    def track(self, track_id: str) -> dict[str, Any]:
        return self._api(f"track {track_id}", f"tracks/{track_id}", {}, _has_id)

    def artist(self, artist_id: str) -> dict[str, Any]:
        return self._api(f"artist {artist_id}", f"artists/{artist_id}", {}, _has_id)

    def audio_features(self, track_ids: list[str]) -> list[dict[str, Any] | None]:
        """Spotify's ``/audio-features`` (403 for apps created after 2024-11-27)."""
        result = self._api(
            "audio-features",
            "audio-features",
            {"ids": ",".join(track_ids)},
            lambda r: isinstance(r, dict) and isinstance(r.get("audio_features"), list),
        )
        return result["audio_features"]

    def get_json(
        self, url: str, params: dict[str, Any], what: str, valid: Callable[[Any], bool]
    ) -> Any:
        """An unauthenticated GET (the feature provider) under the same policy."""
        return self.policy.call(what, lambda: self._get(url, params, None), valid)

    # --- one send -------------------------------------------------------------------

    def _api(
        self, what: str, path: str, params: dict[str, Any], valid: Callable[[Any], bool]
    ) -> Any:
        """An authenticated GET of ``path`` under ``api_base`` (or of an absolute URL)."""
        url = path if path.startswith(("http://", "https://")) else self.api + path
        return self.policy.call(what, lambda: self._get(url, params, self.token.get), valid)

    def _get(self, url: str, params: dict[str, Any], token: Callable[[], str] | None) -> Any:
        """One GET: the JSON body, None for a body that is not JSON; HttpFailure for >= 400."""
        headers = {"Authorization": f"Bearer {token()}"} if token is not None else {}
        log.debug("GET %s", url)
        response = self.session.get(url, params=params, headers=headers, timeout=self.timeout)
        if response.status_code >= 400:
            raise HttpFailure.of(response)
        try:
            return response.json()
        except ValueError:
            return None


def _has_id(result: Any) -> bool:
    return isinstance(result, dict) and isinstance(result.get("id"), str)


def _is_paging(result: Any) -> bool:
    return isinstance(result, dict) and isinstance(result.get("items"), list) and "next" in result


def _is_search(result: Any) -> bool:
    return isinstance(result, dict) and _is_paging(result.get("tracks"))


def _paging_of(result: Any) -> Any:
    """Search results wrap the paging object in ``tracks``; playlist pages do not."""
    if isinstance(result, dict) and isinstance(result.get("tracks"), dict):
        return result["tracks"]
    return result
