"""What a test needs from the machine: skip, saying why, where it is missing; fail under CI.

A developer's machine may lack a browser; CI must not pass by skipping the
test that needs it, so under ``CI=true`` the same gap fails the test.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def lacking(what: str, how_to_get_it: str) -> NoReturn:
    """Skip the calling test because this machine lacks ``what``; under CI=true, fail it."""
    message = f"{what} is not installed ({how_to_get_it})"
    if under_ci():
        pytest.fail(f"{message}; CI=true, so this test fails instead of skipping")
    pytest.skip(message)
