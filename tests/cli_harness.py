"""Run ``genre`` commands in one process, with test-only fault hooks; tests start it as a subprocess.

``python tests/cli_harness.py SPEC.json`` runs the spec's commands one after
another through the real CLI (``genre_spark.cli.app``, one Spark session
for all of them) and prints ``=== exit N`` (stderr) after each. A command may carry
hooks, installed for that command only. They synchronise with the test
through marker files in the spec's ``markers`` folder, so a test kills or
releases this process at an exact point instead of after a guessed sleep:

- ``pause_before_write`` (``table``, ``nth``): the nth ``Lake.write`` of
  ``table`` in this command writes ``paused.json`` and blocks forever, so
  the test can SIGKILL the process between two commits of a stage.
- ``pause_at_commit`` (``table``, ``nth``): the nth Delta commit to
  ``table`` stops inside the commit step, after every part file is written
  and before the log entry: ``paused.json`` lists the files, then it blocks.
- ``pause_in_replace`` (``table``, ``nth``): the nth ``Lake.replace`` of
  ``table`` has its rows pass a task that, once the first batch has gone to
  the writer, writes ``paused.json`` and blocks: the kill lands while the
  replace's files are being written, on either engine (``pause_at_commit``
  hooks the delta-rs engine's commit step only).
- ``commit_in_turn`` (``table``, ``name``, ``peers``, ``after``): the commit
  to ``table`` writes ``at-commit-<name>``, waits until every peer is at its
  commit too, then (``after``) until that peer has committed; it writes
  ``committed-<name>`` when its own commit returns. Two processes with this
  hook both build their write from the same table version, then commit in
  a fixed order.
- ``before_land`` (``action``: ``remove`` | ``unreadable``): the CSV file is
  deleted (or its permissions cleared) after it was read and counted, just
  before ``land`` reads it again to write bronze: a file that vanishes or
  becomes unreadable mid-run.

The commit of a write runs in a Python worker that Spark starts, not here:
the two commit hooks register a subclass of the lake's data source defined
in this ``__main__``, which Spark ships to that worker by value.
A partition replace (``Lake.replace``) is paused the same way
(``pause_at_commit`` on its table), or mid-write with ``pause_in_replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

#: Longest a hook waits for a peer's marker: far beyond any test's need, short
#: enough that a broken test does not leave a process behind for long.
PEER_WAIT_S = 600.0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (rename), so a test polling for the file never reads half of it."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    partial.rename(path)


def _wait_for(*paths: Path) -> None:
    deadline = time.monotonic() + PEER_WAIT_S
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no marker {[str(p) for p in paths]} after {PEER_WAIT_S} s")
        time.sleep(0.05)


def _block_forever() -> None:
    while True:
        time.sleep(3600)


def _count(markers: Path, key: str) -> int:
    """How many times ``key`` was seen, across processes (one byte appended per call)."""
    with open(markers / f"count-{key}", "ab") as fh:
        fh.write(b".")
        return fh.tell()


# --- hooks ------------------------------------------------------------------------


def pause_before_write(
    markers: Path, table: str, nth: int = 1
) -> contextlib.AbstractContextManager:
    from genre_spark.lake import Lake

    real = Lake.write

    def write(self: Lake, df: Any, name: str, *args: Any, **kwargs: Any) -> int:
        if name == table and _count(markers, f"write-{table}") == nth:
            _write_json(markers / "paused.json", {"table": name, "before": "write"})
            _block_forever()
        return real(self, df, name, *args, **kwargs)

    return mock.patch.object(Lake, "write", write)


def _commit_hooked(
    on_commit: Callable[[str, list[dict[str, Any]]], Callable[[], None] | None],
) -> contextlib.AbstractContextManager:
    """Make every delta-rs commit call ``on_commit(path, files)`` first.

    Two places commit: a Spark write's commit runs in the worker that Spark
    starts (the data source subclass below), the driver's Arrow appends
    (``append_arrow``) call ``deltars_log.commit_files`` here. ``on_commit`` runs before the
    real commit; what it returns (if anything) runs after the commit returned.
    """
    from genre_spark.lake import deltars, deltars_log

    engine = os.environ.get("GENRE_ENGINE", "auto")
    if engine != "delta-rs":  # delta-spark commits inside the JVM's save: nothing to pause there
        raise RuntimeError(f"commit hooks pause delta-rs's commit; this job's engine is {engine}")

    class HookedWriter(deltars._DeltaRsWriter):
        def commit(self, messages: list[Any]) -> None:
            files = [f for m in messages if m is not None for f in m.files]
            after = on_commit(self.path, files)
            super().commit(messages)
            if after is not None:
                after()

    class HookedSource(deltars.DeltaRsSource):
        def writer(self, schema: Any, overwrite: bool) -> HookedWriter:
            hooked = HookedWriter.__new__(HookedWriter)  # the real writer's state, our commit
            hooked.__dict__.update(vars(super().writer(schema, overwrite)))
            return hooked

    real_commit_files = deltars_log.commit_files

    def commit_files(path: str, schema: Any, files: list[dict[str, Any]], *args: Any) -> None:
        after = on_commit(path, files)
        real_commit_files(path, schema, files, *args)
        if after is not None:
            after()

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(deltars, "DeltaRsSource", HookedSource))
    stack.enter_context(mock.patch.object(deltars_log, "commit_files", commit_files))
    return stack


def _is_table(path: str, table: str) -> bool:
    return Path(path).parts[-2:] == tuple(table.split(".", 1))


def pause_at_commit(markers: Path, table: str, nth: int = 1) -> contextlib.AbstractContextManager:
    def on_commit(path: str, files: list[dict[str, Any]]) -> None:
        if _is_table(path, table) and _count(markers, f"commit-{table}") == nth:
            names = [f["path"] for f in files]
            _write_json(markers / "paused.json", {"table": table, "path": path, "files": names})
            _block_forever()

    return _commit_hooked(on_commit)


def pause_in_replace(markers: Path, table: str, nth: int = 1) -> contextlib.AbstractContextManager:
    from genre_spark.lake import Lake

    real = Lake.replace
    marker = str(markers / "paused.json")

    def hold(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield batch
            _write_json(Path(marker), {"table": table, "in": "replace"})
            _block_forever()

    def replace(self: Lake, df: Any, name: str, *args: Any, **kwargs: Any) -> int:
        if name == table and _count(markers, f"replace-{table}") == nth:
            df = df.mapInArrow(hold, df.schema)
        return real(self, df, name, *args, **kwargs)

    return mock.patch.object(Lake, "replace", replace)


def commit_in_turn(
    markers: Path, table: str, name: str, peers: list[str], after: str | None = None
) -> contextlib.AbstractContextManager:
    def on_commit(path: str, files: list[dict[str, Any]]) -> Callable[[], None] | None:
        if not _is_table(path, table):
            return None
        _write_json(markers / f"at-commit-{name}", {"files": [f["path"] for f in files]})
        _wait_for(*[markers / f"at-commit-{peer}" for peer in peers])
        if after is not None:
            _wait_for(markers / f"committed-{after}")
        return lambda: _write_json(markers / f"committed-{name}", {})

    return _commit_hooked(on_commit)


def before_land(markers: Path, action: str) -> contextlib.AbstractContextManager:
    from genre_spark.ingest import csv

    real = csv.land

    def land(lake: Any, raw: Any, source: str) -> int:
        path = source.removeprefix("csv:")
        if action == "remove":
            os.remove(path)
        else:
            os.chmod(path, 0)
        _write_json(markers / f"before-land-{action}", {"path": path})
        return real(lake, raw, source)

    return mock.patch.object(csv, "land", land)


HOOKS: dict[str, Callable[..., contextlib.AbstractContextManager]] = {
    "pause_before_write": pause_before_write,
    "pause_at_commit": pause_at_commit,
    "pause_in_replace": pause_in_replace,
    "commit_in_turn": commit_in_turn,
    "before_land": before_land,
}


@contextlib.contextmanager
def installed(markers: Path, hooks: list[dict[str, Any]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for hook in hooks:
            options = {k: v for k, v in hook.items() if k != "kind"}
            stack.enter_context(HOOKS[hook["kind"]](markers, **options))
        yield


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    markers = Path(spec["markers"])
    markers.mkdir(parents=True, exist_ok=True)
    from genre_spark.cli import app

    status = 0
    for command in spec["commands"]:
        with installed(markers, command.get("hooks", [])):
            try:
                code = app(command["args"], prog_name="genre", standalone_mode=False)
            except SystemExit as exc:  # click's own usage errors
                code = exc.code
        code = int(code or 0)
        sys.stdout.flush()
        print(f"=== exit {code}", file=sys.stderr, flush=True)
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
