"""Client credentials: from the environment or ``.env`` only, never logged or stored."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from genre_spark.ingest.spotify.errors import MissingCredentialsError

CLIENT_ID_VAR = "SPOTIPY_CLIENT_ID"
CLIENT_SECRET_VAR = "SPOTIPY_CLIENT_SECRET"


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
