"""What spotipy logs, made safe: no credential in any line, no false alarms.

spotipy logs every request at DEBUG with its headers: ``Authorization: Basic
<base64 id:secret>`` on the token request (``spotipy.oauth2``) and ``Bearer
<token>`` on every API call (``spotipy.client``). A filter on those two loggers
masks both values before any handler sees the line, so ``-v`` or a root logger
at DEBUG cannot leak them.

spotipy also logs every error status at ERROR (``HTTP Error for GET ...``),
before the retry policy has decided anything: a 503 that the next attempt
survives, or a 404 that becomes a quarantine row, would read as a failure. The
policy logs each wait and raises each stop itself, so those lines are demoted
to DEBUG (and kept only where DEBUG is enabled for that logger).
"""

from __future__ import annotations

import logging
import re

#: The loggers that write request headers.
SPOTIPY_LOGGERS = ("spotipy.client", "spotipy.oauth2")
#: The credential after ``Basic`` / ``Bearer`` (base64, or a token's URL-safe characters).
CREDENTIAL = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]+")
MASK = r"\1 ***"


class SpotipyLogGuard(logging.Filter):
    """Masks credentials in spotipy's lines and demotes its ERROR lines to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = CREDENTIAL.sub(MASK, message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def guard_spotipy_logs() -> None:
    """Install the guard on spotipy's loggers, once per process."""
    for name in SPOTIPY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SpotipyLogGuard) for f in logger.filters):
            logger.addFilter(SpotipyLogGuard())
