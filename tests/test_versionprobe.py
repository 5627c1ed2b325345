"""
Tests for L{claudews.versionprobe} on its own (through the service in
tests/test_tap.py's ClaudeVersionTests).
"""

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from claudews.versionprobe import VERSION_TIMEOUT, VersionProbe
from tests.test_tap import _ProcessReactor


class _NoSpawnReactor(MemoryReactorClock):
    def spawnProcess(self, *args, **kwargs):
        raise OSError(2, "No such file or directory")


class VersionProbeTests(SynchronousTestCase):
    def test_an_answer_is_kept(self) -> None:
        """What the CLI prints, stripped, is the version."""
        reactor = _ProcessReactor()
        probe = VersionProbe(reactor, "claude")
        probe.start()
        [(executable, args, process)] = reactor.spawned
        self.assertEqual((executable, args), ("claude", ["claude", "--version"]))
        process.prints(b"2.1.0 (Claude Code)\n")
        process.ends(0)
        self.assertEqual(probe.version, "2.1.0 (Claude Code)")
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_a_cli_that_cannot_start_leaves_no_version(self) -> None:
        """A missing executable leaves the version None and stop fires at once."""
        probe = VersionProbe(_NoSpawnReactor(), "nope")
        probe.start()
        self.assertIsNone(probe.version)
        self.successResultOf(probe.stop())

    def test_a_hung_cli_is_killed(self) -> None:
        """No answer within VERSION_TIMEOUT: KILL."""
        reactor = _ProcessReactor()
        probe = VersionProbe(reactor, "claude")
        probe.start()
        [(_, _, process)] = reactor.spawned
        reactor.advance(VERSION_TIMEOUT)
        self.assertEqual(process.signals, ["KILL"])
        process.ends(None, 9)
        self.assertIsNone(probe.version)
