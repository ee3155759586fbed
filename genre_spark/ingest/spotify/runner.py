"""One ``genre ingest spotify`` run: plan, fetch with checkpoints, flatten, land, refresh silver.

Only wiring: each step lives in its own module (``plan``, ``fetch``, ``store``,
``flatten``). A stop the user can resume from (``IngestStop``: rate limit
beyond the cap, an outage, no feature provider) or Ctrl-C commits what is
buffered first; running the same command again then fetches only the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genre_spark.config import Settings
from genre_spark.ingest.land import IngestSummary, land, refresh_silver
from genre_spark.ingest.spotify.client import SpotifyClient
from genre_spark.ingest.spotify.credentials import load_credentials
from genre_spark.ingest.spotify.errors import IngestStop
from genre_spark.ingest.spotify.events import OnProgress, ignore
from genre_spark.ingest.spotify.fetch import Fetcher
from genre_spark.ingest.spotify.flatten import responses_to_raw
from genre_spark.ingest.spotify.plan import Planner
from genre_spark.ingest.spotify.providers import make_provider
from genre_spark.ingest.spotify.store import SOURCE_NAME, ResponseStore
from genre_spark.lake import Lake


@dataclass(frozen=True)
class SpotifyIngestSummary:
    plan_id: str
    requested: int
    per_genre: dict[str, int]
    providers: dict[str, int]
    commits: int
    responses: int
    faults: dict[str, Any]
    silver: IngestSummary


def run(
    lake: Lake,
    settings: Settings,
    client: SpotifyClient | None = None,
    progress: OnProgress = ignore,
    environ: Mapping[str, str] | None = None,
) -> SpotifyIngestSummary:
    """Ingest ``settings.ingest.spotify.genres`` x ``per_genre`` tracks; resumable by re-running."""
    cfg = settings.ingest.spotify
    if client is None:
        client = SpotifyClient(cfg, load_credentials(environ, cfg.dotenv))
    store = ResponseStore(lake, cfg.checkpoint_batch)
    planner = Planner(store, client, cfg, progress)
    fetcher = Fetcher(store, client, make_provider(cfg, client), progress)
    try:
        plan = planner.plan()
        fetched = fetcher.fetch(plan, cfg.genres)
    except (IngestStop, KeyboardInterrupt):
        store.flush()
        raise
    store.flush()
    land(lake, responses_to_raw(store.read(), planner.plan_id), SOURCE_NAME)
    silver = refresh_silver(lake, settings)
    return SpotifyIngestSummary(
        plan_id=planner.plan_id,
        requested=len(plan),
        per_genre=dict(Counter(t.genre for t in plan)),
        providers=dict(Counter(fetched.features[t.track_id] for t in plan)),
        commits=store.commits,
        responses=store.rows,
        faults=client.stats.as_dict(),
        silver=silver,
    )
