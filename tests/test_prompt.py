"""
Tests for L{claudews.prompt}: one prompt's state machine, with a fake
project (L{PromptHost}) and a fake live process (L{ProcessRoom}), on a
L{Clock}.
"""

from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import events
from claudews.events import CANCELLED, COMPLETED, FAILED, INTERRUPTED, TIMEOUT, Event
from claudews.prompt import Prompt

TIMEOUT_AFTER = 300.0
KILL_GRACE = 5.0
SUCCESS = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 1}


class FakeProcess:
    """A live CLI process as a prompt sees it."""

    def __init__(self) -> None:
        self.total_cost = 1.5
        self.ended = False
        self.prompts: list[str] = []
        self.interrupts = 0
        self.answers_interrupt = True
        self.takes_prompts = True

    def send_prompt(self, text: str) -> bool:
        self.prompts.append(text)
        return self.takes_prompts

    def interrupt(self) -> bool:
        self.interrupts += 1
        return self.answers_interrupt


class FakeHost:
    """The project, recording what the prompt publishes and asks."""

    def __init__(self) -> None:
        self.session_id: str | None = "s-1"
        self.session_generation = 0
        self.published: list[Event] = []
        self.stores = True
        self.settled_ids: list[str] = []
        self.cancelled_permissions: list[str] = []
        self.resume_failures: list[str] = []

    def publish(self, event: Event) -> bool:
        self.published.append(event)
        return self.stores

    def storage_problem(self) -> str | None:
        return None if self.stores else "disk full"

    def settled(self, prompt_id: str) -> None:
        self.settled_ids.append(prompt_id)

    def resume_failed(self, detail: str) -> str:
        self.resume_failures.append(detail)
        return "session lost: " + detail

    def cancel_permissions(self, prompt_id: str) -> None:
        self.cancelled_permissions.append(prompt_id)

    def finishes(self) -> list[Event]:
        return [e for e in self.published if e.kind == events.PROMPT_FINISHED]


class FakeRoom:
    """The live process room: hands out Deferreds the test fires."""

    def __init__(self) -> None:
        self.acquiring: list[defer.Deferred[None]] = []
        self.readying: list[defer.Deferred[Any]] = []
        self.flags: list[tuple[str, ...]] = []
        self.escalated: list[Any] = []
        self.ended_tools: list[tuple[Any, list[Any]]] = []
        self.done: list[tuple[Any, bool]] = []
        self.cancelled: list[defer.Deferred[Any]] = []
        #: Each snapshot looked at, fired at once unless C{slow_snapshots}.
        self.snapshots: list[defer.Deferred[list[Any]]] = []
        self.slow_snapshots = False
        #: At each snapshot taken: what the process had been sent.
        self.sent_before_snapshot: list[list[str]] = []

    def acquire(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred(self.cancelled.append)
        self.acquiring.append(d)
        return d

    def ready(self, flags: tuple[str, ...]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred(self.cancelled.append)
        self.flags.append(flags)
        self.readying.append(d)
        return d

    def snapshot(self, process: Any) -> Callable[[], defer.Deferred[list[Any]]]:
        self.sent_before_snapshot.append(list(process.prompts))

        def look() -> defer.Deferred[list[Any]]:
            d: defer.Deferred[list[Any]] = defer.Deferred()
            self.snapshots.append(d)
            if not self.slow_snapshots:
                d.callback(["baseline"])
            return d

        return look

    def end_tools(self, process: Any, spare: list[Any]) -> None:
        self.ended_tools.append((process, spare))

    def escalate(self, process: Any) -> None:
        self.escalated.append(process)

    def prompt_done(self, process: Any | None, held: bool) -> None:
        self.done.append((process, held))


class PromptTestCase(SynchronousTestCase):
    """
    A prompt with a fake host and room.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.host = FakeHost()
        self.room = FakeRoom()
        self.process = FakeProcess()
        self.prompt = Prompt(
            id="p-1",
            text="hello",
            options={},
            flags=("--model", "opus"),
            host=self.host,
            room=self.room,
            reactor=self.clock,
            timeout=TIMEOUT_AFTER,
            kill_grace=KILL_GRACE,
            session_generation=0,
        )

    def waiting(self) -> None:
        self.prompt.start()

    def starting(self) -> None:
        self.waiting()
        self.room.acquiring[-1].callback(None)

    def running(self) -> None:
        self.starting()
        self.room.readying[-1].callback(self.process)

    def finished_fields(self) -> dict[str, Any]:
        [finish] = self.host.finishes()
        return dict(finish.fields)


class StartTests(PromptTestCase):
    """
    queued -> waiting -> starting -> running.
    """

    def test_start_waits_for_a_slot(self) -> None:
        """Its turn: it asks for the slot and nothing else."""
        self.prompt.start()
        self.assertEqual(len(self.room.acquiring), 1)
        self.assertEqual(self.room.readying, [])

    def test_a_grant_asks_for_a_process_with_its_flags(self) -> None:
        """Granted: a live process with the prompt's flags."""
        self.starting()
        self.assertEqual(self.room.flags, [("--model", "opus")])

    def test_launched_publishes_started_and_sends_the_prompt(self) -> None:
        """Running: prompt.started (with the session), then the text to the CLI."""
        self.running()
        self.assertEqual(
            self.host.published, [events.prompt_started("p-1", "s-1")]
        )
        self.assertEqual(self.process.prompts, ["hello"])
        self.assertIs(self.prompt.process, self.process)
        self.assertFalse(self.prompt.finished)

    def test_unstored_start_does_not_run(self) -> None:
        """A prompt.started that cannot be stored fails the prompt; the CLI never gets it."""
        self.host.stores = False
        self.running()
        self.assertEqual(self.process.prompts, [])
        self.assertEqual(self.finished_fields()["status"], FAILED)
        self.assertEqual(self.finished_fields()["error"], "disk full")

    def test_a_process_that_refuses_the_prompt_fails_it(self) -> None:
        """The CLI is gone before it got the text: failed."""
        self.process.takes_prompts = False
        self.running()
        self.assertEqual(self.finished_fields()["error"], "the CLI process is gone")

    def test_no_process_fails_it(self) -> None:
        """An OSError from starting the CLI fails the prompt with it."""
        self.starting()
        self.room.readying[-1].errback(OSError("no such file"))
        self.assertEqual(self.finished_fields()["status"], FAILED)
        self.assertIn("cannot start the CLI: no such file", self.finished_fields()["error"])

    def test_a_bug_fails_it_rather_than_hang(self) -> None:
        """Any other failure while waiting fails it as an internal error."""
        self.starting()
        self.room.readying[-1].errback(RuntimeError("oops"))
        self.assertEqual(self.finished_fields()["error"], "internal error: oops")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ResultTests(PromptTestCase):
    """
    running -> finished by the CLI's result or its exit.
    """

    def test_result_completes_with_the_cost_of_this_prompt(self) -> None:
        """A success completes; the cost is the difference from the process's base."""
        self.running()
        self.clock.advance(2)
        self.prompt.result(dict(SUCCESS, total_cost_usd=2.0, duration_ms=1900))
        fields = self.finished_fields()
        self.assertEqual(
            (fields["status"], fields["cost_usd"], fields["duration_ms"], fields["num_turns"]),
            (COMPLETED, 0.5, 1900, 1),
        )
        self.assertEqual(self.host.settled_ids, ["p-1"])
        self.assertTrue(self.prompt.finished)
        self.assertEqual(self.successResultOf(self.prompt.done), None)

    def test_duration_from_the_clock_when_the_result_has_none(self) -> None:
        """Without duration_ms, the time since it started."""
        self.running()
        self.clock.advance(2.5)
        self.prompt.result(SUCCESS)
        self.assertEqual(self.finished_fields()["duration_ms"], 2500)

    def test_resume_failure_goes_to_the_host(self) -> None:
        """A lost conversation resets the session through the host."""
        self.running()
        self.prompt.result(
            {"type": "result", "subtype": "error", "is_error": True, "result": "No conversation found"}
        )
        self.assertEqual(self.host.resume_failures, ["No conversation found"])
        self.assertEqual(self.finished_fields()["error"], "session lost: No conversation found")

    def test_exit_before_result_fails_with_stderr(self) -> None:
        """The CLI died mid-prompt: failed, with its exit and stderr."""
        self.running()
        self.prompt.exited(1, None, "boom\n")
        fields = self.finished_fields()
        self.assertEqual((fields["status"], fields["exit_code"]), (FAILED, 1))
        self.assertEqual(
            fields["error"], "the CLI exited with code 1 before finishing the prompt: boom"
        )

    def test_the_slot_goes_back_held_after_a_grant(self) -> None:
        """Finished after a grant: prompt_done with its process, held."""
        self.running()
        self.prompt.result(SUCCESS)
        self.assertEqual(self.room.done, [(self.process, True)])

    def test_unstored_finish_stays_open(self) -> None:
        """A prompt.finished that is not stored does not settle the prompt."""
        self.running()
        self.host.stores = False
        self.prompt.result(SUCCESS)
        self.assertEqual(self.host.settled_ids, [])
        self.assertTrue(self.prompt.finished)


class StopBeforeRunningTests(PromptTestCase):
    """
    A stop before the CLI has the prompt finishes it at once.
    """

    def assert_finished_at_once(self, status: str = CANCELLED) -> None:
        self.assertEqual(self.finished_fields()["status"], status)
        self.assertEqual(self.process.interrupts, 0)
        self.assertTrue(self.prompt.finished)

    def test_stop_while_queued(self) -> None:
        """Queued: finished, the slot never held."""
        self.prompt.stop(CANCELLED)
        self.assert_finished_at_once()
        self.assertEqual(self.room.done, [(None, False)])
        self.assertEqual(self.room.acquiring, [])

    def test_stop_while_waiting_cancels_the_slot_request(self) -> None:
        """Waiting for a slot: finished, and the request cancelled, not held."""
        self.waiting()
        self.prompt.stop(CANCELLED)
        self.assert_finished_at_once()
        self.assertEqual(self.room.cancelled, self.room.acquiring)
        self.assertEqual(self.room.done, [(None, False)])

    def test_stop_while_starting_cancels_the_process_request(self) -> None:
        """Waiting for a process: finished, the request cancelled, the slot held."""
        self.starting()
        self.prompt.stop(CANCELLED, "by request")
        self.assert_finished_at_once()
        self.assertEqual(self.finished_fields()["error"], "by request")
        self.assertEqual(self.room.cancelled, self.room.readying)
        self.assertEqual(self.room.done, [(None, True)])

    def test_inputs_after_a_stop_are_ignored(self) -> None:
        """Nothing more happens after the stop, whatever arrives."""
        self.prompt.stop(CANCELLED)
        self.prompt.result(SUCCESS)
        self.prompt.exited(0, None, "")
        self.prompt.stop(TIMEOUT)
        self.assertEqual(len(self.host.finishes()), 1)


class StopWhileRunningTests(PromptTestCase):
    """
    A stop while the CLI works interrupts it, then escalates.
    """

    def test_stop_interrupts_and_denies_its_permissions(self) -> None:
        """running -> stopping: the CLI is interrupted, nothing finished yet."""
        self.running()
        self.prompt.stop(CANCELLED)
        self.assertEqual(self.process.interrupts, 1)
        self.assertEqual(self.host.cancelled_permissions, ["p-1"])
        self.assertEqual(self.host.finishes(), [])

    def test_result_while_stopping_finishes_with_the_stop_status(self) -> None:
        """The CLI's answer to the interrupt ends it as cancelled, tools ended."""
        self.running()
        self.prompt.stop(CANCELLED, "by request")
        self.prompt.result(SUCCESS)
        fields = self.finished_fields()
        self.assertEqual((fields["status"], fields["error"]), (CANCELLED, "by request"))
        self.assertEqual(self.room.ended_tools, [(self.process, ["baseline"])])
        self.clock.advance(KILL_GRACE)
        self.assertEqual(self.room.escalated, [])

    def test_escalates_after_the_kill_grace(self) -> None:
        """No result within the grace: the room ends the process."""
        self.running()
        self.prompt.stop(CANCELLED)
        self.clock.advance(KILL_GRACE - 0.001)
        self.assertEqual(self.room.escalated, [])
        self.clock.advance(0.001)
        self.assertEqual(self.room.escalated, [self.process])
        self.prompt.exited(None, 15, "")
        fields = self.finished_fields()
        self.assertEqual((fields["status"], fields["exit_code"]), (CANCELLED, None))

    def test_an_unsendable_interrupt_escalates_at_once(self) -> None:
        """stdin is closed: no point waiting for an answer."""
        self.running()
        self.process.answers_interrupt = False
        self.prompt.stop(CANCELLED)
        self.assertEqual(self.room.escalated, [self.process])

    def test_a_second_stop_is_ignored(self) -> None:
        """Stopping twice interrupts once and keeps the first status."""
        self.running()
        self.prompt.stop(CANCELLED)
        self.prompt.stop(TIMEOUT)
        self.assertEqual(self.process.interrupts, 1)
        self.prompt.result(SUCCESS)
        self.assertEqual(self.finished_fields()["status"], CANCELLED)

    def test_timeout(self) -> None:
        """After its timeout it is stopped as timeout."""
        self.running()
        self.clock.advance(TIMEOUT_AFTER)
        self.assertEqual(self.process.interrupts, 1)
        self.prompt.result(SUCCESS)
        self.assertEqual(self.finished_fields()["status"], TIMEOUT)

    def test_finishing_cancels_the_timers(self) -> None:
        """Once finished, neither the timeout nor the escalation fires."""
        self.running()
        self.prompt.result(SUCCESS)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BaselineTests(PromptTestCase):
    """
    What ran in the process's tree before the prompt (its baseline) is
    noted at its start and looked at, in a thread, only when a stop needs
    it; only ending the tools of a stopped prompt waits
    for it.
    """

    def test_asked_for_before_the_cli_has_the_text(self) -> None:
        """The baseline is asked for first, so no tool of the prompt is in it."""
        self.running()
        self.assertEqual(self.room.sent_before_snapshot, [[]])
        self.assertEqual(self.process.prompts, ["hello"])

    def test_the_prompt_runs_without_waiting_for_it(self) -> None:
        """prompt.started and the text go out while the baseline is still unknown."""
        self.room.slow_snapshots = True
        self.running()
        self.assertEqual(self.host.published, [events.prompt_started("p-1", "s-1")])
        self.assertEqual(self.process.prompts, ["hello"])

    def test_a_stop_before_it_is_known_ends_the_tools_once_it_is(self) -> None:
        """A cancel answered before the baseline: the tools are ended when it comes, sparing it."""
        self.room.slow_snapshots = True
        self.running()
        self.prompt.stop(CANCELLED)
        self.prompt.result(SUCCESS)
        self.assertEqual(self.finished_fields()["status"], CANCELLED)
        self.assertEqual(self.room.ended_tools, [])
        self.room.snapshots[0].callback(["before"])
        self.assertEqual(self.room.ended_tools, [(self.process, ["before"])])

    def test_a_process_gone_meanwhile_has_no_tools_to_end(self) -> None:
        """The CLI ended before the baseline came: its leftovers are ended by its exit instead."""
        self.room.slow_snapshots = True
        self.running()
        self.prompt.stop(TIMEOUT)
        self.prompt.result(SUCCESS)
        self.process.ended = True
        self.room.snapshots[0].callback(["before"])
        self.assertEqual(self.room.ended_tools, [])

    def test_a_prompt_that_completes_ends_no_tools(self) -> None:
        """Not stopped: the baseline is never looked at, no tool is ended."""
        self.running()
        self.prompt.result(SUCCESS)
        self.assertEqual(self.room.ended_tools, [])
        self.assertEqual(self.room.snapshots, [])

    def test_a_stop_looks_at_the_baseline_taken_at_the_start(self) -> None:
        """The look happens at the stop; the baseline was noted before the text went out."""
        self.running()
        self.assertEqual(self.room.snapshots, [])
        self.prompt.stop(CANCELLED)
        self.prompt.result(SUCCESS)
        self.assertEqual(len(self.room.snapshots), 1)
        self.assertEqual(self.room.sent_before_snapshot, [[]])
        self.assertEqual(self.room.ended_tools, [(self.process, ["baseline"])])


class StorageLostTests(PromptTestCase):
    """
    Events of a running prompt that could not be stored.
    """

    def test_storage_lost_stops_it_as_failed(self) -> None:
        """It is stopped on the next turn and finishes failed, whatever the result says."""
        self.running()
        self.prompt.storage_lost("cannot store events: disk full")
        self.assertEqual(self.process.interrupts, 0)
        self.clock.advance(0)
        self.assertEqual(self.process.interrupts, 1)
        self.prompt.result(SUCCESS)
        fields = self.finished_fields()
        self.assertEqual(
            (fields["status"], fields["error"]), (FAILED, "cannot store events: disk full")
        )

    def test_storage_lost_wins_over_a_cancel(self) -> None:
        """A cancelled prompt whose events were lost is failed."""
        self.running()
        self.prompt.storage_lost("lost")
        self.prompt.stop(CANCELLED)
        self.prompt.result(SUCCESS)
        self.assertEqual(self.finished_fields()["status"], FAILED)

    def test_storage_lost_is_ignored_before_running(self) -> None:
        """Before it runs there is nothing of it to lose."""
        self.starting()
        self.prompt.storage_lost("lost")
        self.clock.advance(0)
        self.prompt.stop(CANCELLED)
        self.assertEqual(self.finished_fields()["status"], CANCELLED)


class ShutdownTests(PromptTestCase):
    """
    The project goes away.
    """

    def test_shutdown_while_running_interrupts_and_finishes_at_once(self) -> None:
        """The CLI is told, and the prompt ends as interrupted."""
        self.running()
        self.prompt.shutdown(INTERRUPTED, None)
        self.assertEqual(self.process.interrupts, 1)
        self.assertEqual(self.finished_fields()["status"], INTERRUPTED)

    def test_interrupted_keeps_its_status_when_storage_was_lost(self) -> None:
        """A shutdown's interrupted is not turned into failed."""
        self.running()
        self.prompt.storage_lost("lost")
        self.prompt.shutdown(INTERRUPTED, None)
        self.assertEqual(self.finished_fields()["status"], INTERRUPTED)

    def test_finish_is_published_once_whatever_arrives_later(self) -> None:
        """After finishing, every input is ignored."""
        self.running()
        self.prompt.shutdown(INTERRUPTED, None)
        self.prompt.result(SUCCESS)
        self.prompt.exited(1, None, "")
        self.prompt.stop(CANCELLED)
        self.prompt.storage_lost("lost")
        self.prompt.shutdown(CANCELLED, None)
        self.clock.advance(KILL_GRACE + TIMEOUT_AFTER)
        self.assertEqual(len(self.host.finishes()), 1)
        self.assertEqual(len(self.room.done), 1)
