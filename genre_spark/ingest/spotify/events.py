"""Progress events: how the ingester says where it is, without knowing who listens.

The library calls an ``OnProgress`` callback with these events; the CLI turns
them into progress bars, a test may count them, library use ignores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Planning:
    """Planning has reached this genre (its playlists and search pages are walked next)."""

    genre: str


@dataclass(frozen=True)
class Fetching:
    """The genre's tracks are about to be fetched: ``total`` planned, ``done`` already in bronze."""

    genre: str
    total: int
    done: int


@dataclass(frozen=True)
class TrackDone:
    """One more of the genre's tracks is complete (fetched or tombstoned)."""

    genre: str


ProgressEvent = Planning | Fetching | TrackDone
OnProgress = Callable[[ProgressEvent], None]


def ignore(event: ProgressEvent) -> None:
    """The default listener: nobody is watching."""
