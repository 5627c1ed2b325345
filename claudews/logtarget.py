"""
Where twistd sends the log, as far as claudews must know: whether a
freshly generated token may be written there, and which log file to make
private before twistd opens it.

The signal is twistd's own configuration (the plugin's options' C{parent}),
not whether standard output is a terminal: under systemd, C{twistd -n}
writes to a pipe into the journal, which is on disk, while a developer
piping the log through C{grep} would lose the token for no reason. The
token is shown only when the log goes to standard output and standard
output is not the journal (C{JOURNAL_STREAM}, which systemd sets to the
device and inode of the stream it connected); a log file, syslog or a
C{--logger} of unknown destination gets the token file's name instead.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Mapping

from attrs import frozen

#: The log file twistd writes when daemonized without --logfile.
DEFAULT_LOGFILE = "twistd.log"


def _is_journal(environ: Mapping[str, str], fd: int) -> bool:
    stream = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


@frozen
class LogTarget:
    """
    @ivar file: the log file twistd writes, or C{None}.
    @ivar shows_token: whether a generated token may be logged.
    """

    file: str | None
    shows_token: bool

    @classmethod
    def of(
        cls,
        twistd: Mapping[str, Any] | None,
        environ: Mapping[str, str] = os.environ,
        stdout: int = 1,
    ) -> LogTarget:
        """
        Where twistd, configured by C{twistd} (its L{ServerOptions}, or
        C{None} when not run by twistd: then the log is the caller's own
        and shows the token, as before), logs.
        """
        if twistd is None:
            return cls(None, True)
        if twistd.get("syslog") or twistd.get("logger"):
            return cls(None, False)
        logfile = twistd.get("logfile") or ""
        foreground = twistd.get("nodaemon") or twistd.get("debug")
        if foreground and logfile in ("", "-"):
            return cls(None, not _is_journal(environ, stdout))
        return cls(logfile or DEFAULT_LOGFILE, False)

    def make_private(self) -> None:
        """
        Create the log file mode 0600, or make an existing one so, before
        twistd opens it (its L{twisted.python.logfile.LogFile} keeps the
        mode of a file that exists, and creates a missing one under the
        umask: 0644). A file that is not a regular one (C{/dev/null}) is
        left alone.

        @raise OSError: it cannot be created.
        """
        if self.file is None:
            return
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
