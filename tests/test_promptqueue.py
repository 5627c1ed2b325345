"""
Tests for L{claudews.promptqueue}: a project's prompts in order, one
running at a time, with fake prompts on a L{Clock}.
"""

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews.errors import RequestError
from claudews.events import CANCELLED, INTERRUPTED
from claudews.promptqueue import PromptQueue


class FakePrompt:
    """
    A prompt as the queue and the CLI listener see it: it records what it
    is told and finishes only when the test fires L{done}.
    """

    def __init__(
        self, prompt_id: str, process: object = None, log: list[tuple[Any, ...]] | None = None
    ) -> None:
        self.id = prompt_id
        self.process = process
        self.finished = False
        self.done: defer.Deferred[None] = defer.Deferred()
        self.calls: list[tuple[Any, ...]] = []
        #: Shared by several prompts, to see the order they were told in.
        self._log = log if log is not None else []

    def _call(self, *call: Any) -> None:
        self.calls.append(call)
        self._log.append((self.id,) + call)

    def start(self) -> None:
        self._call("start")

    def stop(self, status: str, error: str | None = None) -> None:
        self._call("stop", status, error)

    def result(self, message: dict[str, Any]) -> None:
        self._call("result", message)

    def exited(self, exit_code: int | None, signal: int | None, stderr_tail: str) -> None:
        self._call("exited", exit_code, signal, stderr_tail)

    def shutdown(self, status: str, error: str | None) -> None:
        self._call("shutdown", status, error)

    def finish(self) -> None:
        """End the prompt as its state machine would: finished, then done."""
        self.finished = True
        self.done.callback(None)


class QueueTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.allowed = True
        self.changes = 0
        self.log: list[tuple[Any, ...]] = []
        self.queue = self.make_queue(max_waiting=2)

    def make_queue(self, max_waiting: int) -> PromptQueue:
        def changed() -> None:
            self.changes += 1

        return PromptQueue(
            reactor=self.clock,
            max_waiting=max_waiting,
            may_start=lambda: self.allowed,
            changed=changed,
        )

    def add(self, *ids: str) -> list[FakePrompt]:
        prompts = [FakePrompt(prompt_id, log=self.log) for prompt_id in ids]
        for prompt in prompts:
            self.queue.add(prompt)  # type: ignore[arg-type]
        return prompts

    def running(self, prompt_id: str) -> FakePrompt:
        """Queue C{prompt_id} and let its turn come."""
        (prompt,) = self.add(prompt_id)
        self.clock.advance(0)
        self.assertIs(self.queue.current, prompt)
        return prompt


class PositionTests(QueueTestCase):
    def test_an_idle_queue_starts_a_prompt_at_once(self) -> None:
        """With nothing running or waiting, a new prompt's position is 0."""
        self.assertEqual(self.queue.position(), 0)

    def test_position_counts_the_running_and_the_waiting(self) -> None:
        """A prompt queued behind a running one and a waiting one stands third."""
        self.running("p-1")
        self.add("p-2")
        self.assertEqual(self.queue.position(), 2)

    def test_a_head_about_to_start_counts_in_position_but_not_in_the_bound(self) -> None:
        """Before its turn comes, the head of an idle queue is not waiting."""
        self.add("p-1", "p-2")
        self.assertEqual(self.queue.position(), 2)

    def test_queue_full_when_the_bound_is_reached(self) -> None:
        """With max_waiting prompts waiting behind a running one: queue_full."""
        self.running("p-1")
        self.add("p-2", "p-3")
        error = self.assertRaises(RequestError, self.queue.position)
        self.assertEqual(error.code, "queue_full")
        self.assertIn("2 prompts", error.message)

    def test_queue_full_counts_a_head_about_to_start_as_not_waiting(self) -> None:
        """An idle queue takes max_waiting prompts besides its head."""
        self.add("p-1", "p-2")
        self.queue.position()
        self.add("p-3")
        self.assertEqual(self.assertRaises(RequestError, self.queue.position).code, "queue_full")


class AddTests(QueueTestCase):
    def test_add_starts_the_prompt_on_the_next_reactor_turn(self) -> None:
        """A prompt added to an idle queue waits for the next turn, then starts."""
        (prompt,) = self.add("p-1")
        self.assertEqual(prompt.calls, [])
        self.assertIsNone(self.queue.current)
        self.assertEqual(list(self.queue), [prompt])
        self.clock.advance(0)
        self.assertEqual(prompt.calls, [("start",)])
        self.assertIs(self.queue.current, prompt)
        self.assertIs(self.queue.last, prompt)
        self.assertEqual(len(self.queue), 0)

    def test_add_reports_a_change(self) -> None:
        """Adding a prompt calls changed at once, starting it calls it again."""
        self.add("p-1")
        self.assertEqual(self.changes, 1)
        self.clock.advance(0)
        self.assertEqual(self.changes, 2)

    def test_prompts_wait_in_order_behind_the_running_one(self) -> None:
        """Only one prompt runs; the others wait first come, first served."""
        first = self.running("p-1")
        second, third = self.add("p-2", "p-3")
        self.clock.advance(0)
        self.assertIs(self.queue.current, first)
        self.assertEqual(list(self.queue), [second, third])
        self.assertEqual(len(self.queue), 2)
        self.assertEqual(second.calls, [])


class PumpTests(QueueTestCase):
    def test_nothing_starts_while_may_start_says_no(self) -> None:
        """A prompt waits while the project forbids starting one."""
        self.allowed = False
        (prompt,) = self.add("p-1")
        self.clock.advance(0)
        self.assertEqual(prompt.calls, [])
        self.assertIsNone(self.queue.current)
        self.assertEqual(list(self.queue), [prompt])

    def test_pump_starts_the_head_once_allowed(self) -> None:
        """Once the project allows it again, pump starts the waiting head."""
        self.allowed = False
        first, second = self.add("p-1", "p-2")
        self.clock.advance(0)
        self.allowed = True
        self.queue.pump()
        self.assertEqual(first.calls, [("start",)])
        self.assertEqual(second.calls, [])
        self.assertIs(self.queue.current, first)

    def test_pump_with_nothing_waiting_does_nothing(self) -> None:
        """Pumping an empty queue starts nothing and reports no change."""
        self.queue.pump()
        self.assertIsNone(self.queue.current)
        self.assertEqual(self.changes, 0)


class FinishTests(QueueTestCase):
    def test_the_running_prompts_end_starts_the_next(self) -> None:
        """When the running prompt is done, the next waiting one starts."""
        first = self.running("p-1")
        (second,) = self.add("p-2")
        first.finish()
        self.assertEqual(second.calls, [("start",)])
        self.assertIs(self.queue.current, second)
        self.assertIs(self.queue.last, second)

    def test_the_last_prompt_stays_known_after_it_finished(self) -> None:
        """With nothing waiting, the finished prompt is still the last started."""
        prompt = self.running("p-1")
        changes = self.changes
        prompt.finish()
        self.assertIsNone(self.queue.current)
        self.assertIs(self.queue.last, prompt)
        self.assertEqual(self.changes, changes + 1)

    def test_a_failed_prompt_moves_the_queue_on_too(self) -> None:
        """However the running prompt finished, the next one starts."""
        first = self.running("p-1")
        (second,) = self.add("p-2")
        first.done.errback(RuntimeError("boom"))
        self.assertIs(self.queue.current, second)
        self.assertEqual(second.calls, [("start",)])

    def test_the_next_waits_when_starting_is_forbidden(self) -> None:
        """The running prompt's end starts nothing while may_start says no."""
        first = self.running("p-1")
        (second,) = self.add("p-2")
        self.allowed = False
        first.finish()
        self.assertIsNone(self.queue.current)
        self.assertEqual(list(self.queue), [second])


class CancelTests(QueueTestCase):
    def test_cancel_a_waiting_prompt(self) -> None:
        """A waiting prompt leaves the queue, stopped as cancelled, never started."""
        first = self.running("p-1")
        second, third = self.add("p-2", "p-3")
        self.assertEqual(self.queue.cancel("p-2"), ["p-2"])
        self.assertEqual(second.calls, [("stop", CANCELLED, None)])
        self.assertEqual(list(self.queue), [third])
        first.finish()
        self.assertIs(self.queue.current, third)
        self.assertNotIn(("start",), second.calls)

    def test_cancel_the_running_prompt_by_id(self) -> None:
        """The running prompt is stopped as cancelled; it stays current until done."""
        prompt = self.running("p-1")
        self.assertEqual(self.queue.cancel("p-1"), ["p-1"])
        self.assertEqual(prompt.calls[-1], ("stop", CANCELLED, None))
        self.assertIs(self.queue.current, prompt)

    def test_cancel_without_id_cancels_the_running_prompt(self) -> None:
        """Without a prompt id, cancel stops the running prompt, not a waiting one."""
        prompt = self.running("p-1")
        (waiting,) = self.add("p-2")
        self.assertEqual(self.queue.cancel(None), ["p-1"])
        self.assertEqual(prompt.calls[-1], ("stop", CANCELLED, None))
        self.assertEqual(waiting.calls, [])
        self.assertEqual(list(self.queue), [waiting])

    def test_cancel_without_id_and_nothing_running_is_not_running(self) -> None:
        """Cancelling the running prompt of an idle queue: not_running."""
        self.add("p-1")
        error = self.assertRaises(RequestError, self.queue.cancel, None)
        self.assertEqual(error.code, "not_running")

    def test_cancel_without_id_of_a_finished_prompt_is_not_running(self) -> None:
        """A prompt that finished but is not yet done no longer runs."""
        prompt = self.running("p-1")
        prompt.finished = True
        error = self.assertRaises(RequestError, self.queue.cancel, None)
        self.assertEqual(error.code, "not_running")
        self.assertEqual(prompt.calls, [("start",)])

    def test_cancel_an_unknown_prompt_is_not_found(self) -> None:
        """An id neither running nor waiting: not_found."""
        self.running("p-1")
        error = self.assertRaises(RequestError, self.queue.cancel, "p-9")
        self.assertEqual(error.code, "not_found")
        self.assertIn("p-9", error.message)

    def test_cancel_a_finished_running_prompt_by_id_is_not_found(self) -> None:
        """The running prompt's id, once it has finished, is not found."""
        prompt = self.running("p-1")
        prompt.finished = True
        error = self.assertRaises(RequestError, self.queue.cancel, "p-1")
        self.assertEqual(error.code, "not_found")
        self.assertEqual(prompt.calls, [("start",)])


class ShutdownTests(QueueTestCase):
    def test_shutdown_ends_the_waiting_then_the_running(self) -> None:
        """Every prompt is shut down with the status and error, waiting ones first."""
        self.running("p-1")
        self.add("p-2", "p-3")
        del self.log[:]
        self.queue.shutdown(INTERRUPTED, "server stopping")
        self.assertEqual(
            self.log,
            [
                ("p-2", "shutdown", INTERRUPTED, "server stopping"),
                ("p-3", "shutdown", INTERRUPTED, "server stopping"),
                ("p-1", "shutdown", INTERRUPTED, "server stopping"),
            ],
        )
        self.assertEqual(len(self.queue), 0)

    def test_shutdown_of_an_idle_queue_does_nothing(self) -> None:
        """With no prompt at all, shutdown has nothing to end."""
        self.queue.shutdown(INTERRUPTED, None)
        self.assertIsNone(self.queue.current)
        self.assertEqual(len(self.queue), 0)
