"""
Every log event published while a test runs, for tests of what the log
says (and must not say).
"""

import re

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase


class LogCapture:
    """
    Every log event published while a test runs, formatted.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.events: list[dict] = []
        self._observer = self.events.append
        globalLogPublisher.addObserver(self._observer)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._observer)

    def lines(self, pattern: str = "") -> list[str]:
        formatted = [formatEvent(e) or "" for e in self.events]
        return [line for line in formatted if re.search(pattern, line)]

    def text(self) -> str:
        # Every field too: an observer may print those.
        return "\n".join(self.lines()) + "\n" + "\n".join(repr(e) for e in self.events)


