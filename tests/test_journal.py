"""
The log lines people read: a prompt's life (claudews.journal), clients
connecting and leaving, projects created and deleted.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import events
from claudews.journal import Journal
from tests.logcapture import LogCapture
from tests.test_websocket import TOKEN, ServerTestCase


class JournalTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.journal = Journal(self.clock)
        self.log = LogCapture(self)

    def test_a_prompts_life_is_three_lines(self):
        """Queued, started and finished: path, prompt id, status, duration and cost."""
        self.journal.observe("/w/app", events.prompt_queued("p-1", "secret text", {}, 0))
        self.clock.advance(2)
        self.journal.observe("/w/app", events.prompt_started("p-1", "s-1"))
        self.clock.advance(12.34)
        self.journal.observe(
            "/w/app",
            events.prompt_finished("p-1", "completed", session_id="s-1", cost_usd=0.0123),
        )
        self.assertEqual(
            self.log.lines(),
            [
                "Prompt p-1 queued in /w/app (position 0)",
                "Prompt p-1 started in /w/app",
                "Prompt p-1 finished in /w/app: completed, took 12.3 s, cost $0.0123",
            ],
        )
        self.assertTrue(all(e["log_level"].name == "info" for e in self.log.events))
        self.assertNotIn("secret text", self.log.text())

    def test_a_prompt_that_never_started_says_so(self):
        """A prompt cancelled in the queue has no duration; an unknown cost says so."""
        self.journal.observe(
            "/w/app", events.prompt_finished("p-2", "cancelled", session_id=None)
        )
        [line] = self.log.lines()
        self.assertEqual(line, "Prompt p-2 finished in /w/app: cancelled, never started, cost unknown")
        self.assertIsNone(self.log.events[0]["duration"])

    def test_other_events_are_not_logged(self):
        """Output, claude messages and permissions stay out of the log."""
        self.journal.observe("/w/app", events.output("p-1", "stdout", "hello"))
        self.journal.observe("/w/app", events.claude("p-1", {"type": "assistant"}))
        self.assertEqual(self.log.lines(), [])


class ServerLogTests(ServerTestCase):
    def test_connect_and_disconnect_name_the_peer_not_the_token(self):
        """A client's connect and disconnect are one info line each, without the token."""
        log = LogCapture(self)
        c = self.client()
        c.lose()
        lines = log.lines("^Client ")
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], r"^Client \S+ connected$")
        self.assertRegex(lines[1], r"^Client \S+ disconnected \(code .*\)$")
        self.assertNotIn(TOKEN, log.text())

    def test_project_create_and_delete_are_logged(self):
        """Creating and deleting a project each log its path at info."""
        c = self.client()
        log = LogCapture(self)
        path = self.create(c, "app")
        self.assertTrue(c.request("project.delete", path=path)["ok"])
        self.assertIn("Project %s created" % (path,), log.lines())
        self.assertIn("Project %s deleted" % (path,), log.lines())

    def test_a_prompt_of_a_project_reaches_the_journal(self):
        """The registry passes a project's stored prompt events to the journal."""
        c = self.client()
        path = self.create(c, "app")
        log = LogCapture(self)
        self.registry.get(path).publish(
            events.prompt_finished("p-9", "failed", session_id=None)
        )
        self.assertEqual(
            log.lines("^Prompt "),
            ["Prompt p-9 finished in %s: failed, never started, cost unknown" % (path,)],
        )

    def test_no_line_prints_an_object_repr(self):
        """Nothing logged around a project's life shows '<... object at 0x...>'."""
        log = LogCapture(self)
        c = self.client()
        path = self.create(c, "app")
        self.publish(path, "hi")
        c.request("project.delete", path=path)
        self.assertNotIn("object at 0x", "\n".join(log.lines()))
