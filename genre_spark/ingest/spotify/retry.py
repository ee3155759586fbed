"""The retry policy: the one place that decides whether a failed request is sent again.

A bulk ingester cannot use a generic retry (SPOTIFY_API.md): a 429's
``Retry-After`` may be a day, and urllib3 would sleep it silently and then lose
the header. So requests go out once each (no urllib3 or client retries
underneath) and ``RetryPolicy.call`` decides, per failure:

- 429: wait ``Retry-After`` seconds if that is at most ``max_retry_after_s``;
  beyond the cap raise ``RateLimitStop`` (the ingester checkpoints and stops,
  telling the user when to run again); without the header, backoff;
- 5xx, timeouts, connection errors: exponential backoff, ``max_attempts`` in all;
- 401 "The access token expired": forget the token and repeat at once;
- a body that is not JSON or not the expected shape: backoff and repeat, then
  ``MalformedResponseError``;
- 404 / 403 / other statuses: ``NotFoundError`` / ``ForbiddenError`` /
  ``ApiStatusError`` for the caller to decide.

So a call sends at most ``max_attempts`` requests. Every wait is logged with its
reason and length, and every fault met is counted in ``FaultStats``.
"""

from __future__ import annotations

import email.utils
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests

from genre_spark.config import SpotifySettings
from genre_spark.errors import GenreError
from genre_spark.ingest.spotify.credentials import CLIENT_ID_VAR, CLIENT_SECRET_VAR
from genre_spark.ingest.spotify.errors import (
    ApiStatusError,
    ForbiddenError,
    MalformedResponseError,
    NotFoundError,
    RateLimitStop,
    SpotifyAuthError,
    SpotifyUnavailableError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUSES = (500, 502, 503, 504)
#: Token-endpoint errors that mean "these credentials are wrong": no retry helps.
OAUTH_CLIENT_ERRORS = frozenset(
    {
        "invalid_client",
        "invalid_grant",
        "invalid_request",
        "unauthorized_client",
        "unsupported_grant_type",
    }
)


class HttpFailure(GenreError):
    """An error status from the API or the provider, as the policy needs it."""

    def __init__(self, status: int, message: str | None, headers: Mapping[str, str]) -> None:
        self.status = status
        self.message = message
        self.headers = headers
        super().__init__(f"HTTP {status}")

    @classmethod
    def of(cls, response: requests.Response) -> HttpFailure:
        """Spotify's error object ``{"error": {"status", "message"}}``, or the text of the body."""
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, response.text[:200] or None, response.headers)
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        return cls(
            response.status_code, message if isinstance(message, str) else None, response.headers
        )


class TokenRefused(GenreError):
    """The token endpoint did not hand out a token (``error`` is its OAuth error code)."""

    def __init__(self, error: str | None, description: str | None) -> None:
        self.error = error
        self.description = description
        super().__init__(f"token endpoint: {error}")


@dataclass
class FaultStats:
    """What the client met and survived, by kind: the reliability figures."""

    survived: Counter[str] = field(default_factory=Counter)
    waited_s: float = 0.0
    requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "waited_s": round(self.waited_s, 3), **self.survived}


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """``Retry-After`` as seconds: an integer, or an HTTP date."""
    value = (headers or {}).get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class RetryPolicy:
    """Sends a request until a valid answer, as the module doc describes.

    ``forget_token`` is called on an expired token so the next send fetches a
    new one; ``sleep`` is injectable so tests can observe waits without spending them.
    """

    def __init__(
        self,
        settings: SpotifySettings,
        forget_token: Callable[[], None],
        sleep: Callable[[float], None],
    ) -> None:
        self.settings = settings
        self.stats = FaultStats()
        self._forget_token = forget_token
        self._sleep = sleep

    def call(self, what: str, send: Callable[[], T], valid: Callable[[Any], bool]) -> T:
        """``send()`` until ``valid`` accepts its answer; at most ``max_attempts`` sends."""
        attempts = self.settings.max_attempts
        last = "no attempt"
        for attempt in range(1, attempts + 1):
            self.stats.requests += 1
            try:
                result = send()
            except HttpFailure as failure:
                last = self._failed(what, attempt, failure)
            except TokenRefused as refused:
                last = self._token_refused(what, attempt, refused)
            except requests.exceptions.RequestException as exc:
                last = "timeout" if isinstance(exc, requests.exceptions.Timeout) else "connection"
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

    def _failed(self, what: str, attempt: int, failure: HttpFailure) -> str:
        """One error status: wait (the loop repeats) and return its kind, or raise."""
        status = failure.status
        if status == 429:
            wait = retry_after_s(failure.headers)
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
            self._forget_token()
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
        raise ApiStatusError(what, status, failure.message)

    def _token_refused(self, what: str, attempt: int, refused: TokenRefused) -> str:
        """Bad credentials stop at once; anything else from the token endpoint is transient."""
        if refused.error in OAUTH_CLIENT_ERRORS:
            raise SpotifyAuthError(
                f"the token endpoint refused the client credentials ({refused.error}: "
                f"{refused.description}); check {CLIENT_ID_VAR} and {CLIENT_SECRET_VAR}"
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
