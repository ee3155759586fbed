"""Crash safety of a Spotify checkpoint: ``genre ingest spotify`` SIGKILLed inside a commit.

The job is the real CLI (``tests/cli_harness.py``) in its own process session
against the fake Spotify server on loopback, started here. Its third commit
to bronze.spotify_responses stops after the checkpoint's files are written
and before the log entry; the test kills the whole session there. The
responses committed before stay readable, version by version, and the
killed checkpoint's rows are in none of them. Running the same command again
resumes, and silver and quarantine end exactly as an uninterrupted run
leaves them. Only the command line and the fake's public setup are used, so
the test holds whatever the ingester does inside.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_spotify import Catalog, FakeSpotify
from pyspark.sql import SparkSession
from subprocesses import kill_at, start_harness
from typer.testing import CliRunner

from genre_spark.cli import app
from genre_spark.lake import Lake
from genre_spark.lake.catalog import BRONZE_QUARANTINE, BRONZE_SPOTIFY_RESPONSES, SILVER_TRACKS

CLIENT_ID = "crash-test-client"
SECRET = "crash-test-secret-5e4d3c"
#: Tables a re-run must leave exactly as an uninterrupted run does.
OUTCOME = (SILVER_TRACKS, BRONZE_QUARANTINE)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSpotify]:
    catalog = Catalog.generate(("rock", "jazz"), per_genre=8, seed=23)
    with FakeSpotify(catalog, client_id=CLIENT_ID, client_secret=SECRET) as server:
        yield server


def ingest_args(fake: FakeSpotify, lake: Path) -> list[str]:
    """The one command every run here uses: small checkpoints, the fake's endpoints."""
    overrides = {
        **fake.settings(),
        "checkpoint_batch": 4,
        "dotenv": str(lake.parent / "absent.env"),
    }
    sets = [a for k, v in overrides.items() for a in ("--set", f"ingest.spotify.{k}={v}")]
    return ["ingest", "spotify", "--genres", "rock,jazz", "--per-genre", "8", "--no-progress",
            "--lake", str(lake), *sets]  # fmt: skip


def ingest_here(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", SECRET)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_killed_inside_a_checkpoint_commit_keeps_earlier_ones_and_resumes_to_the_same_tables(
    spark: SparkSession, fake: FakeSpotify, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_root, job = tmp_path / "killed" / "lake", tmp_path / "job"
    spec = {
        "markers": str(job / "markers"),
        "commands": [
            {
                "args": ingest_args(fake, killed_root),
                "hooks": [{"kind": "pause_at_commit", "table": BRONZE_SPOTIFY_RESPONSES, "nth": 3}],
            }
        ],
    }
    proc = start_harness(spec, job, SPOTIPY_CLIENT_ID=CLIENT_ID, SPOTIPY_CLIENT_SECRET=SECRET)
    # Meanwhile, the uninterrupted run the resumed one must match.
    reference = Lake(spark, str(tmp_path / "uninterrupted" / "lake"))
    ingest_here(ingest_args(fake, Path(reference.root)), monkeypatch)
    paused = kill_at(job / "markers" / "paused.json", proc, job / "job.log")

    killed = Lake(spark, str(killed_root))
    assert (
        killed.version(BRONZE_SPOTIFY_RESPONSES) == 1
    )  # two checkpoints committed, the third killed
    unseen = set(paused["files"])
    assert unseen and all(
        (Path(killed.path(BRONZE_SPOTIFY_RESPONSES)) / f).exists() for f in unseen
    )
    rows = [killed.read(BRONZE_SPOTIFY_RESPONSES, version).count() for version in (0, 1)]
    assert 0 < rows[0] < rows[1]  # each earlier checkpoint reads whole
    assert not unseen & {os.path.basename(f) for f in killed.files(BRONZE_SPOTIFY_RESPONSES)}
    assert not killed.exists(SILVER_TRACKS)

    ingest_here(ingest_args(fake, killed_root), monkeypatch)  # the same command again
    for name in OUTCOME:
        assert killed.content_hash(name) == reference.content_hash(name), name
    assert (
        killed.read(BRONZE_SPOTIFY_RESPONSES, 1)
        .subtract(killed.read(BRONZE_SPOTIFY_RESPONSES))
        .count()
        == 0
    )
