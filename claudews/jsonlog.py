"""
Logs as JSON, one object per line, for log collectors::

    twistd -n --logger claudews.jsonlog.observer claudews
    CLAUDEWS_JSON_LOG=/var/log/claudews.json twistd --logger claudews.jsonlog.observer claudews

twistd calls L{observer} with no argument, before it starts logging; the
events go to standard output, or to the file named by C{CLAUDEWS_JSON_LOG}
(appended to, created mode 0600: a log file is for its owner alone). A
daemon's standard output is C{/dev/null}, so a daemon needs the file.

Each line is L{twisted.logger.jsonFileLogObserver}'s: the event's fields,
its C{log_format}, its level and time, preceded by the record separator
that L{twisted.logger.eventsFromJSONLogFile} reads back.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Mapping

from twisted.logger import FileLogObserver, jsonFileLogObserver

#: The environment variable naming the file to write to.
FILE_VARIABLE = "CLAUDEWS_JSON_LOG"


def open_private(path: str) -> IO[str]:
    """
    Open C{path} for appending text, creating it mode 0600 and making an
    existing one so.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        # /dev/stdout or another file that is not ours to change.
        pass
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def observer(
    out: IO[str] | None = None, environ: Mapping[str, str] = os.environ
) -> FileLogObserver:
    """
    A JSON log observer writing to C{out}, else the file in
    C{CLAUDEWS_JSON_LOG}, else standard output.

    Standard output is taken now: once twistd logs, C{sys.stdout} is
    redirected into the log itself.
    """
    if out is None:
        path = environ.get(FILE_VARIABLE)
        out = open_private(path) if path and path != "-" else sys.stdout
    return jsonFileLogObserver(out)
