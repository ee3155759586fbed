"""The project's one error base, and the exit codes the CLI derives from it.

Every exception the library raises on purpose derives from :class:`GenreError`
and says with ``exit_code`` whose problem it is: ``JOB_FAILED`` (1) when the
job could not finish (the data, the lake's state, an outside service) and
``BAD_USAGE`` (2) when the command line or the configuration asks for
something that cannot be done. The CLI maps ``GenreError`` once (``cli.handled``)
instead of catching and re-wrapping errors command by command, so a library
error exits the same way whichever command meets it.

The few errors that more than one stage raises live here rather than being
defined once per stage under the same name.
"""

from __future__ import annotations

JOB_FAILED = 1
BAD_USAGE = 2


class GenreError(Exception):
    """Base of every genre-spark error: a one-line message and the exit code it ends a command with."""

    exit_code: int = JOB_FAILED


class UsageError(GenreError):
    """Bad usage or configuration, detected before or while the command runs: exit code 2.

    Its message is told as is (no type name, no traceback hint): it is the
    user's to fix, not a failure to debug.
    """

    exit_code = BAD_USAGE


class MissingColumnError(GenreError):
    """A table or file lacks a column the stage needs (the message names the columns and where)."""


class NoTrainingDataError(GenreError):
    """The train (or validation) split has too little to learn from: too few genres, no rows,
    or no value to estimate a statistic from."""
