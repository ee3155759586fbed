"""HTTP to the Spotify Web API: spotipy underneath, the project's own retry policy on top.

spotipy's defaults do not suit a bulk ingester (SPOTIFY_API.md): urllib3 sleeps
the full ``Retry-After`` of a 429 silently (86,400 s has been seen) and then
loses the header. So spotipy gets a session that fails fast: urllib3 retries
only connection errors and 5xx, quickly and with every wait logged, and hands
429s straight back. ``SpotifyClient.call`` then applies the policy:

- 429: wait ``Retry-After`` seconds if that is at most ``max_retry_after_s``;
  beyond the cap raise ``RateLimitStop`` (the ingester checkpoints and stops,
  telling the user when to run again);
- 5xx, timeouts, connection errors: exponential backoff, ``max_attempts`` in all;
- 401 "The access token expired": fetch a new token and repeat at once;
- a body that is not JSON or not the expected shape: backoff and repeat, then
  ``MalformedResponseError``;
- 404 / 403: ``NotFoundError`` / ``ForbiddenError`` for the caller to decide.

Every wait is logged with its reason and length. Credentials come only from the
environment or ``.env`` and are never logged, printed, stored or put in an
exception message; spotipy's own debug lines (which print the HTTP Basic header)
are redacted.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.oauth2 import SpotifyClientCredentials, SpotifyOauthError
from urllib3.util.retry import Retry

from genre_spark.config import SpotifySettings

log = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_ID_VAR = "SPOTIPY_CLIENT_ID"
CLIENT_SECRET_VAR = "SPOTIPY_CLIENT_SECRET"
TRANSIENT_STATUSES = (500, 502, 503, 504)
OAUTH_CLIENT_ERRORS = frozenset(
    {
        "invalid_client",
        "invalid_grant",
        "invalid_request",
        "unauthorized_client",
        "unsupported_grant_type",
    }
)


# --- errors ---------------------------------------------------------------------


class SpotifyError(RuntimeError):
    """Base of everything this module raises."""


class IngestStop(SpotifyError):
    """A clean stop: what was fetched is checkpointed and a re-run resumes."""


class RateLimitStop(IngestStop):
    """Spotify asked for a wait beyond the configured cap."""

    def __init__(self, what: str, retry_after_s: float, cap_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.retry_at = datetime.now(timezone.utc) + timedelta(seconds=retry_after_s)
        super().__init__(
            f"rate limited on {what}: Spotify asks to wait {retry_after_s:.0f} s, beyond the cap "
            f"ingest.spotify.max_retry_after_s={cap_s:g}; progress is saved in "
            f"bronze.spotify_responses: run the same command again after "
            f"{self.retry_at:%Y-%m-%d %H:%M} UTC to resume"
        )


class SpotifyUnavailableError(IngestStop):
    """5xx, timeouts or connection errors outlasted every attempt."""


class MissingCredentialsError(SpotifyError):
    """SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET are not set."""


class SpotifyAuthError(SpotifyError):
    """The token endpoint rejected the credentials, or tokens keep being refused."""


class ApiStatusError(SpotifyError):
    """An HTTP error status the policy does not retry."""

    def __init__(self, what: str, status: int, message: str | None) -> None:
        self.status = status
        super().__init__(f"{what}: HTTP {status}" + (f" ({message})" if message else ""))


class NotFoundError(ApiStatusError):
    """404: the object does not exist (a deleted track, an unknown endpoint)."""


class ForbiddenError(ApiStatusError):
    """403: the app may not use this endpoint (audio features for new apps)."""


class MalformedResponseError(SpotifyError):
    """The body stayed unparseable or of the wrong shape through every attempt."""


# --- credentials ----------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Client credentials. The secret is left out of ``repr`` so no log or traceback shows it."""

    client_id: str
    client_secret: str = field(repr=False)


def load_credentials(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path = ".env"
) -> Credentials:
    """From the environment first, then the ``.env`` file; a clear error naming both if absent."""
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    from_file = dotenv_values(dotenv_path) if Path(dotenv_path).is_file() else {}

    def value(name: str) -> str:
        return (environ.get(name) or from_file.get(name) or "").strip()

    client_id, client_secret = value(CLIENT_ID_VAR), value(CLIENT_SECRET_VAR)
    missing = [
        n for n, v in ((CLIENT_ID_VAR, client_id), (CLIENT_SECRET_VAR, client_secret)) if not v
    ]
    if missing:
        raise MissingCredentialsError(
            f"Spotify credentials missing: set {' and '.join(missing)} in the environment "
            f"or in a .env file ({Path(dotenv_path).resolve()}), e.g. "
            f"{CLIENT_ID_VAR}=... and {CLIENT_SECRET_VAR}=... from your app at "
            "https://developer.spotify.com/dashboard"
        )
    return Credentials(client_id, client_secret)


class _RedactAuthorization(logging.Filter):
    """spotipy logs request headers at DEBUG, HTTP Basic (id:secret) included: mask them."""

    pattern = re.compile(r"(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.pattern.sub(r"\1 ***", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def _install_redaction() -> None:
    for name in ("spotipy.client", "spotipy.oauth2"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactAuthorization) for f in logger.filters):
            logger.addFilter(_RedactAuthorization())


# --- the policy -----------------------------------------------------------------


@dataclass
class FaultStats:
    """What the client met and survived, by kind: the reliability figures."""

    survived: Counter[str] = field(default_factory=Counter)
    waited_s: float = 0.0
    requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "waited_s": round(self.waited_s, 3), **self.survived}


def _transport_retry(settings: SpotifySettings, stats: FaultStats) -> Retry:
    """urllib3 retries for connection errors and 5xx only, never 429; each wait logged."""

    class LoggedRetry(Retry):
        def sleep(self, response: Any = None) -> None:
            wait = self.get_backoff_time()
            if response is not None:
                stats.survived["5xx"] += 1
                reason = f"HTTP {response.status} (transport retry)"
            else:
                stats.survived["connection"] += 1
                reason = "connection error (transport retry)"
            stats.waited_s += wait
            log.warning("waiting %.2f s: %s", wait, reason)
            super().sleep(response)

    n = settings.transport_retries
    return LoggedRetry(
        total=n,
        connect=n,
        read=0,
        status=n,
        other=0,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        backoff_factor=settings.backoff_s / 2,
        backoff_max=settings.backoff_max_s,
        respect_retry_after_header=False,
        raise_on_status=False,
    )


def _retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """``Retry-After`` as seconds: an integer, or an HTTP date."""
    value = (headers or {}).get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


@dataclass
class _Failure:
    """One failed attempt, normalised across spotipy and plain requests."""

    status: int | None
    message: str | None = None
    headers: Mapping[str, str] | None = None


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
        _install_redaction()
        self.settings = settings
        self.stats = FaultStats()
        self._sleep = sleep
        self.timeout = (settings.connect_timeout_s, settings.read_timeout_s)
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(max_retries=_transport_retry(settings, self.stats))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._auth = SpotifyClientCredentials(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            requests_session=self.session,
            requests_timeout=self.timeout,
            cache_handler=MemoryCacheHandler(),
        )
        self._auth.OAUTH_TOKEN_URL = settings.token_url
        self.sp = spotipy.Spotify(
            auth_manager=self._auth,
            requests_session=self.session,
            requests_timeout=self.timeout,
            retries=settings.transport_retries,
            status_retries=0,
        )
        self.sp.prefix = settings.api_base.rstrip("/") + "/v1/"

    def __repr__(self) -> str:
        return f"SpotifyClient(api_base={self.settings.api_base!r})"

    # --- endpoints ----------------------------------------------------------------

    def search_tracks(self, genre: str, limit: int, market: str | None) -> dict[str, Any]:
        """First page of ``genre:"<genre>"``; the rest via ``next_page``."""
        page = self.call(
            f'search genre:"{genre}"',
            lambda: self.sp.search(q=f'genre:"{genre}"', type="track", limit=limit, market=market),
            lambda r: _is_paging(r.get("tracks") if isinstance(r, dict) else None),
        )
        return page["tracks"]

    def next_page(self, page: dict[str, Any], what: str) -> dict[str, Any]:
        """Follow a paging object's absolute ``next`` URL (search pages nest it under 'tracks')."""
        result = self.call(what, lambda: self.sp.next(page), lambda r: _is_paging(_paging_of(r)))
        return _paging_of(result)

    def playlist_items(self, playlist_id: str, limit: int) -> dict[str, Any]:
        return self.call(
            f"playlist {playlist_id}",
            lambda: self.sp.playlist_items(playlist_id, limit=limit, additional_types=("track",)),
            _is_paging,
        )

    def track(self, track_id: str) -> dict[str, Any]:
        return self.call(f"track {track_id}", lambda: self.sp.track(track_id), _has_id)

    def artist(self, artist_id: str) -> dict[str, Any]:
        return self.call(f"artist {artist_id}", lambda: self.sp.artist(artist_id), _has_id)

    def audio_features(self, track_ids: list[str]) -> list[dict[str, Any] | None]:
        """Spotify's ``/audio-features`` (403 for apps created after 2024-11-27).

        ``sp._get`` rather than ``sp.audio_features``: the latter fails on a
        malformed body before the policy could see it and warns of deprecation.
        """
        result = self.call(
            "audio-features",
            lambda: self.sp._get("audio-features", ids=",".join(track_ids)),
            lambda r: isinstance(r, dict) and isinstance(r.get("audio_features"), list),
        )
        return result["audio_features"]

    def get_json(
        self, url: str, params: dict[str, str], what: str, valid: Callable[[Any], bool]
    ) -> Any:
        """An unauthenticated GET (the feature provider) under the same policy."""
        return self.call(what, lambda: self._plain_get(url, params, what), valid)

    def _plain_get(self, url: str, params: dict[str, str], what: str) -> Any:
        response = self.session.get(url, params=params, timeout=self.timeout)
        if response.status_code >= 400:
            raise _PlainHttpError(response)
        try:
            return response.json()
        except ValueError:
            return None

    # --- the policy ----------------------------------------------------------------

    def call(self, what: str, send: Callable[[], T], valid: Callable[[Any], bool]) -> T:
        """Send until a valid answer, applying the retry policy described in the module doc."""
        attempts = self.settings.max_attempts
        last = "no attempt"
        for attempt in range(1, attempts + 1):
            self.stats.requests += 1
            try:
                result = send()
            except (spotipy.SpotifyException, _PlainHttpError) as exc:
                last = self._handle(what, attempt, _failure_of(exc))
            except SpotifyOauthError as exc:
                last = self._token_refused(what, attempt, exc)
            except requests.exceptions.RequestException as exc:
                last = "timeout" if _is_timeout(exc) else "connection"
                self._backoff(what, attempt, last, f"{last} ({type(exc).__name__})")
            else:
                if valid(result):
                    return result
                last = "malformed"
                self._backoff(what, attempt, last, "malformed response")
        if last == "malformed":
            raise MalformedResponseError(f"{what}: malformed response after {attempts} attempts")
        if last == "token_expired":
            raise SpotifyAuthError(f"{what}: every new access token was refused as expired")
        raise SpotifyUnavailableError(
            f"{what}: still failing after {attempts} attempts ({last}); progress is saved in "
            "bronze.spotify_responses: run the same command again later to resume"
        )

    def _handle(self, what: str, attempt: int, failure: _Failure) -> str:
        """One failed status: wait (the loop repeats) and return its kind, or raise."""
        status = failure.status
        if status == 429:
            wait = _retry_after_s(failure.headers)
            if wait is None:
                self._backoff(what, attempt, "429", "rate limited (429) without Retry-After")
            elif wait > self.settings.max_retry_after_s:
                raise RateLimitStop(what, wait, self.settings.max_retry_after_s)
            else:
                self.stats.survived["429"] += 1
                self._wait(wait, f"rate limited (429) on {what}: Retry-After {wait:g} s")
            return "429"
        if status == 401 and failure.message and "expired" in failure.message.lower():
            self.stats.survived["token_expired"] += 1
            log.info("access token expired on %s: the next attempt fetches a new one", what)
            self._auth.cache_handler.save_token_to_cache(None)
            return "token_expired"
        if status in TRANSIENT_STATUSES:
            self._backoff(what, attempt, "5xx", f"HTTP {status}")
            return "5xx"
        if status == 401:
            raise SpotifyAuthError(f"{what}: HTTP 401 ({failure.message})")
        if status == 404:
            raise NotFoundError(what, 404, failure.message)
        if status == 403:
            raise ForbiddenError(what, 403, failure.message)
        raise ApiStatusError(what, status or 0, failure.message)

    def _token_refused(self, what: str, attempt: int, exc: SpotifyOauthError) -> str:
        """Bad credentials stop at once; anything else from the token endpoint is transient."""
        if exc.error in OAUTH_CLIENT_ERRORS:
            raise SpotifyAuthError(
                f"the token endpoint refused the client credentials ({exc.error}: "
                f"{exc.error_description}); check {CLIENT_ID_VAR} and {CLIENT_SECRET_VAR}"
            ) from None
        self._backoff(what, attempt, "token_endpoint", "token endpoint error")
        return "token_endpoint"

    def _backoff(self, what: str, attempt: int, kind: str, reason: str) -> None:
        self.stats.survived[kind] += 1
        if attempt >= self.settings.max_attempts:
            return
        wait = min(self.settings.backoff_s * 2 ** (attempt - 1), self.settings.backoff_max_s)
        self._wait(wait, f"{reason} on {what} (attempt {attempt}/{self.settings.max_attempts})")

    def _wait(self, seconds: float, reason: str) -> None:
        log.warning("waiting %.2f s: %s", seconds, reason)
        self.stats.waited_s += seconds
        self._sleep(seconds)


class _PlainHttpError(Exception):
    def __init__(self, response: requests.Response) -> None:
        self.response = response
        super().__init__(f"HTTP {response.status_code}")


def _failure_of(exc: Exception) -> _Failure:
    if isinstance(exc, _PlainHttpError):
        response = exc.response
        try:
            body = response.json()
            error = body.get("error") if isinstance(body, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
        except ValueError:
            message = response.text[:200] or None
        return _Failure(response.status_code, message, response.headers)
    assert isinstance(exc, spotipy.SpotifyException)
    message = exc.msg.split(":\n", 1)[-1].strip() if exc.msg else None
    return _Failure(exc.http_status, message, exc.headers)


def _is_timeout(exc: requests.exceptions.RequestException) -> bool:
    return isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower()


def _has_id(result: Any) -> bool:
    return isinstance(result, dict) and isinstance(result.get("id"), str)


def _is_paging(result: Any) -> bool:
    return isinstance(result, dict) and isinstance(result.get("items"), list) and "next" in result


def _paging_of(result: Any) -> Any:
    """Search results wrap the paging object in ``tracks``; playlist pages do not."""
    if isinstance(result, dict) and isinstance(result.get("tracks"), dict):
        return result["tracks"]
    return result
