"""The Spotify HTTP client and the feature providers against the fake server (no Spark).

Each fault is thrown by a real HTTP server and must be met by the project's
policy: waits decided (and logged) from Retry-After or backoff, a clean stop
beyond the cap, token refresh, timeouts, malformed bodies; and the counts of
faults the client survived must equal the counts the server injected.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from fake_spotify import Catalog, FakeSpotify, Fault, track_object
from pydantic import ValidationError

from genre_spark.config import SpotifySettings
from genre_spark.ingest.spotify.client import SpotifyClient
from genre_spark.ingest.spotify.credentials import Credentials, load_credentials
from genre_spark.ingest.spotify.errors import (
    MalformedResponseError,
    MissingCredentialsError,
    NotFoundError,
    RateLimitStop,
    SpotifyAuthError,
    SpotifyUnavailableError,
)
from genre_spark.ingest.spotify.providers import (
    AutoProvider,
    ProviderUnavailableError,
    ReccoBeatsProvider,
    SpotifyAudioFeatures,
    make_provider,
    spotify_id_of,
)
from genre_spark.ingest.spotify.retry import retry_after_s

SECRET = "sEcReT-do-not-leak-0123456789"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.generate(("rock", "jazz"), per_genre=12, seed=3)


@pytest.fixture
def fake_factory(catalog: Catalog) -> Iterator[Callable[..., FakeSpotify]]:
    servers: list[FakeSpotify] = []

    def make(**kwargs: Any) -> FakeSpotify:
        server = FakeSpotify(catalog, client_secret=SECRET, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


class Sleeps(list):
    """Records the waits the policy decides, without spending them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(fake: FakeSpotify, sleeps: Sleeps | None = None, **overrides: Any) -> SpotifyClient:
    settings = SpotifySettings(
        **fake.settings(
            backoff_s=0.01,
            backoff_max_s=0.05,
            max_attempts=4,
            max_retry_after_s=5,
            **overrides,
        )
    )
    return SpotifyClient(
        settings,
        Credentials(fake.client_id, fake.client_secret),
        sleep=Sleeps() if sleeps is None else sleeps,
    )


def waits_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting ")]


def test_search_pages_follow_absolute_next_and_track_matches_catalog(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory()
    client = make_client(fake)
    first = client.search_tracks("jazz", 10, None)
    second = client.next_page(first["next"], "jazz page 2")
    assert first["next"].startswith(fake.url)
    assert [t["id"] for t in first["items"] + second["items"]] == catalog.search["jazz"]
    assert (second["offset"], second["next"]) == (10, None)
    track_id = catalog.search["rock"][0]
    assert client.track(track_id) == track_object(
        catalog.tracks[track_id], fake.url, popularity=False
    )
    artist = client.artist(catalog.tracks[track_id].artist_id)
    assert artist["genres"] == ["modern rock", "rock"]
    assert fake.requests == {"token": 1, "search": 2, "track": 1, "artist": 1}


def test_404_is_not_found(fake_factory: Callable[..., FakeSpotify], catalog: Catalog) -> None:
    client = make_client(fake_factory())
    with pytest.raises(NotFoundError, match="404"):
        client.track(sorted(catalog.missing)[0])


def test_429_waits_the_retry_after_and_logs_it(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_factory(faults=[Fault("track", "429", times=2, retry_after=3)])
    sleeps = Sleeps()
    caplog.set_level(logging.INFO)
    track_id = catalog.search["rock"][1]
    assert make_client(fake, sleeps).track(track_id)["id"] == track_id
    assert sleeps == [3.0, 3.0]
    assert (
        waits_logged(caplog)
        == [f"waiting 3.00 s: rate limited (429) on track {track_id}: Retry-After 3 s"] * 2
    )
    assert fake.injected == {"429": 2}


def test_429_beyond_the_cap_stops_cleanly_without_waiting(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory(faults=[Fault("track", "429", retry_after=86400)])
    sleeps = Sleeps()
    with pytest.raises(RateLimitStop) as stop:
        make_client(fake, sleeps).track(catalog.search["rock"][1])
    assert stop.value.retry_after_s == 86400
    assert stop.value.retry_at > datetime.now(UTC) + timedelta(hours=23)
    message = str(stop.value)
    assert "max_retry_after_s=5" in message and "run the same command again after" in message
    assert sleeps == []


def test_retry_after_as_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    assert 100 < retry_after_s({"Retry-After": format_datetime(when, usegmt=True)}) <= 120
    assert retry_after_s({"Retry-After": "7"}) == 7.0
    assert retry_after_s({}) is None


def test_5xx_burst_is_survived_with_logged_backoff(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_factory(faults=[Fault("track", "5xx", times=3, status=503)])
    caplog.set_level(logging.INFO)
    client = make_client(fake)
    track_id = catalog.search["rock"][2]
    assert client.track(track_id)["id"] == track_id
    assert client.stats.survived["5xx"] == fake.injected["5xx"] == 3
    reasons = waits_logged(caplog)
    assert len(reasons) == 3 and all("503" in r for r in reasons)


def test_persistent_5xx_stops_resumably_after_max_attempts_sends(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory(faults=[Fault("track", "5xx", times=100, status=502)])
    client = make_client(fake)
    with pytest.raises(SpotifyUnavailableError, match="run the same command again"):
        client.track(catalog.search["rock"][2])
    # one retry layer: max_attempts sends in all, none added underneath
    assert fake.requests["track"] == client.settings.max_attempts == 4


def test_expired_token_is_refreshed(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory(faults=[Fault("track", "expire", after=1)])
    client = make_client(fake)
    for track_id in catalog.search["rock"][:3]:
        assert client.track(track_id)["id"] == track_id
    assert fake.requests["token"] == 2
    assert client.stats.survived["token_expired"] == fake.injected["expire"] == 1


def test_malformed_json_is_retried_then_reported(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    broken = catalog.search["jazz"][0]
    fake = fake_factory(faults=[Fault("track", "malformed", times=2)], malformed_track_ids={broken})
    client = make_client(fake)
    ok = catalog.search["rock"][0]
    assert client.track(ok)["id"] == ok
    with pytest.raises(MalformedResponseError, match="4 attempts"):
        client.track(broken)
    assert client.stats.survived["malformed"] == fake.injected["malformed"] == 2 + 4


def test_slow_response_times_out_and_is_retried(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory(faults=[Fault("track", "slow")])
    client = make_client(fake)
    track_id = catalog.search["rock"][3]
    assert client.track(track_id)["id"] == track_id
    assert client.stats.survived["timeout"] == fake.injected["slow"] == 1
    assert fake.requests["track"] == 2


def test_bad_credentials_fail_clearly_without_the_secret(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory()
    settings = SpotifySettings(**fake.settings())
    client = SpotifyClient(settings, Credentials(fake.client_id, "wrong-" + SECRET))
    with pytest.raises(SpotifyAuthError) as error:
        client.track(catalog.search["rock"][0])
    text = f"{error.value} {error.value!r}"
    assert "invalid_client" in text and "SPOTIPY_CLIENT_SECRET" in text
    assert SECRET not in text
    assert SECRET not in repr(client) and SECRET not in repr(Credentials("id", SECRET))


def test_credentials_from_env_then_dotenv_and_a_clear_error(tmp_path: Any) -> None:
    dotenv = tmp_path / ".env"
    with pytest.raises(MissingCredentialsError) as missing:
        load_credentials({}, dotenv)
    message = str(missing.value)
    assert (
        "SPOTIPY_CLIENT_ID" in message and "SPOTIPY_CLIENT_SECRET" in message and ".env" in message
    )
    dotenv.write_text("SPOTIPY_CLIENT_ID=file-id\nSPOTIPY_CLIENT_SECRET=file-secret\n")
    assert load_credentials({}, dotenv) == Credentials("file-id", "file-secret")
    env = {"SPOTIPY_CLIENT_ID": "env-id", "SPOTIPY_CLIENT_SECRET": "env-secret"}
    assert load_credentials(env, dotenv) == Credentials("env-id", "env-secret")
    with pytest.raises(MissingCredentialsError, match="SPOTIPY_CLIENT_SECRET") as only_secret:
        load_credentials({"SPOTIPY_CLIENT_ID": "x"}, tmp_path / "absent.env")
    assert "SPOTIPY_CLIENT_ID and" not in str(only_secret.value)


def test_debug_logs_of_the_token_exchange_carry_no_secret(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_factory()
    caplog.set_level(logging.DEBUG)
    make_client(fake).track(catalog.search["rock"][0])
    basic = base64.b64encode(f"{fake.client_id}:{SECRET}".encode()).decode()
    assert "/api/token" in caplog.text  # the token request was logged at DEBUG
    assert SECRET not in caplog.text and basic not in caplog.text


def test_spotipy_debug_lines_mask_the_basic_header_and_every_token(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    """spotipy logs request headers at DEBUG: they are there, with the credentials masked."""
    fake = fake_factory(faults=[Fault("track", "expire", after=1)])
    caplog.set_level(logging.DEBUG)
    client = make_client(fake)
    for track_id in catalog.search["rock"][:3]:
        client.track(track_id)
    basic = base64.b64encode(f"{fake.client_id}:{SECRET}".encode()).decode()
    spotipy_lines = [r.getMessage() for r in caplog.records if r.name.startswith("spotipy")]
    assert any("Basic ***" in line and "/api/token" in line for line in spotipy_lines)
    assert sum("Bearer ***" in line for line in spotipy_lines) == fake.requests["track"] == 4
    assert len(fake.tokens) == 2  # the expired one and its replacement
    for needle in (SECRET, basic, *fake.tokens):
        assert needle not in caplog.text


def test_spotipy_error_lines_are_debug_only_the_policy_speaks_for_them(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_factory(faults=[Fault("track", "5xx", times=1, status=503)])
    caplog.set_level(logging.INFO)
    client = make_client(fake)
    assert client.track(catalog.search["rock"][0])["id"] == catalog.search["rock"][0]
    with pytest.raises(NotFoundError):
        client.track(sorted(catalog.missing)[0])
    assert [r for r in caplog.records if r.name.startswith("spotipy")] == []
    assert len(waits_logged(caplog)) == 1
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NotFoundError):
        client.track(sorted(catalog.missing)[0])
    errors = [r for r in caplog.records if r.getMessage().startswith("HTTP Error for GET")]
    assert [(r.name, r.levelno) for r in errors] == [("spotipy.client", logging.DEBUG)]


@pytest.mark.parametrize(
    ("kind", "survived_as"),
    [("5xx", "token_endpoint"), ("malformed", "token_endpoint"), ("slow", "timeout")],
)
def test_a_failing_token_endpoint_is_retried_by_the_policy(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog, kind: str, survived_as: str
) -> None:
    fake = fake_factory(faults=[Fault("token", kind)])
    client = make_client(fake)
    track_id = catalog.search["jazz"][0]
    assert client.track(track_id)["id"] == track_id
    assert client.stats.survived[survived_as] == fake.injected[kind] == 1
    assert (fake.requests["token"], fake.requests["track"]) == (2, 1)


def test_malformed_audio_features_are_retried(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory(audio_features_allowed=True, faults=[Fault("audio_features", "malformed")])
    client = make_client(fake)
    ids = catalog.search["jazz"][:4]
    got = client.audio_features(ids)
    assert [f["tempo"] if f else None for f in got] == [
        f["tempo"] if f else None for f in expected_features(catalog, ids).values()
    ]
    assert client.stats.survived["malformed"] == fake.injected["malformed"] == 1
    assert fake.requests["audio_features"] == 2


def test_search_limit_above_ten_is_rejected_by_config() -> None:
    with pytest.raises(ValidationError, match="search_limit"):
        SpotifySettings(search_limit=50)


# --- providers ----------------------------------------------------------------------


def expected_features(catalog: Catalog, ids: list[str]) -> dict[str, dict[str, Any] | None]:
    return {i: catalog.features(i) for i in ids}


def test_reccobeats_joins_on_href_and_leaves_unknown_out(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory()
    client = make_client(fake)
    provider = ReccoBeatsProvider(client.settings, client)
    ids = catalog.search["rock"]  # the last two: unknown to the provider, deleted track
    got = provider.fetch(ids)
    numeric = {
        i: {k: v for k, v in f.items() if k not in ("id", "href", "isrc")} if f else None
        for i, f in got.items()
    }
    assert numeric == expected_features(catalog, ids)
    assert sum(v is None for v in got.values()) == 2
    assert all(spotify_id_of(f["href"]) == i for i, f in got.items() if f)
    with pytest.raises(ValueError, match="at most 40"):
        provider.fetch(["x" * 22] * 41)


def test_spotify_audio_features_when_the_app_has_access(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory(audio_features_allowed=True)
    client = make_client(fake)
    provider = make_provider(client.settings, client)
    ids = catalog.search["jazz"]
    got = provider.fetch(ids)
    assert isinstance(provider, AutoProvider) and provider.name == "spotify"
    assert {i: f["tempo"] if f else None for i, f in got.items()} == {
        i: f["tempo"] if f else None for i, f in expected_features(catalog, ids).items()
    }
    assert all(f["duration_ms"] == catalog.tracks[i].duration_ms for i, f in got.items() if f)
    assert fake.requests["provider"] == 0


def test_auto_falls_back_to_the_provider_after_a_403(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_factory()
    client = make_client(fake)
    provider = make_provider(client.settings, client)
    ids = catalog.search["rock"][:5]
    assert provider.fetch(ids) == ReccoBeatsProvider(client.settings, client).fetch(ids)
    provider.fetch(catalog.search["jazz"][:5])
    assert provider.name == "reccobeats"
    assert fake.requests["audio_features"] == 1  # one 403, then never asked again
    assert "switching to the provider" in caplog.text


def test_neither_provider_available_names_the_options(
    fake_factory: Callable[..., FakeSpotify], catalog: Catalog
) -> None:
    fake = fake_factory(provider_enabled=False)
    client = make_client(fake)
    with pytest.raises(ProviderUnavailableError) as error:
        make_provider(client.settings, client).fetch(catalog.search["rock"][:3])
    message = str(error.value)
    for needle in ("403", "genre ingest csv", "ingest.spotify.provider_base", fake.provider_base):
        assert needle in message
    with pytest.raises(ProviderUnavailableError, match="blocked for apps created after 2024-11-27"):
        SpotifyAudioFeatures(client.settings, client).fetch(catalog.search["rock"][:3])
