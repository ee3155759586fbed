"""HTTP to the Spotify Web API (through spotipy) and to the feature provider.

spotipy is the Spotify client, used through its public API only: a
``spotipy.Spotify`` built on our own ``requests.Session`` (given a session,
spotipy mounts no urllib3 ``Retry`` adapter of its own, so ``retries`` and
``status_retries`` never apply), ``prefix`` set to ``api_base``, and a
``SpotifyClientCredentials`` manager whose ``OAUTH_TOKEN_URL`` is ``token_url``
and whose token lives in a ``MemoryCacheHandler`` (no ``.cache`` file). So each
spotipy call is one GET (after a token request when the token is due) and
``RetryPolicy`` stays the only layer that decides to send again. What spotipy
does with each failure, and what the policy is given:

- an error status: ``SpotifyException`` (``http_status``, ``msg``, ``headers``
  with ``Retry-After``) becomes ``HttpFailure``;
- the token endpoint refusing: ``SpotifyOauthError`` (``error``,
  ``error_description``) becomes ``TokenRefused``; a token answer that is not a
  JSON token (spotipy fails on it with requests' ``JSONDecodeError``, a
  ``KeyError`` or a ``TypeError``) too;
- timeouts and connection errors: spotipy lets requests' exceptions through
  unchanged, and the policy backs off on them;
- a 200 body that is not JSON: spotipy returns None, which fails the shape
  check, so the policy retries it as malformed.

The feature provider is not Spotify: plain ``requests`` on the same session.
spotipy logs request headers at DEBUG; ``spotipy_logs`` masks them, so neither
the client secret (sent only to the token endpoint) nor a token reaches a log.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.oauth2 import SpotifyClientCredentials, SpotifyOauthError

from genre_spark.config import SpotifySettings
from genre_spark.ingest.spotify.credentials import Credentials
from genre_spark.ingest.spotify.retry import FaultStats, HttpFailure, RetryPolicy, TokenRefused
from genre_spark.ingest.spotify.spotipy_logs import guard_spotipy_logs

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClientCredentials(SpotifyClientCredentials):  # type: ignore[misc]  # spotipy has no types
    """spotipy's client-credentials flow against the configured token endpoint.

    ``OAUTH_TOKEN_URL`` is spotipy's public constant for that endpoint; this
    manager's own value points it at ``token_url`` (Spotify's, or a local fake).
    """

    def __init__(
        self,
        credentials: Credentials,
        token_url: str,
        session: requests.Session,
        timeout: tuple[float, float],
    ) -> None:
        super().__init__(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            requests_session=session,
            requests_timeout=timeout,
            cache_handler=MemoryCacheHandler(),
        )
        self.OAUTH_TOKEN_URL = token_url

    def __repr__(self) -> str:
        return f"ClientCredentials(token_url={self.OAUTH_TOKEN_URL!r})"

    def forget_token(self) -> None:
        """The API said the token expired: an empty cache makes the next call fetch a new one."""
        self.cache_handler = MemoryCacheHandler()


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
        guard_spotipy_logs()
        self.settings = settings
        self.timeout = (settings.connect_timeout_s, settings.read_timeout_s)
        self.session = requests.Session()
        self.auth = ClientCredentials(credentials, settings.token_url, self.session, self.timeout)
        self.sp = spotipy.Spotify(
            auth_manager=self.auth,
            requests_session=self.session,
            requests_timeout=self.timeout,
            retries=0,
            status_retries=0,
        )
        self.sp.prefix = settings.api_base.rstrip("/") + "/v1/"
        self.policy = RetryPolicy(settings, self.auth.forget_token, sleep)

    def __repr__(self) -> str:
        return f"SpotifyClient(api_base={self.settings.api_base!r})"

    @property
    def stats(self) -> FaultStats:
        return self.policy.stats

    # --- endpoints ----------------------------------------------------------------

    def search_tracks(self, genre: str, limit: int, market: str | None) -> dict[str, Any]:
        """First page of ``genre:"<genre>"``; the rest via ``next_page``."""
        query = f'genre:"{genre}"'
        result = self._api(
            f"search {query}",
            lambda: self.sp.search(q=query, limit=limit, type="track", market=market),
            _is_search,
        )
        tracks: dict[str, Any] = result["tracks"]  # _is_search checked it is a paging object
        return tracks

    def next_page(self, url: str, what: str) -> dict[str, Any]:
        """Follow a paging object's absolute ``next`` URL (search pages nest it under 'tracks')."""
        result = self._api(
            what, lambda: self.sp.next({"next": url}), lambda r: _is_paging(_paging_of(r))
        )
        page: dict[str, Any] = _paging_of(result)  # the validator checked it is a paging object
        return page

    def playlist_items(self, playlist_id: str, limit: int) -> dict[str, Any]:
        return self._api(
            f"playlist {playlist_id}",
            lambda: self.sp.playlist_items(playlist_id, limit=limit, additional_types=("track",)),
            _is_paging,
        )

    def track(self, track_id: str) -> dict[str, Any]:
        return self._api(f"track {track_id}", lambda: self.sp.track(track_id), _has_id)

    def artist(self, artist_id: str) -> dict[str, Any]:
        return self._api(f"artist {artist_id}", lambda: self.sp.artist(artist_id), _has_id)

    def audio_features(self, track_ids: list[str]) -> list[dict[str, Any] | None]:
        """Spotify's ``/audio-features`` (403 for apps created after 2024-11-27)."""
        return self._api(
            "audio-features",
            lambda: self._features(track_ids),
            lambda r: isinstance(r, list),
        )

    def get_json(
        self, url: str, params: dict[str, Any], what: str, valid: Callable[[Any], bool]
    ) -> Any:
        """An unauthenticated GET (the feature provider) under the same policy."""
        return self.policy.call(what, lambda: self._plain_get(url, params), valid)

    # --- one send -------------------------------------------------------------------

    def _api(self, what: str, call: Callable[[], T], valid: Callable[[Any], bool]) -> T:
        return self.policy.call(what, lambda: self._send(call), valid)

    def _send(self, call: Callable[[], T]) -> T:
        """One spotipy call (a token first when due), its failures in the policy's terms."""
        try:
            self.auth.get_access_token(as_dict=False)
        except SpotifyOauthError as refused:
            error = refused.error if isinstance(refused.error, str) else None
            raise TokenRefused(error, refused.error_description) from None
        except (requests.exceptions.JSONDecodeError, KeyError, TypeError):
            raise TokenRefused(None, "the token endpoint's answer is not a token") from None
        try:
            return call()
        except spotipy.SpotifyException as failure:
            raise HttpFailure(failure.http_status, _message_of(failure), failure.headers) from None

    def _features(self, track_ids: list[str]) -> Any:
        """spotipy's ``audio_features``, None for a body that is not JSON.

        spotipy looks for the ``audio_features`` key in the body it parsed, so a
        body it could not parse (None) fails there with ``TypeError``: that is a
        malformed answer for the policy to retry. Its deprecation warning is
        known (the 403 fallback handles the endpoint's removal) and silenced.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return self.sp.audio_features(track_ids)
            except TypeError:
                return None

    def _plain_get(self, url: str, params: dict[str, Any]) -> Any:
        """One GET: the JSON body, None for a body that is not JSON; HttpFailure for >= 400."""
        log.debug("GET %s", url)
        response = self.session.get(url, params=params, timeout=self.timeout)
        if response.status_code >= 400:
            raise HttpFailure.of(response)
        try:
            return response.json()
        except ValueError:
            return None


def _message_of(failure: spotipy.SpotifyException) -> str | None:
    """The API's message: spotipy's ``msg`` is ``"<url>:\\n <message>"`` (None if there was none)."""
    _, separator, message = failure.msg.partition(":\n ")
    text = message if separator else failure.msg
    return None if text in ("", "None") else text


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
