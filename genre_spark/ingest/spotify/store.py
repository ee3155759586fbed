"""bronze.spotify_responses: every response kept as received, and what a re-run reads back.

Writing: responses are buffered on the driver and appended ``checkpoint_batch``
at a time as one Arrow write and one atomic Delta commit each (no Spark job:
the rows are already on the driver). A killed run loses at most its buffer.

Reading: small keyed lookups that make a re-run resume: the stored plan, the
ids and ``next`` of stored search/playlist pages, and which of the plan's
tracks, features and artists are already here. Their size is the request's
(genres x per_genre), not the catalogue's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from genre_spark.lake import Lake
from genre_spark.lake.catalog import BRONZE_SPOTIFY_RESPONSES, spec
from genre_spark.schema import REJECT_REASON

log = logging.getLogger(__name__)

SOURCE_NAME = "spotify"

#: Reasons a requested track lands in quarantine instead of silver.
TRACK_NOT_FOUND = "track_not_found"
NO_AUDIO_FEATURES = "no_audio_features"
MALFORMED_RESPONSE = "malformed_response"
NOT_FETCHED = "not_fetched"
ARTIST_NOT_FOUND = "artist_not_found"


def _arrow_schema() -> pa.Schema:
    """The same schema in Arrow, for appends from the driver."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(spec(BRONZE_SPOTIFY_RESPONSES).schema, timezone="UTC")


def response(
    kind: str,
    request_key: str,
    object_id: str | None,
    body: Any = None,
    *,
    genre: str | None = None,
    position: int | None = None,
    provider: str = SOURCE_NAME,
    status: int = 200,
    reject_reason: str | None = None,
) -> dict[str, Any]:
    """A row of bronze.spotify_responses; the body is kept as received, as JSON text."""
    return {
        "request_key": request_key,
        "kind": kind,
        "object_id": object_id,
        "genre": genre,
        "position": position,
        "provider": provider,
        "status": status,
        "body": json.dumps(body, sort_keys=True) if body is not None else None,
        REJECT_REASON: reject_reason,
        "fetched_at": datetime.now(UTC),
    }


@dataclass(frozen=True)
class PlannedTrack:
    track_id: str
    genre: str
    position: int


@dataclass
class Fetched:
    """What bronze holds for the plan's tracks; the fetch adds to it as it goes."""

    tracks: set[str] = field(default_factory=set)
    features: dict[str, str] = field(default_factory=dict)  # track id -> provider
    artist_of: dict[str, str] = field(default_factory=dict)  # track id -> first artist id
    artists: set[str] = field(default_factory=set)


#: The parts of a stored page the planner reads back: search items are tracks,
#: playlist items wrap one (``{is_local, item}``); one schema parses both.
_PAGE_JSON = (
    "items array<struct<id: string, is_local: boolean, item: struct<id: string, type: string>>>, "
    "next string"
)


class ResponseStore:
    """Appends responses to bronze, ``checkpoint_batch`` per atomic commit, and reads them back."""

    def __init__(self, lake: Lake, checkpoint_batch: int) -> None:
        self.lake = lake
        self.checkpoint_batch = checkpoint_batch
        self.buffer: list[dict[str, Any]] = []
        self.commits = 0
        self.rows = 0

    # --- writing ----------------------------------------------------------------

    def add(self, row: dict[str, Any]) -> None:
        """Buffer one response; a full buffer is committed."""
        self.buffer.append(row)
        if len(self.buffer) >= self.checkpoint_batch:
            self.flush()

    def commit(self, rows: Iterable[dict[str, Any]]) -> None:
        """Commit the buffer and ``rows`` now, in one commit: ``rows`` land all or not at all."""
        self.buffer.extend(rows)
        self.flush()

    def flush(self) -> None:
        """One atomic commit of everything buffered (a no-op when empty)."""
        if not self.buffer:
            return
        version = self.lake.append_arrow(
            BRONZE_SPOTIFY_RESPONSES, pa.Table.from_pylist(self.buffer, schema=_arrow_schema())
        )
        self.commits += 1
        self.rows += len(self.buffer)
        log.info(
            "checkpoint: %d responses committed to %s (version %d)",
            len(self.buffer),
            BRONZE_SPOTIFY_RESPONSES,
            version,
        )
        self.buffer = []

    # --- reading ----------------------------------------------------------------

    def read(self) -> DataFrame:
        return self.lake.read(BRONZE_SPOTIFY_RESPONSES)

    def stored_plan(self, plan_id: str) -> list[PlannedTrack] | None:
        """The plan stored under ``plan_id``, in order; None when there is none."""
        if not self.lake.exists(BRONZE_SPOTIFY_RESPONSES):
            return None
        rows = (
            self.read()
            .where((F.col("kind") == "plan") & F.col("request_key").startswith(f"plan|{plan_id}|"))
            .select("object_id", "genre", "position")
            .distinct()
            .orderBy("position")
            .collect()
        )
        return [PlannedTrack(r.object_id, r.genre, r.position) for r in rows] or None

    def stored_pages(self, genres: list[str]) -> dict[str, dict[str, Any]]:
        """Request key -> ``{"items": [...], "next": ...}`` of the stored pages of these genres."""
        if not self.lake.exists(BRONZE_SPOTIFY_RESPONSES):
            return {}
        pages = self.read().where(
            F.col("kind").isin("search", "playlist_items") & F.col("genre").isin(*genres)
        )
        stored = {}
        for r in pages.select("request_key", F.from_json("body", _PAGE_JSON).alias("p")).collect():
            page = r.p.asDict(recursive=True)
            stored[r.request_key] = {"items": page["items"] or [], "next": page["next"]}
        return stored

    def fetched(self, track_ids: list[str]) -> Fetched:
        """Which of these tracks, their features and their first artists bronze already holds."""
        if not self.lake.exists(BRONZE_SPOTIFY_RESPONSES) or not track_ids:
            return Fetched()
        responses = self.read()
        done = (
            responses.where(F.col("kind").isin("track", "audio_features"))
            .join(self._ids(track_ids), "object_id", "left_semi")
            .select(
                "kind",
                "object_id",
                "provider",
                F.get_json_object("body", "$.artists[0].id").alias("artist_id"),
            )
            .collect()
        )
        fetched = Fetched()
        for r in done:
            if r.kind == "track":
                fetched.tracks.add(r.object_id)
                if r.artist_id:
                    fetched.artist_of[r.object_id] = r.artist_id
            else:
                fetched.features[r.object_id] = r.provider
        artist_ids = sorted(set(fetched.artist_of.values()))
        if artist_ids:
            fetched.artists = {
                r.object_id
                for r in responses.where(F.col("kind") == "artist")
                .join(self._ids(artist_ids), "object_id", "left_semi")
                .select("object_id")
                .collect()
            }
        return fetched

    def _ids(self, ids: list[str]) -> DataFrame:
        return self.lake.spark.createDataFrame([(i,) for i in ids], "object_id string")
