"""A fake Spotify Web API and a ReccoBeats-shaped feature provider, on 127.0.0.1.

The only stand-in the project allows: a real HTTP server (ephemeral port, one
thread per connection) speaking the shapes documented in SPOTIFY_API.md, so
the ingester runs its real requests + urllib3 stack and retry policy against it.

- ``POST /api/token``: client credentials over HTTP Basic; bad ones -> 400 invalid_client.
- ``GET /v1/search``: paging object, ``limit`` at most 10, absolute ``next`` on this host.
- ``GET /v1/tracks/{id}``, ``/v1/artists/{id}``, ``/v1/playlists/{id}/items``.
- ``GET /v1/audio-features?ids=``: 403 ``{"error": {"status": 403}}`` unless the app
  "still has access" (``audio_features_allowed``).
- ``GET /reccobeats/v1/audio-features?ids=``: ``{"content": [...]}`` keyed by provider
  uuid with the Spotify id inside ``href``, unknown ids left out, at most 40 ids.

Faults are injected per test (``Fault``) and every request and injected fault
is counted, so tests compare what the client survived with what was thrown at it.
The catalog is generated from a seed: the same seed gives the same tracks.

Timeouts have margin both ways (``settings``): this server answers in
milliseconds, far below ``READ_TIMEOUT_S`` even on a busy machine, and a ``slow``
fault holds its answer until the server stops, far beyond it; so only an
injected fault can time out, and each costs the test one read timeout.
"""

from __future__ import annotations

import base64
import json
import random
import string
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

FEATURE_NAMES = (
    "acousticness",
    "danceability",
    "energy",
    "instrumentalness",
    "liveness",
    "loudness",
    "speechiness",
    "tempo",
    "valence",
)
ROUTES = ("token", "search", "track", "artist", "playlist", "audio_features", "provider")
#: The client's timeouts in tests (``FakeSpotify.settings``): generous for a loopback answer.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 3.0
#: How long a ``slow`` fault holds its answer at most: ``stop()`` ends the wait sooner.
SLOW_HOLD_S = 120.0
FAULT_KINDS = ("429", "5xx", "expire", "malformed", "slow")


@dataclass(frozen=True)
class FakeTrack:
    id: str
    name: str
    artist_id: str
    artist_name: str
    album_id: str
    release_date: str
    release_date_precision: str
    duration_ms: int
    isrc: str
    features: dict[str, float | int]


@dataclass
class Catalog:
    """Tracks, artists, search results per genre and the ids each endpoint does not know.

    ``search[genre]`` is the ordered result list a ``genre:"<genre>"`` search returns;
    consecutive genres share ``shared`` tracks (so the ingester must not request a
    track twice), ``missing`` ids appear in search but answer 404 at /tracks/{id}
    (a stale search index), ``unknown_features`` have no audio features anywhere.
    """

    tracks: dict[str, FakeTrack]
    artists: dict[str, dict[str, Any]]
    search: dict[str, list[str]]
    missing: set[str]
    unknown_features: set[str]
    playlists: dict[str, list[str | None]] = field(default_factory=dict)

    @classmethod
    def generate(
        cls,
        genres: tuple[str, ...] = ("rock", "jazz"),
        per_genre: int = 12,
        seed: int = 7,
        shared: int = 2,
        missing: int = 1,
        unknown_features: int = 1,
    ) -> Catalog:
        rng = random.Random(seed)
        artists = {}
        for g, genre in enumerate(genres):
            for a in range(2):
                artist_id = _spotify_id(rng)
                artists[artist_id] = {
                    "id": artist_id,
                    "name": f"{genre.title()} Artist {a}",
                    "genres": [f"modern {genre}", genre],
                    "type": "artist",
                    "uri": f"spotify:artist:{artist_id}",
                    "_genre_index": g,
                }
        tracks: dict[str, FakeTrack] = {}
        search: dict[str, list[str]] = {}
        for g, genre in enumerate(genres):
            genre_artists = [a for a in artists.values() if a["_genre_index"] == g]
            ids = []
            for n in range(per_genre):
                track = _make_track(rng, genre, n, rng.choice(genre_artists))
                tracks[track.id] = track
                ids.append(track.id)
            search[genre] = ids
        for g in range(1, len(genres)):
            search[genres[g]][1:1] = search[genres[g - 1]][:shared]
        for artist in artists.values():
            del artist["_genre_index"]
        missing_ids: set[str] = set()
        unknown: set[str] = set()
        for genre in genres:
            tail = search[genre][len(search[genre]) - missing - unknown_features :]
            missing_ids.update(tail[len(tail) - missing :] if missing else [])
            unknown.update(tail[: len(tail) - missing])
        return cls(tracks, artists, search, missing_ids, unknown)

    def features(self, track_id: str) -> dict[str, float | int] | None:
        """Audio features as every provider knows them; None for unknown or deleted tracks."""
        if track_id not in self.tracks or track_id in self.missing | self.unknown_features:
            return None
        return dict(self.tracks[track_id].features)


def _spotify_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(22))


def _make_track(rng: random.Random, genre: str, n: int, artist: dict[str, Any]) -> FakeTrack:
    precision = rng.choice(("year", "month", "day"))
    year = rng.randint(1960, 2024)
    release = {"year": f"{year}", "month": f"{year}-{rng.randint(1, 12):02d}"}.get(
        precision, f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    )
    features: dict[str, float | int] = {
        name: round(rng.uniform(0.0, 1.0), 3) for name in FEATURE_NAMES
    }
    features["loudness"] = round(rng.uniform(-30.0, -2.0), 3)
    features["tempo"] = round(rng.uniform(60.0, 200.0), 3)
    features["key"] = rng.randint(-1, 11)
    features["mode"] = rng.randint(0, 1)
    return FakeTrack(
        id=_spotify_id(rng),
        name=f"{genre} song {n}",
        artist_id=artist["id"],
        artist_name=artist["name"],
        album_id=_spotify_id(rng),
        release_date=release,
        release_date_precision=precision,
        duration_ms=rng.randint(90_000, 420_000),
        isrc=f"US{rng.randint(10**9, 10**10 - 1)}",
        features=features,
    )


def track_object(track: FakeTrack, base: str, popularity: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": track.id,
        "type": "track",
        "uri": f"spotify:track:{track.id}",
        "href": f"{base}/v1/tracks/{track.id}",
        "name": track.name,
        "artists": [{"id": track.artist_id, "name": track.artist_name, "type": "artist"}],
        "album": {
            "id": track.album_id,
            "name": f"Album of {track.name}",
            "album_type": "album",
            "release_date": track.release_date,
            "release_date_precision": track.release_date_precision,
        },
        "duration_ms": track.duration_ms,
        "explicit": False,
        "is_local": False,
        "disc_number": 1,
        "track_number": 1,
        "external_ids": {"isrc": track.isrc},
    }
    if popularity:
        obj["popularity"] = sum(map(ord, track.id)) % 101
    return obj


@dataclass
class Fault:
    """Answer the ``after+1``-th to ``after+times``-th requests to ``route`` with a fault.

    kinds: ``429`` (with ``Retry-After: retry_after``), ``5xx`` (``status``),
    ``expire`` (the bearer token is revoked: 401 "The access token expired" until
    the client fetches a new one), ``malformed`` (truncated JSON, status 200),
    ``slow`` (no answer for ``delay_s``, by default until the server stops: far
    beyond the client's read timeout, so the client always gives up first).
    """

    route: str
    kind: str
    times: int = 1
    after: int = 0
    retry_after: int = 1
    status: int = 503
    delay_s: float = SLOW_HOLD_S
    seen: int = 0

    def __post_init__(self) -> None:
        if self.route not in ROUTES or self.kind not in FAULT_KINDS:
            raise ValueError(
                f"route in {ROUTES}, kind in {FAULT_KINDS}; got {self.route}/{self.kind}"
            )


class FakeSpotify:
    """The server: start with ``with FakeSpotify(...) as fake:``; ``fake.url`` is its base."""

    def __init__(
        self,
        catalog: Catalog,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        audio_features_allowed: bool = False,
        provider_enabled: bool = True,
        popularity: bool = False,
        faults: list[Fault] | None = None,
        malformed_track_ids: set[str] | None = None,
        unknown_features: set[str] | None = None,
    ) -> None:
        self.catalog = catalog
        self.client_id = client_id
        self.client_secret = client_secret
        self.audio_features_allowed = audio_features_allowed
        self.provider_enabled = provider_enabled
        self.popularity = popularity
        self.faults = list(faults or [])
        self.malformed_track_ids = set(malformed_track_ids or ())
        self.unknown_features = set(unknown_features or ())
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.tokens: set[str] = set()
        self.revoked: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------

    def __enter__(self) -> FakeSpotify:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.stopping.clear()
        handler = type("Handler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-spotify", daemon=True
        ).start()

    def stop(self) -> None:
        self.stopping.set()  # releases the answers ``slow`` faults hold
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def provider_base(self) -> str:
        return f"{self.url}/reccobeats"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """``ingest.spotify`` overrides that point the ingester here, with timeouts of margin."""
        return {
            "connect_timeout_s": CONNECT_TIMEOUT_S,
            "read_timeout_s": READ_TIMEOUT_S,
            "api_base": self.url,
            "token_url": f"{self.url}/api/token",
            "provider_base": self.provider_base,
            **overrides,
        }

    # --- bookkeeping -------------------------------------------------------------

    def _fault_for(self, route: str) -> Fault | None:
        with self.lock:
            self.requests[route] += 1
            chosen = None
            for fault in self.faults:
                if fault.route != route:
                    continue
                fault.seen += 1
                if chosen is None and fault.after < fault.seen <= fault.after + fault.times:
                    chosen = fault
            if chosen is not None:
                self.injected[chosen.kind] += 1
            return chosen

    def _count(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] += 1

    def features(self, track_id: str) -> dict[str, float | int] | None:
        """The catalog's features, minus the ids this server was told not to know."""
        return None if track_id in self.unknown_features else self.catalog.features(track_id)

    def _issue_token(self) -> str:
        token = uuid.uuid4().hex
        with self.lock:
            self.tokens.add(token)
        return token


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSpotify
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log."""

    # --- plumbing ------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> None:
        payload = raw if raw is not None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before we answered

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"status": status, "message": message}})

    def _apply(self, fault: Fault | None) -> bool:
        """Send the fault's answer; True when the request is done."""
        if fault is None:
            return False
        if fault.kind == "429":
            self._send(
                429,
                {
                    "error": {
                        "status": 429,
                        "message": "Too many requests",
                        "reason": "QUOTA_EXCEEDED",
                    }
                },
                {"Retry-After": str(fault.retry_after)},
            )
        elif fault.kind == "5xx":
            self._send(
                fault.status, {"error": {"status": fault.status, "message": "Service unavailable"}}
            )
        elif fault.kind == "malformed":
            self._send(200, None, raw=b'{"id": "tr')
        elif fault.kind == "slow":
            # the client has long given up; a server that is stopping answers nothing
            return self.fake.stopping.wait(fault.delay_s)
        elif fault.kind == "expire":
            token = self._bearer()
            with self.fake.lock:
                self.fake.revoked.add(token or "")
            self._error(401, "The access token expired")
        return True

    def _bearer(self) -> str | None:
        header = self.headers.get("Authorization", "")
        return header[len("Bearer ") :] if header.startswith("Bearer ") else None

    def _authorized(self) -> bool:
        token = self._bearer()
        if token is None:
            self._error(401, "No token provided")
            return False
        if token in self.fake.revoked:
            self.fake._count("expire")
            self._error(401, "The access token expired")
            return False
        if token not in self.fake.tokens:
            self._error(401, "Invalid access token")
            return False
        return True

    # --- routes --------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length", 0))
        form = parse_qs(self.rfile.read(length).decode())
        if path != "/api/token":
            self._error(404, "Service not found")
            return
        if self._apply(self.fake._fault_for("token")):
            return
        expected = base64.b64encode(
            f"{self.fake.client_id}:{self.fake.client_secret}".encode()
        ).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            self._send(400, {"error": "invalid_client", "error_description": "Invalid client"})
            return
        if form.get("grant_type") != ["client_credentials"]:
            self._send(400, {"error": "unsupported_grant_type", "error_description": "grant_type"})
            return
        self._send(
            200,
            {"access_token": self.fake._issue_token(), "token_type": "Bearer", "expires_in": 3600},
        )

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] == ["reccobeats"]:
            self._provider(parts[1:], query)
            return
        route = self._route(parts)
        if route is None:
            self._error(404, "Service not found")
            return
        if self._apply(self.fake._fault_for(route)):
            return
        if not self._authorized():
            return
        handler = getattr(self, f"_{route}")
        handler(parts, query)

    @staticmethod
    def _route(parts: list[str]) -> str | None:
        if parts[:1] != ["v1"]:
            return None
        shapes = {
            ("search",): "search",
            ("tracks", "*"): "track",
            ("artists", "*"): "artist",
            ("playlists", "*", "items"): "playlist",
            ("audio-features",): "audio_features",
        }
        for shape, route in shapes.items():
            if len(shape) == len(parts) - 1 and all(
                s in ("*", p) for s, p in zip(shape, parts[1:], strict=True)
            ):
                return route
        return None

    def _page(
        self, items: list[Any], offset: int, limit: int, path: str, params: dict[str, str]
    ) -> dict[str, Any]:
        def link(at: int) -> str:
            return f"{self.fake.url}{path}?{urlencode({**params, 'offset': at, 'limit': limit})}"

        return {
            "href": link(offset),
            "items": items[offset : offset + limit],
            "limit": limit,
            "offset": offset,
            "total": len(items),
            "next": link(offset + limit) if offset + limit < len(items) else None,
            "previous": link(max(offset - limit, 0)) if offset > 0 else None,
        }

    def _search(self, parts: list[str], query: dict[str, str]) -> None:
        q = query.get("q", query.get("query", ""))
        limit, offset = int(query.get("limit", 5)), int(query.get("offset", 0))
        if not 1 <= limit <= 10:
            self._error(400, "Invalid limit")
            return
        if "track" not in query.get("type", "").split(","):
            self._error(400, "Missing parameter type")
            return
        genre = q[len('genre:"') : -1] if q.startswith('genre:"') and q.endswith('"') else None
        ids = self.fake.catalog.search.get(genre or "", [])
        items = [self._track_object(i) for i in ids]
        self._send(
            200,
            {
                "tracks": self._page(
                    items, offset, limit, "/v1/search", {"query": q, "type": "track"}
                )
            },
        )

    def _track(self, parts: list[str], query: dict[str, str]) -> None:
        track_id = parts[2]
        if track_id in self.fake.malformed_track_ids:
            self.fake._count("malformed")
            self._send(200, None, raw=b'{"id": "' + track_id.encode())
            return
        if track_id in self.fake.catalog.missing or track_id not in self.fake.catalog.tracks:
            self._error(404, "Resource not found")
            return
        self._send(200, self._track_object(track_id))

    def _artist(self, parts: list[str], query: dict[str, str]) -> None:
        artist = self.fake.catalog.artists.get(parts[2])
        if artist is None:
            self._error(404, "Resource not found")
            return
        self._send(200, artist)

    def _playlist(self, parts: list[str], query: dict[str, str]) -> None:
        ids = self.fake.catalog.playlists.get(parts[2])
        if ids is None:
            self._error(404, "Resource not found")
            return
        items = [
            {
                "added_at": "2026-01-01T00:00:00Z",
                "added_by": {"id": "owner"},
                "is_local": track_id is None,
                "item": (
                    self._track_object(track_id)
                    if track_id
                    else {"id": None, "name": "local file", "type": "track", "is_local": True}
                ),
            }
            for track_id in ids
        ]
        limit, offset = int(query.get("limit", 50)), int(query.get("offset", 0))
        self._send(200, self._page(items, offset, limit, f"/v1/playlists/{parts[2]}/items", {}))

    def _track_object(self, track_id: str) -> dict[str, Any]:
        return track_object(self.fake.catalog.tracks[track_id], self.fake.url, self.fake.popularity)

    def _audio_features(self, parts: list[str], query: dict[str, str]) -> None:
        if not self.fake.audio_features_allowed:
            self._send(403, {"error": {"status": 403}})
            return
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not 1 <= len(ids) <= 100:
            self._error(400, "Invalid ids")
            return
        result = []
        for track_id in ids:
            features = self.fake.features(track_id)
            if features is not None:
                track = self.fake.catalog.tracks[track_id]
                features.update(
                    id=track_id,
                    type="audio_features",
                    uri=f"spotify:track:{track_id}",
                    track_href=f"{self.fake.url}/v1/tracks/{track_id}",
                    duration_ms=track.duration_ms,
                    time_signature=4,
                )
            result.append(features)
        self._send(200, {"audio_features": result})

    def _provider(self, parts: list[str], query: dict[str, str]) -> None:
        if parts != ["v1", "audio-features"]:
            self._send(404, {"error": "Not Found", "path": self.path})
            return
        if self._apply(self.fake._fault_for("provider")):
            return
        if not self.fake.provider_enabled:
            self._send(404, {"error": "Not Found", "path": self.path})
            return
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not 1 <= len(ids) <= 40:
            self._send(400, {"error": "Bad Request", "message": "ids: between 1 and 40 ids"})
            return
        content = []
        for track_id in ids:
            features = self.fake.features(track_id)
            if features is None:
                continue  # unknown ids are left out, as the real provider does
            content.append(
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, track_id)),
                    "href": f"https://open.spotify.com/track/{track_id}",
                    "isrc": self.fake.catalog.tracks[track_id].isrc,
                    **features,
                }
            )
        content.reverse()  # order is not the request's: clients must join on href
        self._send(200, {"content": content})
