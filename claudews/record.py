"""
What a project keeps on record for whoever loads it next: its
metadata.json, with the prompts still open and the markers of processes
that may still run, and whether the server stopped cleanly.

A prompt is on record as open from before its first event until its
C{prompt.finished} is stored: a server that dies anywhere in between
leaves its successor a prompt to record as interrupted (L{claudews.recovery}).
"""

from typing import Any, Callable

from twisted.logger import Logger

from claudews import metadata


class Record:
    """
    @param fields: the project's own fields to write (path, session, ...).
    @param markers: the live process's markers, shared (it adds and drops).
    @param write: writes metadata.json (L{metadata.Writer}: under the
        server's fsync policy).
    @ivar error: why the last write failed, or C{None}.
    """

    _log = Logger()

    def __init__(
        self,
        directory: str,
        fields: Callable[[], dict[str, Any]],
        open_prompts: list[str],
        markers: list[str],
        write: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.directory = directory
        self._write = write
        self._fields = fields
        self.open_prompts = open_prompts
        self._markers = markers
        #: Only a clean close says True: a successor that finds False knows
        #: this server died, and checks the history's tail.
        self.clean = False
        self.error: OSError | None = None

    def save(self) -> bool:
        """
        Write metadata.json; whether that worked (a failure is logged).
        """
        try:
            self.write()
        except OSError as e:
            self._log.error("Could not write metadata of {path}: {error}", path=self._fields().get("path"), error=e)
            return False
        return True

    def write(self) -> None:
        """
        Write metadata.json, or raise L{OSError} (kept in L{error}).
        """
        data = self._fields()
        data.update(open_prompts=self.open_prompts, markers=self._markers, clean=self.clean)
        try:
            (self._write or metadata.write)(self.directory, data)
        except OSError as e:
            self.error = e
            raise
        self.error = None

    def opened(self, prompt_id: str) -> bool:
        """
        Put C{prompt_id} on record as open; whether that was written (when
        not, it is taken off again).
        """
        self.open_prompts.append(prompt_id)
        if self.save():
            return True
        self.settled(prompt_id)
        return False

    def settled(self, prompt_id: str) -> None:
        """
        C{prompt_id}'s C{prompt.finished} is stored: it is no longer open.
        """
        if prompt_id in self.open_prompts:
            self.open_prompts.remove(prompt_id)
        self.save()
