"""
Tests for L{claudews.versionprobe} on its own (through the service in
tests/test_tap.py's ClaudeVersionTests).
"""

import os
import shutil
import tempfile

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from claudews.versionprobe import VERSION_TIMEOUT, VersionProbe
from tests.logcapture import LogCapture
from tests.test_tap import _ProcessReactor, _executable


class _NoSpawnReactor(MemoryReactorClock):
    def spawnProcess(self, *args, **kwargs):
        raise OSError(2, "No such file or directory")


class VersionProbeTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-probe-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.base = base
        # Looked up on PATH, as "claude" is by default.
        _executable(base, "claude")
        self.env = {"PATH": base}

    def test_an_answer_is_kept(self) -> None:
        """What the CLI prints, stripped, is the version."""
        reactor = _ProcessReactor()
        probe = VersionProbe(reactor, "claude", self.env)
        probe.start()
        [(executable, args, process)] = reactor.spawned
        self.assertEqual((executable, args), ("claude", ["claude", "--version"]))
        process.prints(b"2.1.0 (Claude Code)\n")
        process.ends(0)
        self.assertEqual(probe.version, "2.1.0 (Claude Code)")
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_a_cli_that_cannot_start_leaves_no_version(self) -> None:
        """A missing executable leaves the version None and stop fires at once."""
        probe = VersionProbe(_NoSpawnReactor(), "claude", self.env)
        probe.start()
        self.assertIsNone(probe.version)
        self.successResultOf(probe.stop())

    def test_a_hung_cli_is_killed(self) -> None:
        """No answer within VERSION_TIMEOUT: KILL."""
        reactor = _ProcessReactor()
        probe = VersionProbe(reactor, "claude", self.env)
        probe.start()
        [(_, _, process)] = reactor.spawned
        reactor.advance(VERSION_TIMEOUT)
        self.assertEqual(process.signals, ["KILL"])
        process.ends(None, 9)
        self.assertIsNone(probe.version)

    def test_a_cli_not_on_path_is_one_line_and_not_run(self) -> None:
        """No CLI on PATH: problem says how to install it, logged once, nothing spawned."""
        log = LogCapture(self)
        reactor = _ProcessReactor()
        probe = VersionProbe(reactor, "claude", {"PATH": os.path.join(self.base, "empty")})
        probe.start()
        self.assertEqual(reactor.spawned, [])
        self.assertIsNotNone(probe.problem)
        self.assertIn("npm install -g @anthropic-ai/claude-code", probe.problem)
        self.assertEqual(len(log.lines("npm install")), 1)
        self.assertIsNone(probe.version)
        self.successResultOf(probe.stop())

    def test_the_cli_is_asked_with_the_configured_environment(self) -> None:
        """The configured env (PATH among it) reaches `claude --version`; problem stays None."""
        reactor = _ProcessReactor()
        seen: list = []
        spawn = reactor.spawnProcess

        def spawnProcess(protocol, executable, args=(), env=None, **kwargs):
            seen.append(env)
            return spawn(protocol, executable, args, env, **kwargs)

        reactor.spawnProcess = spawnProcess  # type: ignore[method-assign]
        probe = VersionProbe(reactor, "claude", dict(self.env, EXTRA="yes"))
        probe.start()
        self.assertIsNone(probe.problem)
        [env] = seen
        self.assertEqual((env["PATH"], env["EXTRA"]), (self.base, "yes"))
        [(_, _, process)] = reactor.spawned
        process.ends(0)


@pytest.mark.integration
def test_a_missing_cli_is_one_line_in_server_info_and_in_a_prompts_error(make_server, tmp_path):
    """A real twistd with no CLI: one start line, server.info's problem, a prompt failing with the same text."""
    missing = str(tmp_path / "no-claude-here")
    server = make_server(claude_bin=missing)
    c = server.connect()
    problem = c.ok("server.info")["claude"]["problem"]
    assert "npm install -g @anthropic-ai/claude-code" in problem and missing in problem
    server.wait_log("Claude Code CLI cannot be run")
    path = server.project_dir("app")
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    prompt_id = c.ok("prompt", path=path, prompt="hello")["prompt_id"]
    done = c.finished(prompt_id)
    assert done["status"] == "failed", done
    assert done["error"].endswith(problem), done
    server.stop_cleanly()
    log = "".join(server.log)
    assert log.count("npm install -g @anthropic-ai/claude-code") == 1, log
