"""``genre ingest spotify`` end to end against the fake server, with real Spark and Delta.

The invariant under every fault: the set of requested track ids equals
silver ∪ quarantine exactly, each id once, quarantined ones with the reason
the fake's catalog implies; silver's values equal the catalog's. A killed or
rate-limited run resumes to the same silver table an uninterrupted run makes,
fetching only what bronze lacks. The client secret appears nowhere.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import json
import logging
import operator
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from fake_spotify import Catalog, FakeSpotify, Fault
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.config import Settings, SpotifySettings
from genre_spark.ingest.spotify import store
from genre_spark.ingest.spotify.client import SpotifyClient
from genre_spark.ingest.spotify.credentials import Credentials
from genre_spark.ingest.spotify.errors import RateLimitStop
from genre_spark.ingest.spotify.events import ProgressEvent, TrackDone
from genre_spark.ingest.spotify.flatten import responses_to_raw
from genre_spark.ingest.spotify.plan import Planner, plan_id
from genre_spark.ingest.spotify.providers import ProviderUnavailableError
from genre_spark.ingest.spotify.runner import SpotifyIngestSummary, run
from genre_spark.lake import Lake
from genre_spark.lake.catalog import (
    BRONZE_QUARANTINE,
    BRONZE_SPOTIFY_RESPONSES,
    BRONZE_TRACKS_RAW,
    SILVER_TRACKS,
    raw_row_schema,
    spec,
)

GENRES = ("rock", "jazz")
PER_GENRE = 8
SECRET = "tOpSeCrEt-9f8e7d6c5b4a"
#: fake fault kind -> the client's name for surviving it
SURVIVED_AS = {
    "429": "429",
    "5xx": "5xx",
    "expire": "token_expired",
    "malformed": "malformed",
    "slow": "timeout",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.generate(
        GENRES, per_genre=PER_GENRE, seed=11, shared=2, missing=1, unknown_features=1
    )


@pytest.fixture
def fake(request: pytest.FixtureRequest, catalog: Catalog) -> Iterator[FakeSpotify]:
    server = FakeSpotify(catalog, client_secret=SECRET, **getattr(request, "param", {}))
    with server:
        yield server


def configure(settings: Settings, fake: FakeSpotify, **overrides: Any) -> Settings:
    settings.ingest.spotify = SpotifySettings(
        **fake.settings(
            **{
                "genres": list(GENRES),
                "per_genre": PER_GENRE,
                "backoff_s": 0.01,
                "backoff_max_s": 0.05,
                "max_attempts": 6,
                "max_retry_after_s": 2,
                "checkpoint_batch": 100,
                **overrides,
            }
        )
    )
    return settings


def client_for(settings: Settings, fake: FakeSpotify) -> SpotifyClient:
    return SpotifyClient(settings.ingest.spotify, Credentials(fake.client_id, fake.client_secret))


def ingest(
    lake: Lake, settings: Settings, fake: FakeSpotify, **kwargs: Any
) -> SpotifyIngestSummary:
    return run(lake, settings, client=client_for(settings, fake), **kwargs)


# --- references ------------------------------------------------------------------------


def expected_plan(catalog: Catalog) -> dict[str, str]:
    """track id -> genre: the first PER_GENRE unclaimed search results, genres in order."""
    plan: dict[str, str] = {}
    for genre in GENRES:
        chosen = [t for t in catalog.search[genre] if t not in plan][:PER_GENRE]
        plan.update(dict.fromkeys(chosen, genre))
    return plan


def expected_reasons(catalog: Catalog, fake: FakeSpotify) -> dict[str, str]:
    reasons = {}
    for track_id in expected_plan(catalog):
        if track_id in catalog.missing:
            reasons[track_id] = store.TRACK_NOT_FOUND
        elif track_id in fake.malformed_track_ids:
            reasons[track_id] = store.MALFORMED_RESPONSE
        elif fake.features(track_id) is None:
            reasons[track_id] = store.NO_AUDIO_FEATURES
    return reasons


def expected_silver(
    spark: SparkSession, catalog: Catalog, ids: list[str], genre_of: dict[str, str]
) -> DataFrame:
    rows = []
    for track_id in ids:
        track = catalog.tracks[track_id]
        features = dict(track.features)
        rows.append(
            {
                "track_id": track_id,
                "title": track.name,
                "artist": track.artist_name,
                "genre": genre_of[track_id],
                "year": int(track.release_date[:4]),
                **{k: float(v) for k, v in features.items() if k not in ("key", "mode")},
                "key": features["key"],
                "mode": features["mode"],
                "duration_ms": float(track.duration_ms),
                "popularity": None,
                "source": "spotify",
            }
        )
    schema = spec(SILVER_TRACKS).schema
    columns = [f for f in schema.fields if f.name != "ingested_at"]
    return spark.createDataFrame(
        [tuple(r[f.name] for f in columns) for r in rows], T.StructType(columns)
    )


def assert_all_accounted_for(lake: Lake, catalog: Catalog, fake: FakeSpotify) -> None:
    """requested == silver ∪ quarantine, disjoint, no duplicates; reasons and values as expected."""
    plan = expected_plan(catalog)
    silver = lake.read(SILVER_TRACKS)
    quarantine = lake.read(BRONZE_QUARANTINE).where(F.col("source") == "spotify")
    silver_ids = [r.track_id for r in silver.select("track_id").collect()]
    quarantined = {r.track_id: r.reason for r in quarantine.select("track_id", "reason").collect()}
    assert len(silver_ids) == len(set(silver_ids))
    assert quarantine.count() == len(quarantined)
    assert not set(silver_ids) & set(quarantined)
    assert set(silver_ids) | set(quarantined) == set(plan)
    assert quarantined == expected_reasons(catalog, fake)
    expected = expected_silver(lake.spark, catalog, sorted(silver_ids), plan)
    assertDataFrameEqual(silver.select(*expected.columns), expected)


def assert_faults_survived(client: SpotifyClient, fake: FakeSpotify) -> None:
    survived = {SURVIVED_AS[k]: client.stats.survived[SURVIVED_AS[k]] for k in fake.injected}
    assert survived == {SURVIVED_AS[k]: n for k, n in fake.injected.items()}


# --- the fault matrix ---------------------------------------------------------------


@dataclass
class Case:
    fake: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    stops: int = 0  # runs expected to stop with a checkpoint before one completes
    provider: str = "reccobeats"


CASES = {
    "none": Case(fake={"audio_features_allowed": True}, provider="spotify"),
    "429_small": Case(fake={"faults": [Fault("track", "429", after=3, retry_after=1)]}),
    "429_absurd": Case(
        fake={
            "faults": [
                Fault("search", "429", after=1, retry_after=86400),
                Fault("track", "429", after=5, retry_after=86400),
            ]
        },
        settings={"checkpoint_batch": 5},
        stops=2,
    ),
    "5xx_burst": Case(
        fake={
            "faults": [
                Fault("track", "5xx", after=2, times=4, status=503),
                Fault("search", "5xx", times=2, status=500),
                Fault("provider", "5xx", times=2, status=502),
            ]
        }
    ),
    "token_expiry": Case(
        fake={"faults": [Fault("track", "expire", after=4), Fault("search", "expire", after=1)]}
    ),
    "malformed_json": Case(
        fake={
            "faults": [
                Fault("track", "malformed", after=1, times=2),
                Fault("provider", "malformed"),
                Fault("search", "malformed"),
            ]
        }
    ),
    "slow_response": Case(
        fake={
            "faults": [
                Fault("track", "slow", after=2),
                Fault("provider", "slow"),
            ]
        }
    ),
    "unknown_provider_ids": Case(settings={"provider": "reccobeats"}),
    "audio_features_403_fallback": Case(),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fault_matrix_every_requested_track_in_silver_or_quarantine_once(
    name: str, lake: Lake, settings: Settings, catalog: Catalog
) -> None:
    case = CASES[name]
    fake_kwargs = copy.deepcopy(case.fake)  # Faults count what they saw: fresh ones per run
    if name == "unknown_provider_ids":
        fake_kwargs["unknown_features"] = set(catalog.search["rock"][:3])
    if name == "malformed_json":
        fake_kwargs["malformed_track_ids"] = {catalog.search["jazz"][0]}
    with FakeSpotify(catalog, client_secret=SECRET, **fake_kwargs) as fake:
        configure(settings, fake, **case.settings)
        clients = []
        for _ in range(case.stops):
            clients.append(client_for(settings, fake))
            with pytest.raises(RateLimitStop, match="run the same command again after"):
                run(lake, settings, client=clients[-1])
            assert lake.exists(BRONZE_SPOTIFY_RESPONSES) and not lake.exists(SILVER_TRACKS)
        clients.append(client_for(settings, fake))
        summary = run(lake, settings, client=clients[-1])
        assert_all_accounted_for(lake, catalog, fake)
        assert summary.providers == {case.provider: summary.requested}
        assert summary.requested == len(expected_plan(catalog))
        survived = Counter[str]()
        for client in clients:
            survived.update(client.stats.survived)
        injected = Counter({SURVIVED_AS[k]: n for k, n in fake.injected.items()})
        injected["429"] -= case.stops  # 429s beyond the cap are stopped at, not survived
        assert {k: survived[k] for k in SURVIVED_AS.values()} == {
            k: injected[k] for k in SURVIVED_AS.values()
        }
        if name == "audio_features_403_fallback":
            assert fake.requests["audio_features"] == 1
        if name == "none":
            assert fake.requests["provider"] == 0


def test_neither_provider_available_stops_with_the_options_before_fetching_tracks(
    lake: Lake, settings: Settings, catalog: Catalog
) -> None:
    with FakeSpotify(catalog, client_secret=SECRET, provider_enabled=False) as fake:
        configure(settings, fake)
        with pytest.raises(ProviderUnavailableError) as error:
            ingest(lake, settings, fake)
    message = str(error.value)
    assert "genre ingest csv" in message and "ingest.spotify.provider_base" in message
    assert fake.requests["track"] == 0
    assert not lake.exists(SILVER_TRACKS)


# --- kill and resume --------------------------------------------------------------------


class SimulatedKill(Exception):
    """Raised from inside the fetch loop: nothing buffered is saved, as after SIGKILL."""


class KillAfter:
    """A progress listener that kills the run when the ``tracks``-th track is done."""

    def __init__(self, tracks: int) -> None:
        self.left = tracks

    def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, TrackDone):
            self.left -= 1
            if self.left == 0:
                raise SimulatedKill


def stored_tracks(lake: Lake) -> int:
    return lake.read(BRONZE_SPOTIFY_RESPONSES).where(F.col("kind") == "track").count()


def test_killed_run_resumes_to_the_same_silver_fetching_only_the_rest_then_nothing(
    spark: SparkSession, settings: Settings, catalog: Catalog, tmp_path: Any
) -> None:
    with FakeSpotify(catalog, client_secret=SECRET) as fake:
        reference_lake = Lake(spark, str(tmp_path / "reference"))
        ingest(reference_lake, configure(settings, fake), fake)
        reference = reference_lake.content_hash(SILVER_TRACKS)
        lake = Lake(spark, str(tmp_path / "killed"))
        configure(settings, fake, checkpoint_batch=4)
        with pytest.raises(SimulatedKill):
            ingest(lake, settings, fake, progress=KillAfter(9))
        committed = stored_tracks(lake)
        before = fake.requests["track"]
        summary = ingest(lake, settings, fake)
        assert fake.requests["track"] - before == summary.requested - committed
        assert 0 < committed < summary.requested
        assert stored_tracks(lake) == summary.requested
        assert lake.content_hash(SILVER_TRACKS) == reference
        assert_all_accounted_for(lake, catalog, fake)
        calls = sum(fake.requests.values())
        ingest(lake, settings, fake)  # a finished plan: nothing left to fetch
        assert sum(fake.requests.values()) == calls
        assert lake.content_hash(SILVER_TRACKS) == reference


def test_plan_takes_owned_playlists_first_then_search_and_resumes_from_stored_pages(
    lake: Lake, settings: Settings, catalog: Catalog
) -> None:
    jazz, rock = catalog.search["jazz"], catalog.search["rock"]
    listed = [jazz[5], None, rock[0], jazz[5], jazz[7]]  # a local file, a rock track, a repeat
    with_playlist = dataclasses.replace(catalog, playlists={"pl1": listed})

    def plan_now(per_genre: int) -> list[store.PlannedTrack]:
        configure(settings, fake, playlists={"jazz": ["pl1"]}, per_genre=per_genre)
        responses = store.ResponseStore(lake, settings.ingest.spotify.checkpoint_batch)
        client = client_for(settings, fake)
        return Planner(responses, client, settings.ingest.spotify).plan()

    def expected(per_genre: int) -> list[tuple[str, str]]:
        rock_plan = rock[:per_genre]
        first = [jazz[5], jazz[7]]
        jazz_plan = first + [t for t in jazz if t not in [*rock_plan, *first]]
        return [(t, "rock") for t in rock_plan] + [(t, "jazz") for t in jazz_plan[:per_genre]]

    with FakeSpotify(with_playlist, client_secret=SECRET) as fake:
        plan = plan_now(PER_GENRE)
        requests = dict(fake.requests)
        assert plan_now(PER_GENRE) == plan  # the stored plan
        smaller = plan_now(PER_GENRE - 2)  # a new plan, from the stored pages
        assert fake.requests == requests  # neither asked anything
    assert requests == {"token": 1, "search": 2, "playlist": 1}
    assert [(p.track_id, p.genre) for p in plan] == expected(PER_GENRE)
    assert [p.position for p in plan] == list(range(len(plan)))
    assert [(p.track_id, p.genre) for p in smaller] == expected(PER_GENRE - 2)


# --- the store ---------------------------------------------------------------------------


def test_store_appends_each_batch_as_one_arrow_commit_with_no_spark_job(
    lake: Lake, spark: SparkSession
) -> None:
    """Also onto a table an older run created with a Spark write (an existing lake)."""
    schema = spec(BRONZE_SPOTIFY_RESPONSES).schema
    rows = [store.response("track", f"track|t{i}", f"t{i}", {"id": f"t{i}"}) for i in range(8)]
    first = spark.createDataFrame([tuple(rows[0].values())], schema)
    lake.write(first, BRONZE_SPOTIFY_RESPONSES, mode="append")
    responses = store.ResponseStore(lake, checkpoint_batch=3)
    context = spark.sparkContext
    context.setJobGroup("spotify-store", "appends from the driver")
    try:
        for row in rows[1:]:
            responses.add(row)
        responses.flush()
        no_jobs = context.statusTracker().getJobIdsForGroup("spotify-store")
        assert lake.read(BRONZE_SPOTIFY_RESPONSES).count() == len(
            rows
        )  # the tracker does see a job
        assert context.statusTracker().getJobIdsForGroup("spotify-store")
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    if lake.engine.name == "delta-rs":
        assert no_jobs == []
    assert (responses.commits, responses.rows) == (3, 7)  # 3 + 3 + the flushed 1
    assert lake.version(BRONZE_SPOTIFY_RESPONSES) == 3
    assert [h["operation"] for h in lake.history(BRONZE_SPOTIFY_RESPONSES)] == ["APPEND"] * 4
    expected = spark.createDataFrame([tuple(r.values()) for r in rows], schema)
    assertDataFrameEqual(lake.read(BRONZE_SPOTIFY_RESPONSES), expected)
    extra = store.response("artist", "artist|a", "a", {"id": "a"})
    table = pa.Table.from_pylist([extra], schema=first.toArrow().schema)
    assert (
        lake.append_arrow(BRONZE_SPOTIFY_RESPONSES, table)
        == lake.version(BRONZE_SPOTIFY_RESPONSES)
        == 4
    )


# --- flatten (pure) --------------------------------------------------------------------


def test_responses_to_raw_joins_plan_tracks_and_features(spark: SparkSession) -> None:
    def row(kind: str, key: str, obj: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        return {
            "request_key": key,
            "kind": kind,
            "object_id": obj,
            "genre": kw.get("genre"),
            "position": kw.get("position"),
            "provider": kw.get("provider", "spotify"),
            "status": kw.get("status", 200),
            "body": json.dumps(body) if body is not None else None,
            "reject_reason": kw.get("reason"),
            "fetched_at": None,
        }

    track = {
        "id": "a",
        "name": "Song A",
        "artists": [{"id": "x", "name": "X"}, {"id": "y", "name": "Y"}],
        "album": {"release_date": "1999-05", "release_date_precision": "month"},
        "duration_ms": 200000,
    }
    recco = {
        "id": "uuid",
        "href": "https://open.spotify.com/track/a",
        "tempo": 120.5,
        "key": 5,
        "mode": 1,
        "energy": 0.5,
        "loudness": -7.25,
    }
    rows = [
        row("plan", "plan|p1|a", "a", genre="rock", position=0),
        row("plan", "plan|p1|b", "b", genre="rock", position=1),
        row("plan", "plan|p1|c", "c", genre="jazz", position=2),
        row("plan", "plan|p0|z", "z", genre="jazz", position=0),  # another plan: not landed
        row("track", "track|a", "a", {**track, "popularity": 42}),
        row("track", "track|b", "b", status=404, reason="track_not_found"),
        row("track", "track|c", "c", {**track, "id": "c", "album": {"release_date": "2001"}}),
        row("audio_features", "audio_features|a", "a", recco, provider="reccobeats"),
        row("audio_features", "audio_features|b", "b", reason="no_audio_features"),
        row("audio_features", "audio_features|c", "c", reason="no_audio_features"),
    ]
    responses = spark.createDataFrame(
        [tuple(r[f.name] for f in spec(BRONZE_SPOTIFY_RESPONSES).schema.fields) for r in rows],
        spec(BRONZE_SPOTIFY_RESPONSES).schema,
    )
    raw = responses_to_raw(responses, "p1")
    assert [(f.name, f.dataType) for f in raw.schema] == [
        (f.name, f.dataType) for f in raw_row_schema()
    ]
    got = raw.drop("ingested_at")
    names = got.columns
    expected_rows = [
        {
            "track_id": "a",
            "title": "Song A",
            "artist": "X, Y",
            "genre": "rock",
            "year": "1999",
            "tempo": "120.5",
            "energy": "0.5",
            "loudness": "-7.25",
            "duration_ms": "200000",
            "key": "5",
            "mode": "1",
            "popularity": "42",
            "source_row": 0,
            "reject_reason": None,
        },
        {"track_id": "b", "genre": "rock", "source_row": 1, "reject_reason": "track_not_found"},
        {
            "track_id": "c",
            "title": "Song A",
            "artist": "X, Y",
            "genre": "jazz",
            "year": "2001",
            "duration_ms": "200000",
            "source_row": 2,
            "reject_reason": "no_audio_features",
        },
    ]
    expected = spark.createDataFrame(
        [tuple({"source": "spotify", **r}.get(n) for n in names) for r in expected_rows], got.schema
    )
    assertDataFrameEqual(got, expected)


# --- secrets ---------------------------------------------------------------------------


def cli_args(fake: FakeSpotify, lake_path: str) -> list[str]:
    overrides = fake.settings(backoff_s=0.01, max_attempts=4)
    sets = [arg for k, v in overrides.items() for arg in ("--set", f"ingest.spotify.{k}={v}")]
    genres = ",".join(GENRES)
    return [
        "ingest",
        "spotify",
        "--genres",
        genres,
        "--per-genre",
        str(PER_GENRE),
        "--lake",
        lake_path,
        *sets,
    ]


def test_cli_without_credentials_names_the_variables_and_dotenv(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"SPOTIPY_CLIENT_ID": None, "SPOTIPY_CLIENT_SECRET": None}
    result = CliRunner().invoke(
        app, ["ingest", "spotify", "--lake", str(tmp_path / "lake")], env=env
    )
    assert result.exit_code == 2
    for needle in ("SPOTIPY_CLIENT_ID", "SPOTIPY_CLIENT_SECRET", ".env"):
        assert needle in result.output


def test_the_secret_is_nowhere_logs_output_tables_files_or_errors(
    lake: Lake,
    settings: Settings,
    catalog: Catalog,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real CLI run (verbose, debug logging on) and a refused one; then search everything."""
    monkeypatch.chdir(tmp_path)
    for name in ("urllib3", "genre_spark"):
        caplog.set_level(logging.DEBUG, logger=name)
    env = {"SPOTIPY_CLIENT_ID": "fake-client-id", "SPOTIPY_CLIENT_SECRET": SECRET}
    basic = base64.b64encode(f"fake-client-id:{SECRET}".encode()).decode()
    runner = CliRunner()
    with FakeSpotify(
        catalog, client_secret=SECRET, faults=[Fault("track", "expire", after=2)]
    ) as fake:
        ok = runner.invoke(app, [*cli_args(fake, settings.lake), "--no-progress", "-v"], env=env)
        wrong_env = {**env, "SPOTIPY_CLIENT_SECRET": SECRET + "-wrong"}
        refused = runner.invoke(
            app, [*cli_args(fake, str(tmp_path / "other")), "-v"], env=wrong_env
        )
        pid = plan_id(configure(settings, fake).ingest.spotify)
    assert ok.exit_code == 0, ok.output
    assert f"spotify plan {pid}" in ok.output
    assert refused.exit_code == 1 and "invalid_client" in refused.output
    assert "Traceback" in refused.output  # -v printed the whole exception chain
    needles = (SECRET, basic)
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, ok.output, refused.output):
        assert not any(n in text for n in needles)
    assert "/api/token" in caplog.text  # the token exchanges were logged at DEBUG
    assert not (tmp_path / ".cache").exists()  # MemoryCacheHandler: no token file
    infos = lake.tables()
    assert {i.name for i in infos} >= {
        BRONZE_SPOTIFY_RESPONSES,
        BRONZE_TRACKS_RAW,
        SILVER_TRACKS,
    }
    for info in infos:
        df = lake.read(info.name)
        strings = [f.name for f in df.schema.fields if f.dataType.typeName() == "string"]
        found = [F.coalesce(F.col(c).contains(n), F.lit(False)) for c in strings for n in needles]
        hits = df.where(functools.reduce(operator.or_, found, F.lit(False)))
        assert hits.count() == 0, info.name
    title = catalog.tracks[catalog.search["rock"][0]].name
    probe = lake.read(BRONZE_SPOTIFY_RESPONSES).where(F.col("body").contains(title))
    assert probe.count() > 0  # the same scan does find what is there
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n.encode() in data for n in needles), path
