"""
Tests for claudews.notify: what is sent for which event, the headers,
retries on the clock, the bounded queue, throttled failure logs, stop.
"""

import http.server
import json
import queue
import threading

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from claudews import events
from claudews.notify import Notifier, message, target
from tests.harness import DEADLINE
from tests.logcapture import LogCapture

PATH = "/w/app"
URL = "https://ntfy.example/secret-topic"
OTHER = "http://127.0.0.1:9/hook"
DEFAULT_KINDS = (events.PERMISSION_REQUEST, events.PROMPT_FINISHED)


def permission(tool="Write"):
    return events.permission_request(
        "p-1", "r-1", {"tool_name": tool, "input": {"file_path": "/w/app/x", "content": "SECRET"}}
    )


def finished(status=events.COMPLETED):
    return events.prompt_finished(
        "p-1", status, session_id="s", cost_usd=0.0123, duration_ms=4200,
        error="stderr said SECRET",
    )


class FakePost:
    """Records each post; each answers with a Deferred the test fires."""

    def __init__(self):
        self.calls = []
        self.cancelled = []

    def __call__(self, url, body, headers):
        d = defer.Deferred(lambda d: self.cancelled.append(url))
        self.calls.append((url, json.loads(body), dict(headers), d))
        return d


class NotifierTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.post = FakePost()
        self.logs = LogCapture(self)

    def notifier(self, urls=(URL,), kinds=DEFAULT_KINDS, **kwargs):
        notifier = Notifier(urls, kinds, self.clock, self.post, **kwargs)
        self.addCleanup(notifier.stop)
        return notifier

    def warnings(self):
        return [e for e in self.logs.events if e["log_level"] == LogLevel.warn]


class MessageTests(SynchronousTestCase):
    def test_a_permission_request_names_the_tool_at_high_priority(self):
        """Title, high priority, tags, and the tool; never the tool's input."""
        body, headers = message(PATH, permission())
        self.assertEqual(headers["Title"], "claudews: Claude needs you in app")
        self.assertEqual(headers["Priority"], "high")
        self.assertEqual(headers["Tags"], "warning,claudews")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(
            {k: body[k] for k in ("project", "event", "prompt_id", "tool", "request_id")},
            {"project": PATH, "event": "permission.request", "prompt_id": "p-1",
             "tool": "Write", "request_id": "r-1"},
        )
        self.assertEqual(body["message"], "Claude asks to use Write in /w/app")
        self.assertNotIn("SECRET", json.dumps(body))
        self.assertNotIn("input", body)

    def test_a_finished_prompt_tells_status_duration_and_cost(self):
        """Default priority; status, duration, cost; never the error text."""
        body, headers = message(PATH, finished())
        self.assertEqual(headers["Priority"], "default")
        self.assertEqual(headers["Title"], "claudews: prompt completed in app")
        self.assertEqual(headers["Tags"], "white_check_mark,claudews")
        self.assertEqual(
            (body["status"], body["duration_ms"], body["cost_usd"]), ("completed", 4200, 0.0123)
        )
        self.assertEqual(body["message"], "Prompt completed in /w/app after 4.2 s ($0.0123)")
        self.assertNotIn("SECRET", json.dumps(body))

    def test_a_failed_prompt_has_another_tag(self):
        """A prompt that did not complete is marked as such."""
        _, headers = message(PATH, finished(events.FAILED))
        self.assertEqual(headers["Tags"], "x,claudews")

    def test_headers_stay_one_line_of_ascii(self):
        """A project name with a newline or non-ASCII text cannot break a header."""
        _, headers = message("/w/caf\u00e9\nX-Evil: 1", permission())
        self.assertNotIn("\n", headers["Title"])
        self.assertTrue(headers["Title"].isascii())
        self.assertTrue(headers["Title"].startswith("=?utf-8?"))

    def test_logs_name_the_host_not_the_secret_path(self):
        """Webhook URLs carry their secret in the path: logs show the host."""
        self.assertEqual(target(URL), "https://ntfy.example/...")
        self.assertEqual(target("http://user:pw@h:8080/"), "http://h:8080")


class SendTests(NotifierTestCase):
    def test_chosen_events_are_posted_on_a_later_turn_to_every_url(self):
        """observe only queues; the next reactor turn posts to each URL."""
        notifier = self.notifier(urls=(URL, OTHER))
        notifier.observe(PATH, permission())
        self.assertEqual(self.post.calls, [])
        self.clock.advance(0)
        self.assertEqual([c[0] for c in self.post.calls], [URL, OTHER])
        self.assertEqual(self.post.calls[0][1]["event"], "permission.request")
        self.assertEqual(self.post.calls[0][2]["Priority"], "high")

    def test_other_events_send_nothing(self):
        """Only the kinds of notify-on are sent."""
        notifier = self.notifier()
        for event in (
            events.prompt_queued("p-1", "hello", {}, 0),
            events.prompt_started("p-1", None),
            events.claude("p-1", {"type": "assistant"}),
            events.output("p-1", "stderr", "text"),
            events.session_reset(),
            events.permission_resolved("r-1", "allow", "client"),
        ):
            notifier.observe(PATH, event)
        self.clock.advance(0)
        self.assertEqual(self.post.calls, [])

    def test_notify_on_chooses_the_kinds(self):
        """A prompt.finished is not sent when notify-on names only permissions."""
        notifier = self.notifier(kinds=(events.PERMISSION_REQUEST,))
        notifier.observe(PATH, finished())
        self.clock.advance(0)
        self.assertEqual(self.post.calls, [])

    def test_no_url_sends_nothing(self):
        """Without notify-url nothing is queued."""
        notifier = self.notifier(urls=())
        notifier.observe(PATH, permission())
        self.assertEqual((notifier.pending, self.clock.getDelayedCalls()), (0, []))

    def test_a_success_is_not_sent_again(self):
        """A 2xx answer ends the delivery."""
        notifier = self.notifier()
        notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.post.calls[0][3].callback(200)
        self.clock.advance(60)
        self.assertEqual((len(self.post.calls), notifier.pending), (1, 0))
        self.assertEqual(self.warnings(), [])

    def test_sends_at_once_are_bounded(self):
        """At most max_sending posts are under way; the next waits for one."""
        notifier = self.notifier(max_sending=2)
        for _ in range(3):
            notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.assertEqual((len(self.post.calls), notifier.pending), (2, 1))
        self.post.calls[0][3].callback(204)
        self.assertEqual((len(self.post.calls), notifier.pending), (3, 0))


class RetryTests(NotifierTestCase):
    def test_a_failure_is_tried_again_after_1_5_and_30_seconds(self):
        """Four tries in all, on the clock; then given up."""
        notifier = self.notifier()
        notifier.observe(PATH, permission())
        self.clock.advance(0)
        for delay in (1, 5, 30):
            self.post.calls[-1][3].errback(ConnectionRefusedError("refused"))
            tries = len(self.post.calls)
            self.clock.advance(delay - 1)
            self.assertEqual(len(self.post.calls), tries)
            self.clock.advance(1)
            self.assertEqual(len(self.post.calls), tries + 1)
        self.post.calls[-1][3].errback(ConnectionRefusedError("refused"))
        self.clock.advance(3600)
        self.assertEqual((len(self.post.calls), notifier.pending), (4, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_server_error_is_retried_a_client_error_is_not(self):
        """5xx and 429 are tried again; 400 will not change."""
        notifier = self.notifier()
        notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.post.calls[0][3].callback(503)
        self.clock.advance(1)
        self.post.calls[1][3].callback(429)
        self.clock.advance(5)
        self.post.calls[2][3].callback(400)
        self.clock.advance(3600)
        self.assertEqual(len(self.post.calls), 3)

    def test_a_receiver_that_never_answers_is_timed_out(self):
        """A post without an answer is cancelled after the timeout, then retried."""
        notifier = self.notifier(timeout=10)
        notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.clock.advance(10)
        self.assertEqual(self.post.cancelled, [URL])
        self.assertIn("no answer within 10 s", self.logs.lines()[-1])
        self.clock.advance(1)
        self.assertEqual(len(self.post.calls), 2)

    def test_a_post_that_raises_counts_as_a_failure(self):
        """A synchronous exception from post is a failed try, not a crash."""

        def post(url, body, headers):
            raise ValueError("bad url")

        notifier = Notifier((URL,), DEFAULT_KINDS, self.clock, post)
        notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.assertEqual(notifier.pending, 1)
        self.assertIn("bad url", self.logs.lines()[-1])
        notifier.stop()


class QueueTests(NotifierTestCase):
    def test_a_full_queue_drops_the_oldest_and_counts(self):
        """Past max_queue the oldest waiting notification goes, counted."""
        notifier = self.notifier(max_queue=3)
        for tool in ("A", "B", "C", "D", "E"):
            notifier.observe(PATH, permission(tool))
        self.assertEqual((notifier.pending, notifier.dropped), (3, 2))
        self.clock.advance(0)
        self.assertEqual([c[1]["tool"] for c in self.post.calls], ["C", "D", "E"])
        # Logged once a minute at most, like failures.
        self.assertEqual(self.logs.lines("dropped"), [
            "the notification queue is full: 1 dropped so far"
        ])

    def test_observe_never_blocks_on_a_dead_receiver(self):
        """A thousand events with no answer keep the work bounded."""
        notifier = self.notifier(max_queue=10, max_sending=4)
        for _ in range(1000):
            notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.assertEqual((len(self.post.calls), notifier.pending), (4, 6))
        self.assertEqual(notifier.dropped, 990)


class LogTests(NotifierTestCase):
    def test_failures_are_logged_once_per_url_per_minute(self):
        """Many failures to one URL: one line a minute, then the count not logged."""
        notifier = self.notifier(urls=(URL, OTHER), delays=(), max_sending=10)
        for _ in range(5):
            notifier.observe(PATH, permission())
        self.clock.advance(0)
        for call in self.post.calls:
            call[3].errback(ConnectionRefusedError("refused"))
        lines = self.warnings()
        self.assertEqual(len(lines), 2)
        self.assertEqual({e["target"] for e in lines}, {target(URL), target(OTHER)})
        self.assertNotIn("secret-topic", "\n".join(self.logs.lines()))
        self.clock.advance(60)
        notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.post.calls[-2][3].errback(ConnectionRefusedError("refused"))
        self.assertIn("4 more not logged", self.logs.lines()[-1])


class StopTests(NotifierTestCase):
    def test_stop_cancels_retries_and_sends_under_way(self):
        """After stop no timer is left, no post is pending, nothing new queues."""
        notifier = self.notifier(urls=(URL, OTHER))
        notifier.observe(PATH, permission())
        self.clock.advance(0)
        self.post.calls[0][3].errback(ConnectionRefusedError("refused"))
        notifier.stop()
        self.assertEqual(self.post.cancelled, [OTHER])
        self.assertEqual((notifier.pending, self.clock.getDelayedCalls()), (0, []))
        notifier.observe(PATH, permission())
        self.clock.advance(3600)
        self.assertEqual(len(self.post.calls), 2)


class Receiver:
    """
    A local webhook receiver (the standard library's HTTP server in a
    thread): each POST is put on C{received}; the first C{fail} get 503.
    """

    def __init__(self, fail=0):
        self.received = queue.Queue()
        received, failures = self.received, [fail]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put((self.path, dict(self.headers), json.loads(body)))
                code = 503 if failures[0] > 0 else 200
                failures[0] -= 1
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook/secret" % (self.server.server_port,)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self):
        return self.received.get(timeout=DEADLINE)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.mark.integration
def test_a_real_server_notifies_a_permission_request_and_a_finished_prompt(make_server):
    """Through CLAUDEWS_NOTIFY_URL: the request (retried after a 503), then the end."""
    receiver = Receiver(fail=1)
    try:
        server = make_server(env={"CLAUDEWS_NOTIFY_URL": receiver.url})
        client = server.connect()
        path = server.project_dir("app")
        client.ok("project.create", path=path)
        client.ok("subscribe", path=path)
        prompt_id = client.ok("prompt", path=path, prompt="permission:Write")["prompt_id"]
        request = client.wait_event(lambda m: m.get("event") == "permission.request")

        refused, retried = receiver.next(), receiver.next()
        assert refused == retried
        where, headers, body = retried
        assert where == "/hook/secret"
        assert headers["Title"] == "claudews: Claude needs you in app"
        assert (headers["Priority"], headers["Tags"]) == ("high", "warning,claudews")
        assert headers["Content-Type"] == "application/json"
        assert (body["project"], body["event"], body["prompt_id"], body["tool"]) == (
            path, "permission.request", prompt_id, "Write"
        )
        assert body["request_id"] == request["request_id"]

        client.ok("permission.respond", path=path, request_id=request["request_id"],
                  behavior="allow")
        assert client.finished(prompt_id)["status"] == "completed"
        _, headers, body = receiver.next()
        assert (body["event"], body["status"], body["prompt_id"]) == (
            "prompt.finished", "completed", prompt_id
        )
        assert headers["Priority"] == "default"
        # Neither the tool's input nor the server's token travels.
        everything = json.dumps([refused, body])
        assert "hello" not in everything and server.token not in everything
        assert receiver.received.empty()
        # The 503 was logged without the URL's secret path.
        line = server.wait_log(r"Notification to http://127\.0\.0\.1:\d+/\.\.\. failed")
        assert "HTTP 503" in line and "trying again in 1 s" in line
        server.drain_log()
        assert not any("secret" in line for line in server.log)
    finally:
        receiver.close()
