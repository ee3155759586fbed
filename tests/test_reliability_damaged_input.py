"""Damaged or unreadable CSV input: one ``error:`` line naming the file and the problem, nothing written.

Every case runs ``genre ingest csv`` through the real CLI in one subprocess
(``cli_harness.py``, one JVM for all of them) so that what a user sees on
the terminal is checked whole: the JVM's own log included, which a
``CliRunner`` cannot capture. Files that vanish or become unreadable
mid-run are removed (or chmod 000) by a hook after the file was read and
counted, just before ``land`` reads it again to write bronze. Running as
root, the job drops the capabilities that let root read any file.
"""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path

import pytest
from subprocesses import finish, start_harness, without_file_permission_override
from test_ingest_csv import TIDY_HEADER

#: What a Python traceback or a JVM error log looks like, line by line.
STACK_TRACE = re.compile(r"Traceback|^\s+at [\w$.<>]+\(|^Caused by|\bERROR\b|Exception|Py4J")
#: Long enough that gzip's first 8 KiB decompress fine and Spark meets the damage later.
ROWS = 4000


def tidy_rows(n: int, seed: int = 3) -> str:
    """TidyTuesday-shaped rows with varied values (so that gzip cannot squeeze them to nothing)."""
    rng = random.Random(seed)
    lines = [TIDY_HEADER]
    for i in range(n):
        values = [f"{rng.random():.6f}" for _ in range(9)]
        lines.append(
            f"t{i},Song {rng.randrange(10**9)},Artist {i % 97},{rng.randrange(101)},al{i},Album,"
            f"2019-06-14,Hits,p1,pop,dance pop,{values[0]},{values[1]},{rng.randrange(12)},"
            f"-{rng.uniform(1, 30):.3f},1,{values[2]},{values[3]},{values[4]},{values[5]},"
            f"{values[6]},{rng.uniform(60, 200):.3f},{rng.randrange(100_000, 400_000)}"
        )
    return "\n".join(lines) + "\n"


def corrupt_late(data: bytes) -> bytes:
    """Overwrite a stretch of the deflate stream well past its start: a bad block Spark meets."""
    at = len(data) * 3 // 4
    return data[:at] + bytes(range(256))[:200] + data[at + 200 :]


#: case -> (file name, bytes, hook action or None, what the error must say)
CASES = {
    "truncated gzip": ("truncated.csv.gz", "late-cut", None, r"truncated compressed data"),
    "gzip cut in its header block": ("cut.csv.gz", "early-cut", None, r"truncated gzip data"),
    "corrupt gzip": ("corrupt.csv.gz", "corrupt", None, r"corrupt data|not valid gzip data"),
    "not gzip at all": ("plain.csv.gz", "plain", None, r"not valid gzip data"),
    "binary file": ("photo.csv", "binary", None, r"binary data, not CSV text"),
    "empty file": ("empty.csv", "empty", None, r"empty file, no header line"),
    "header only": ("header.csv", "header", None, r"no data rows after the header"),
    "unreadable": ("locked.csv", "locked", None, r"cannot be read \(permission denied\)"),
    "vanishes mid-run": (
        "vanishing.csv",
        "good",
        "remove",
        r"the file vanished while it was being read",
    ),
    "unreadable mid-run": (
        "locking.csv",
        "good",
        "unreadable",
        r"became unreadable while it was being read \(permission denied\)",
    ),
}


def contents(kind: str) -> bytes:
    text = tidy_rows(ROWS)
    packed = gzip.compress(text.encode(), mtime=0)
    return {
        "late-cut": packed[: len(packed) * 2 // 3],
        "early-cut": packed[:40],
        "corrupt": corrupt_late(packed),
        "plain": text.encode(),
        "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
        "empty": b"",
        "header": (TIDY_HEADER + "\n\n\n").encode(),
        "locked": text.encode(),
        "good": text.encode(),
    }[kind]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, list[str], Path]]:
    """Every case through one harness run: case -> (exit code, its output lines, its lake)."""
    root = tmp_path_factory.mktemp("damaged")
    commands = []
    for name, kind, action, _ in CASES.values():
        path = root / name
        path.write_bytes(contents(kind))
        if kind == "locked":
            path.chmod(0)
        lake = root / f"lake-{name}"
        hooks = [{"kind": "before_land", "action": action}] if action else []
        commands.append({"args": ["ingest", "csv", str(path), "--lake", str(lake)], "hooks": hooks})
    proc = start_harness(
        {"markers": str(root / "markers"), "commands": commands},
        root,
        prefix=without_file_permission_override(),
    )
    log = finish(proc, root / "job.log")
    parts = re.split(r"^=== exit (\d+)\n", log, flags=re.MULTILINE)
    assert len(parts) == 2 * len(CASES) + 1, log[-5000:]
    found = {}
    for i, case in enumerate(CASES):
        output, code = parts[2 * i], int(parts[2 * i + 1])
        found[case] = (code, output.splitlines(), root / f"lake-{CASES[case][0]}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_damaged_input_is_one_error_line_naming_the_file_and_nothing_is_written(
    outcomes: dict[str, tuple[int, list[str], Path]], case: str
) -> None:
    name, _, _, said = CASES[case]
    code, lines, lake = outcomes[case]
    text = "\n".join(lines)
    assert code == 2, text
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, text
    assert re.search(rf"^error: \S*{re.escape(name)}: ({said})", errors[0]), errors[0]
    # No traceback, no JVM error log, no stack frame: the error line is all there is to read.
    noise = [line for line in lines if STACK_TRACE.search(line) and line != errors[0]]
    assert noise == [], text
    written = [p for p in lake.rglob("*") if p.is_file()] if lake.exists() else []
    assert written == [], written
