"""One error base: every project exception is a GenreError, and the CLI maps its exit code once."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import typer

import genre_spark
from genre_spark.cli import handled
from genre_spark.errors import BAD_USAGE, JOB_FAILED, GenreError, UsageError


def _project_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a genre_spark module (each module imported once)."""
    found = {}
    for info in pkgutil.walk_packages(genre_spark.__path__, "genre_spark."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("genre_spark."):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def test_every_project_exception_is_a_genre_error_with_a_unique_name() -> None:
    classes = _project_exceptions()
    assert len(classes) > 50  # the walk found the package's errors, not an empty list
    assert [c.__qualname__ for c in classes if not issubclass(c, GenreError)] == []
    names = [c.__qualname__ for c in classes]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
    assert {c.exit_code for c in classes} == {JOB_FAILED, BAD_USAGE}


class _BrokenState(GenreError):
    """A job failure for the test."""


class _BadFlag(UsageError):
    """Bad usage for the test."""


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (_BadFlag("--flag must be positive\nsecond line"), 2, "error: --flag must be positive"),
        (
            _BrokenState("table is half written\ndetail"),
            1,
            "error: _BrokenState: table is half written",
        ),
        (OSError("disk full"), 1, "error: OSError: disk full"),
    ],
    ids=["usage", "genre-failure", "other-exception"],
)
def test_handled_exits_with_the_errors_code_and_one_line(
    error: Exception, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as exited, handled(verbose=False):
        raise error
    assert exited.value.exit_code == code
    printed = capsys.readouterr().err.splitlines()
    assert printed[0] == line
    hint = "(run again with --verbose for the traceback)"
    assert (hint in printed) == (code == JOB_FAILED)
