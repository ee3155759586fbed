"""What talking to Spotify can end in: one base, and the stops a re-run resumes from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from genre_spark.errors import GenreError, UsageError


class SpotifyError(GenreError):
    """Base of everything the Spotify ingester raises."""


class IngestStop(SpotifyError):
    """A clean stop: what was fetched is checkpointed and a re-run resumes."""


class RateLimitStop(IngestStop):
    """Spotify asked for a wait beyond the configured cap."""

    def __init__(self, what: str, retry_after_s: float, cap_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.retry_at = datetime.now(UTC) + timedelta(seconds=retry_after_s)
        super().__init__(
            f"rate limited on {what}: Spotify asks to wait {retry_after_s:.0f} s, beyond the cap "
            f"ingest.spotify.max_retry_after_s={cap_s:g}; progress is saved in "
            f"bronze.spotify_responses: run the same command again after "
            f"{self.retry_at:%Y-%m-%d %H:%M} UTC to resume"
        )


class SpotifyUnavailableError(IngestStop):
    """5xx, timeouts or connection errors outlasted every attempt."""


class MissingCredentialsError(SpotifyError, UsageError):
    """SPOTIPY_CLIENT_ID / SPOTIPY_CLIENT_SECRET are not set.

    A SpotifyError (what the ingester raises) that is also the user's to fix,
    so it exits 2 like any bad usage.
    """


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
