"""
Tests for L{claudews.liveprocess}: a project's one live CLI process and
its slot, with fake slots and process trees on the fake process reactor
of L{tests.test_project}.
"""

from typing import Any, Callable

import os
import attrs
from twisted.internet import defer
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from claudews import proctree
from claudews.config import ProjectConfig
from claudews.errors import RequestError
from claudews.liveprocess import LiveProcess
from claudews.runner import ClaudeProcess
from tests.test_project import FakeCLI, ProcessReactor

GRACE = 5.0
MODEL = ("--model", "opus")
PREFIX = "cwtest-"


class Owner:
    """The project, as the supervisor knows it."""

    def close_process(self) -> None:
        raise AssertionError("the supervisor is not involved here")


class FakeSlots:
    """The supervisor's cap, granting at once and recording the rest."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def acquire(self, owner: object) -> defer.Deferred[None]:
        self.calls.append(("acquire", owner))
        return defer.succeed(None)

    def release(self, owner: object) -> None:
        self.calls.append(("release", owner))

    def exited(self, owner: object) -> None:
        self.calls.append(("exited", owner))

    def forget(self, owner: object) -> None:
        self.calls.append(("forget", owner))

    def named(self, name: str) -> int:
        return [call for call, _ in self.calls].count(name)


@attrs.define
class Ending:
    """One L{FakeTrees.end} call; the test fires C{done}."""

    pid: int | None
    marker: str | None
    grace: float
    exclude: list[Any]
    done: defer.Deferred[list[Any]]
    only_older: bool = False


class FakeTrees:
    """Process trees that are looked at and ended as the test says."""

    def __init__(self) -> None:
        self.endings: list[Ending] = []
        self.members: list[Any] = []
        self.sessions: dict[Any, int] = {}
        #: Each look: C{(pid, marker)}.
        self.looks: list[tuple[int | None, str | None]] = []
        #: Each baseline noted, to be looked at later: C{(pid, marker)}.
        self.noted: list[tuple[int | None, str | None]] = []
        #: Looks answer with this Deferred when set, at once otherwise.
        self.answer: defer.Deferred[list[Any]] | None = None

    def tree(self, pid: int | None, marker: str | None) -> defer.Deferred[list[Any]]:
        self.looks.append((pid, marker))
        if self.answer is not None:
            return self.answer
        return defer.succeed(list(self.members))

    def baseline(
        self, pid: int | None, marker: str | None
    ) -> Callable[[], defer.Deferred[list[Any]]]:
        self.noted.append((pid, marker))
        return lambda: self.tree(pid, marker)

    def end(
        self, pid: int | None, marker: str | None, *, grace: float, exclude: Any = (),
        only_older: bool = False,
    ) -> defer.Deferred[list[Any]]:
        ending = Ending(pid, marker, grace, list(exclude), defer.Deferred(), only_older)
        self.endings.append(ending)
        return ending.done

    def session_of(self, process: Any) -> int | None:
        return self.sessions.get(process)


class Listener:
    """The project's side: a process that exits is reported to the room."""

    live: LiveProcess

    def cli_message(self, process: ClaudeProcess, message: dict[str, Any]) -> None:
        pass

    def cli_output(self, process: ClaudeProcess, stream: str, text: str) -> None:
        pass

    def cli_permission(
        self, process: ClaudeProcess, request_id: str, request: dict[str, Any]
    ) -> None:
        pass

    def cli_exited(
        self, process: ClaudeProcess, exit_code: int | None, signal: int | None
    ) -> None:
        self.live.exited(process)


class LiveProcessTestCase(SynchronousTestCase):
    """
    One L{LiveProcess} on fakes.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.slots = FakeSlots()
        self.trees = FakeTrees()
        self.owner = Owner()
        self.listener = Listener()
        self.markers: list[str] = []
        #: At each save: the markers on record and how many processes were spawned.
        self.saves: list[tuple[list[str], int]] = []
        self.session: str | None = "s-1"
        #: Why the project's directory is no longer its own, or None.
        self.refusal: str | None = None
        #: At each confinement check: how many processes were spawned.
        self.checks: list[int] = []
        self.live = LiveProcess(
            path="/w/app",
            marker_prefix=PREFIX,
            owner=self.owner,
            listener=self.listener,
            slots=self.slots,
            trees=self.trees,
            reactor=self.reactor,
            config=ProjectConfig(
                claude_bin="claude", kill_grace=GRACE, max_line_bytes=1024, env={"EXTRA": "yes"}
            ),
            environ={"PATH": "/bin", "CLAUDECODE": "1"},
            markers=self.markers,
            save=self.save,
            session_id=lambda: self.session,
            confine=self.confine,
        )
        self.listener.live = self.live

    def confine(self) -> int:
        self.checks.append(len(self.reactor.spawned))
        if self.refusal is not None:
            raise RequestError("path_invalid", self.refusal)
        # A descriptor of a directory, as the project's confinement opens.
        return os.open("/", os.O_RDONLY | os.O_DIRECTORY)

    def save(self) -> None:
        self.saves.append((list(self.markers), len(self.reactor.spawned)))

    def ready(self, flags: tuple[str, ...] = ()) -> ClaudeProcess:
        process = self.successResultOf(self.live.ready(flags))
        assert isinstance(process, ClaudeProcess)
        return process

    def cli(self, index: int = -1) -> FakeCLI:
        cli: FakeCLI = self.reactor.spawned[index]
        return cli

    def end(self, ending: Ending, killed: list[Any] | None = None) -> None:
        ending.done.callback(killed or [])


class ReadyTests(LiveProcessTestCase):
    """
    L{LiveProcess.ready}: the process a prompt runs in.
    """

    def test_spawns_once_and_reuses_for_the_same_flags(self) -> None:
        """The same flags get the same live process."""
        first = self.ready(MODEL)
        self.assertIs(self.ready(MODEL), first)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertIs(self.live.current, first)

    def test_spawns_the_cli_with_resume_flags_cwd_and_env(self) -> None:
        """
        argv resumes the session, runs in the project (the trampoline changes
        into the checked directory's descriptor: no path, so no fork),
        environment scrubbed and marked.
        """
        process = self.ready(MODEL)
        cli = self.cli()
        self.assertEqual(cli.argv[0], "claude")
        self.assertEqual(cli.argv[-4:], ["--resume", "s-1", *MODEL])
        self.assertIsNone(cli.path)
        self.assertEqual(cli.env[proctree.CWD_FD_ENV], str(proctree.CWD_FD))
        self.assertEqual(cli.env["EXTRA"], "yes")
        self.assertNotIn("CLAUDECODE", cli.env)
        self.assertEqual(cli.env[proctree.MARKER_ENV], process.marker)
        self.assertTrue(process.marker.startswith(PREFIX))

    def test_a_new_process_waits_for_the_start_gate(self) -> None:
        """
        With a start gate, a process is spawned only once the gate lets it
        through; a live one is reused without waiting.
        """
        from claudews.liveprocess import StartGate

        self.live._gate = StartGate(self.reactor)
        pending = self.live.ready(MODEL)
        self.assertNoResult(pending)
        self.assertEqual(self.reactor.spawned, [])
        self.reactor.advance(0)
        process = self.successResultOf(pending)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertIs(self.successResultOf(self.live.ready(MODEL)), process)

    def test_a_start_that_fails_frees_its_place_in_the_gate_at_once(self) -> None:
        """The CLI could not be started: the next one may boot."""
        from claudews.liveprocess import StartGate

        def refuse(*args: object, **kwargs: object) -> None:
            raise OSError("no such file")

        self.reactor.spawnProcess = refuse  # type: ignore[method-assign]
        gate = self.live._gate = StartGate(self.reactor, booting=1, boot_limit=60)
        pending = self.live.ready(MODEL)
        self.reactor.advance(0)
        self.failureResultOf(pending, OSError)
        self.assertEqual(gate._booting, 0)
        self.assertEqual(self.live.markers, [])

    def test_the_gate_hears_when_the_process_has_booted(self) -> None:
        """Its first output frees its place among those booting."""
        from claudews.liveprocess import StartGate

        gate = self.live._gate = StartGate(self.reactor, booting=1, boot_limit=60)
        pending = self.live.ready(MODEL)
        self.reactor.advance(0)
        process = self.successResultOf(pending)
        self.assertEqual(gate._booting, 1)
        process.outReceived(b"partial")
        self.assertEqual(gate._booting, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_no_session_no_resume(self) -> None:
        """A new conversation starts without --resume."""
        self.session = None
        self.ready()
        self.assertNotIn("--resume", self.cli().argv)

    def test_other_flags_retire_the_old_one_first(self) -> None:
        """A process with other flags starts only once the old one has ended."""
        self.successResultOf(self.live.acquire())
        old = self.ready()
        waiting = self.live.ready(MODEL)
        self.assertNoResult(waiting)
        self.assertEqual(len(self.reactor.spawned), 1)
        [ending] = self.trees.endings
        self.assertEqual((ending.pid, ending.marker, ending.grace), (old.pid, old.marker, GRACE))
        self.cli(0).exit(0, 15)
        self.end(ending)
        new = self.successResultOf(waiting)
        self.assertIsNot(new, old)
        self.assertEqual(new.flags, MODEL)
        self.assertEqual(self.reactor.max_live, 1)

    def test_a_replacement_keeps_the_slot(self) -> None:
        """The prompt that holds the slot keeps it across the replacement."""
        self.successResultOf(self.live.acquire())
        self.ready()
        waiting = self.live.ready(MODEL)
        self.cli(0).exit(0, 15)
        self.end(self.trees.endings[0])
        self.successResultOf(waiting)
        self.assertEqual(self.slots.named("exited"), 0)

    def test_a_conversation_reset_retires_the_live_one(self) -> None:
        """After abandon, even the same flags get a new process."""
        self.ready()
        self.live.abandon(idle=False)
        self.assertNoResult(self.live.ready(()))
        self.assertEqual(len(self.trees.endings), 1)

    def test_a_spawn_that_fails_fails_ready(self) -> None:
        """An L{OSError} from starting the CLI is the Deferred's failure."""

        def refuse(*args: object, **kwargs: object) -> None:
            raise OSError("no such file")

        self.reactor.spawnProcess = refuse  # type: ignore[method-assign]
        self.failureResultOf(self.live.ready(()), OSError)
        self.assertIsNone(self.live.current)


class ConfinementTests(LiveProcessTestCase):
    """
    The project's directory is checked before a CLI starts in it, and
    before a live one is handed another prompt.
    """

    def test_checked_after_the_marker_is_saved_and_before_the_spawn(self) -> None:
        """The check is the last thing before spawnProcess."""
        self.ready()
        self.assertEqual(self.checks, [0])
        self.assertEqual(self.saves, [([self.live.current.marker], 0)])

    def test_a_directory_that_is_not_the_projects_starts_nothing(self) -> None:
        """The refusal is the Deferred's failure; no process, no marker left."""
        self.refusal = "the project directory '/w/app' is now a symlink"
        failure = self.failureResultOf(self.live.ready(MODEL), RequestError)
        self.assertEqual(failure.value.code, "path_invalid")
        self.assertEqual(self.reactor.spawned, [])
        self.assertIsNone(self.live.current)
        self.assertEqual(self.markers, [])
        self.assertEqual(self.saves[-1], ([], 0))

    def test_a_resume_start_is_checked_too(self) -> None:
        """A new process that would resume the session is refused the same way."""
        self.ready()
        self.cli().exit(0)
        self.refusal = "gone"
        self.failureResultOf(self.live.ready(()), RequestError)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(self.checks, [0, 1])

    def test_a_live_process_gets_no_prompt_there_and_is_ended(self) -> None:
        """Its tools would follow the path wherever it leads now: it is retired."""
        self.successResultOf(self.live.acquire())
        old = self.ready()
        self.refusal = "replaced"
        self.failureResultOf(self.live.ready(()), RequestError)
        self.assertIsNone(self.live.current)
        [ending] = self.trees.endings
        self.assertEqual((ending.pid, ending.marker), (old.pid, old.marker))
        self.live.prompt_done(None, held=True)
        self.cli().exit(0, 15)
        self.end(ending)
        # The slot is given back once, when the retired process is gone.
        self.assertEqual(self.slots.named("exited"), 1)

    def test_passes_again_once_the_directory_is_back(self) -> None:
        """A refusal is not remembered here: the next check decides."""
        self.refusal = "gone"
        self.failureResultOf(self.live.ready(()), RequestError)
        self.refusal = None
        self.ready()
        self.assertEqual(len(self.reactor.spawned), 1)


class MarkerTests(LiveProcessTestCase):
    """
    The markers on record.
    """

    def test_recorded_before_spawn(self) -> None:
        """The marker is saved before the process exists."""
        process = self.ready()
        self.assertEqual(self.saves[0], ([process.marker], 0))

    def test_dropped_after_leftovers_end(self) -> None:
        """A process that exits keeps its marker until what it left has ended."""
        process = self.ready()
        self.cli().exit(0)
        [ending] = self.trees.endings
        self.assertEqual((ending.pid, ending.marker), (None, process.marker))
        self.assertEqual(self.markers, [process.marker])
        self.end(ending)
        self.assertEqual(self.markers, [])
        self.assertEqual(self.saves[-1], ([], 1))

    def test_dropped_even_when_ending_failed(self) -> None:
        """A failed ending is logged, and the marker goes anyway."""
        self.ready()
        self.cli().exit(0)
        self.trees.endings[0].done.errback(Failure(RuntimeError("psutil")))
        self.assertEqual(self.markers, [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_recover_ends_every_marker_on_record(self) -> None:
        """A dead server's markers are ended; recover fires once they are."""
        self.markers.extend(["cwtest-a", "cwtest-b"])
        done = self.live.recover()
        self.assertEqual([e.marker for e in self.trees.endings], ["cwtest-a", "cwtest-b"])
        self.assertNoResult(done)
        for ending in self.trees.endings:
            self.end(ending)
        self.successResultOf(done)
        self.assertEqual(self.markers, [])


class CloseTests(LiveProcessTestCase):
    """
    L{LiveProcess.close_process}: the supervisor closes an idle process.
    """

    def test_closes_stdin_then_terminates_after_the_grace(self) -> None:
        """End of input first; the process tree is ended only after the grace."""
        process = self.ready()
        self.live.close_process()
        self.assertTrue(self.cli().transport.stdin_closed)
        self.reactor.advance(GRACE - 0.001)
        self.assertEqual(self.trees.endings, [])
        self.reactor.advance(0.001)
        [ending] = self.trees.endings
        self.assertEqual((ending.pid, ending.marker), (process.pid, process.marker))

    def test_no_terminate_when_it_exits_in_time(self) -> None:
        """A CLI that exits on end of input is not signalled."""
        self.ready()
        self.live.close_process()
        self.cli().exit(0)
        self.reactor.advance(GRACE)
        self.assertEqual([e.pid for e in self.trees.endings], [None])

    def test_nothing_to_close(self) -> None:
        """Without a process, nothing happens."""
        self.live.close_process()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class SlotTests(LiveProcessTestCase):
    """
    The project's slot under the global cap.
    """

    def test_exited_of_the_live_one_frees_the_slot(self) -> None:
        """The live process gone: the slot is free, the room empty."""
        process = self.ready()
        self.assertTrue(self.live.exited(process))
        self.assertEqual(self.slots.calls[-1], ("exited", self.owner))
        self.assertIsNone(self.live.current)

    def test_exited_of_another_does_not(self) -> None:
        """A replaced process's exit is not the live one's."""
        self.successResultOf(self.live.acquire())
        old = self.ready()
        waiting = self.live.ready(MODEL)
        self.cli(0).exit(0, 15)
        self.end(self.trees.endings[0])
        self.successResultOf(waiting)
        self.assertFalse(self.live.exited(old))
        self.assertEqual(self.slots.named("exited"), 0)

    def test_prompt_done_releases_a_live_process(self) -> None:
        """A prompt that finished on a live process hands the slot back, idle."""
        self.successResultOf(self.live.acquire())
        process = self.ready()
        self.live.prompt_done(process, held=True)
        self.assertEqual(self.slots.calls[-1], ("release", self.owner))

    def test_prompt_done_without_a_process_frees_a_held_slot(self) -> None:
        """Granted but no process left: the slot is free."""
        self.successResultOf(self.live.acquire())
        self.live.prompt_done(None, held=True)
        self.assertEqual(self.slots.calls[-1], ("exited", self.owner))

    def test_prompt_done_never_granted_leaves_the_slot_alone(self) -> None:
        """A prompt that never held the slot gives nothing back."""
        self.live.prompt_done(None, held=False)
        self.assertEqual(self.slots.calls, [])


class ShutdownTests(LiveProcessTestCase):
    """
    L{LiveProcess.shutdown} always fires.
    """

    def test_fires_at_once_with_nothing_running(self) -> None:
        """No process: it fires, and the supervisor forgets the project."""
        self.successResultOf(self.live.shutdown())
        self.assertEqual(self.slots.calls, [("forget", self.owner)])

    def test_waits_for_the_process_and_fires_when_its_ending_fails(self) -> None:
        """The live process is ended; a failure doing so does not hold it up."""
        process = self.ready()
        done = self.live.shutdown()
        [ending] = self.trees.endings
        self.assertEqual(ending.pid, process.pid)
        self.assertNoResult(done)
        ending.done.errback(Failure(RuntimeError("psutil")))
        self.cli().exit(0, 9)
        self.end(self.trees.endings[-1])
        self.assertIsNone(self.successResultOf(done))
        self.flushLoggedErrors(RuntimeError)

    def test_waits_for_a_process_being_replaced(self) -> None:
        """A retiring process is waited for too."""
        self.ready()
        self.live.ready(MODEL)
        done = self.live.shutdown()
        self.assertNoResult(done)
        self.cli(0).exit(0, 15)
        for ending in list(self.trees.endings):
            self.end(ending)
        self.successResultOf(done)


class CannotRunTests(LiveProcessTestCase):
    """
    A CLI the trampoline could not exec (status 127): the message a prompt
    ends with says how to install it.
    """

    def exits(self, process: ClaudeProcess, stderr: bytes) -> None:
        process.errReceived(stderr)
        process.processExited(Failure(ProcessTerminated(exitCode=127)))

    def test_a_missing_cli_says_how_to_install_it(self) -> None:
        """No `claude` on the CLI's PATH: the stderr tail a prompt reports is the install line."""
        process = self.ready()
        self.exits(process, b"claudews: cannot run claude: No such file or directory\n")
        self.assertIn("no claude on PATH", process.stderr_tail)
        self.assertIn("npm install -g @anthropic-ai/claude-code", process.stderr_tail)

    def test_another_status_127_is_left_as_it_is(self) -> None:
        """A CLI that itself exits 127 with its own words keeps them."""
        process = self.ready()
        self.exits(process, b"some tool: not found\n")
        self.assertEqual(process.stderr_tail, "some tool: not found\n")


class ToolsTests(LiveProcessTestCase):
    """
    L{LiveProcess.snapshot} and L{LiveProcess.end_tools}: what a stopped
    prompt's tools left is ended, and nothing else.
    """

    def test_snapshot_is_the_tree_of_the_process(self) -> None:
        """The baseline is the process's tree, by pid and marker, looked at when asked."""
        process = self.ready()
        self.trees.members = ["mcp", "old tool"]
        look = self.live.snapshot(process)
        self.assertEqual(self.trees.noted, [(process.pid, process.marker)])
        self.assertEqual(self.trees.looks, [])
        self.assertEqual(self.successResultOf(look()), ["mcp", "old tool"])
        self.assertEqual(self.trees.looks, [(process.pid, process.marker)])

    def test_a_snapshot_that_fails_is_empty_and_logged(self) -> None:
        """A look that fails spares nothing (a stop still ends the tools) and is logged."""
        process = self.ready()
        self.trees.answer = defer.fail(RuntimeError("psutil"))
        self.assertEqual(self.successResultOf(self.live.snapshot(process)()), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_end_tools_spares_the_baseline_and_the_clis_own_session(self) -> None:
        """What ran before, and what runs in the CLI's session, is excluded from the ending."""
        process = self.ready()
        self.trees.members = ["mcp", "tool", "old tool"]
        self.trees.sessions = {"mcp": process.pid, "tool": 4242, "old tool": 4343}
        self.live.end_tools(process, ["old tool"])
        self.assertEqual(self.trees.looks, [(None, process.marker)])
        [ending] = self.trees.endings
        self.assertEqual((ending.pid, ending.marker, ending.grace), (None, process.marker, GRACE))
        self.assertEqual(ending.exclude, ["old tool", "mcp"])
        # The CLI lives on: its next prompt's tools must not be taken.
        self.assertTrue(ending.only_older)

    def test_end_tools_waits_for_the_look(self) -> None:
        """The ending starts once the thread has seen who is in the CLI's session."""
        process = self.ready()
        self.trees.answer = defer.Deferred()
        self.live.end_tools(process, [])
        self.assertEqual(self.trees.endings, [])
        self.trees.sessions = {"mcp": process.pid}
        self.trees.answer.callback(["mcp", "tool"])
        [ending] = self.trees.endings
        self.assertEqual(ending.exclude, ["mcp"])


class StartGateTests(SynchronousTestCase):
    """
    L{StartGate}: one new process per reactor turn, in the order asked, and
    no more booting at once than it allows.
    """

    def test_one_at_a_time_in_order(self) -> None:
        """
        Callers are let through one per timed call, first come first, none
        at once. (Each next one is scheduled from the timed call before:
        the reactor runs it on its next turn; a Clock in the same advance.)
        """
        from claudews.liveprocess import StartGate

        clock = Clock()
        gate = StartGate(clock, booting=3, boot_limit=60)
        through: list[int] = []
        for i in range(3):
            gate.turn().addCallback(lambda booted, i=i: through.append(i))
        self.assertEqual(through, [])
        clock.advance(0)
        self.assertEqual(through, [0, 1, 2])

    def test_no_more_booting_than_allowed(self) -> None:
        """The next caller waits until one that went through has booted."""
        from claudews.liveprocess import StartGate

        clock = Clock()
        gate = StartGate(clock, booting=2, boot_limit=60)
        tickets: list[Any] = []
        for i in range(4):
            gate.turn().addCallback(tickets.append)
        clock.advance(0)
        self.assertEqual(len(tickets), 2)
        tickets[0]()
        tickets[0]()  # once only: a second call frees nothing more
        clock.advance(0)
        self.assertEqual(len(tickets), 3)
        tickets[1]()
        clock.advance(0)
        self.assertEqual(len(tickets), 4)

    def test_one_that_stays_silent_is_counted_booted_after_the_limit(self) -> None:
        """A CLI that prints nothing does not hold the others up for longer than the limit."""
        from claudews.liveprocess import StartGate

        clock = Clock()
        gate = StartGate(clock, booting=1, boot_limit=5)
        tickets: list[Any] = []
        gate.turn().addCallback(tickets.append)
        gate.turn().addCallback(tickets.append)
        clock.advance(0)
        self.assertEqual(len(tickets), 1)
        clock.advance(4.9)
        self.assertEqual(len(tickets), 1)
        clock.advance(0.1)
        clock.advance(0)
        self.assertEqual(len(tickets), 2)
        tickets[1]()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelling_leaves_the_line(self) -> None:
        """A caller that gave up takes no turn of its own."""
        from claudews.liveprocess import StartGate

        clock = Clock()
        gate = StartGate(clock, booting=1, boot_limit=60)
        first = gate.turn()
        first.addErrback(lambda f: None)
        through: list[str] = []
        gate.turn().addCallback(lambda _: through.append("second"))
        first.cancel()
        clock.advance(0)
        self.assertEqual(through, ["second"])
