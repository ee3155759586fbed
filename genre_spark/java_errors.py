"""What a PySpark failure says about its cause on the JVM side.

PySpark hands Java failures on as ``Py4JJavaError`` or as a captured
exception whose message names Spark's error condition. Code that must tell
one cause from another (a file that is gone, not a bug) reads the Java
exception chain here, once, instead of each caller matching its own strings.
"""

from __future__ import annotations

#: Spark's error conditions for a data file that is not there (read planned, or read by a task).
MISSING_FILE_CONDITIONS = ("PATH_NOT_FOUND", "FILE_NOT_EXIST")


def java_chain(exc: BaseException) -> list[tuple[str, str]]:
    """(class name, message) of the Java exception behind a PySpark error and of each cause."""
    throwable = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    chain: list[tuple[str, str]] = []
    while throwable is not None and len(chain) < 20:
        chain.append((throwable.getClass().getName(), str(throwable.getMessage() or "")))
        throwable = throwable.getCause()
    return chain


def says_missing_file(cls: str, message: str) -> bool:
    """Whether one exception (class name, message) says that a file is not there."""
    return cls.endswith(("FileNotFoundException", "NoSuchFileException")) or any(
        condition in message for condition in MISSING_FILE_CONDITIONS
    )


def is_missing_file(exc: BaseException) -> bool:
    """Whether ``exc`` is a read that failed because a file no longer exists (vacuumed, deleted).

    Python's own ``FileNotFoundError``, or ``says_missing_file`` of the error
    or of any Java exception in its chain. A permission problem is not a
    missing file, even where Java reports it as a ``FileNotFoundException``.
    """
    if isinstance(exc, FileNotFoundError):
        return True
    links = [(type(exc).__name__, str(exc)), *java_chain(exc)]
    if any("Permission denied" in message for _, message in links):
        return False
    return any(says_missing_file(cls, message) for cls, message in links)
