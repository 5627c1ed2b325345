"""
The server's metrics (claudews.metrics): counters that move, gauges read
at scrape time, GET /metrics behind the token, and a real server scraped
after one prompt.
"""

import http.client

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from claudews import events
from claudews.eventlog import EventLog
from claudews.metrics import Metrics
from claudews.site import Metrics as MetricsPage
from claudews.interfaces import send_each
from tests.harness import submit
from tests.test_websocket import TOKEN, ServerTestCase


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


class MetricsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.metrics = Metrics(self.clock, ["prompt", "server.info"])

    def test_requests_are_counted_by_type_and_code(self):
        """Each answered request counts once under its type and its error code, 'ok' for none."""
        self.metrics.request("prompt", None)
        self.metrics.request("prompt", None)
        self.metrics.request("prompt", "queue_full")
        self.assertEqual(value(self.metrics, "claudews_requests_total", type="prompt", code="ok"), 2)
        self.assertEqual(
            value(self.metrics, "claudews_requests_total", type="prompt", code="queue_full"), 1
        )

    def test_a_request_type_the_server_does_not_know_is_one_label(self):
        """What a client invents as a type never becomes a label of its own."""
        for kind in ("x" * 100, "y", None, 7):
            self.metrics.request(kind, "bad_request")
        self.assertEqual(
            value(self.metrics, "claudews_requests_total", type="unknown", code="bad_request"), 4
        )

    def test_a_prompt_is_counted_by_status_and_timed_from_its_start(self):
        """prompt.finished counts under its status; the histogram holds started-to-finished time."""
        self.metrics.observe("/w/a", events.prompt_queued("p1", "hi", {}, 0))
        self.clock.advance(5)
        self.metrics.observe("/w/a", events.prompt_started("p1", None))
        self.clock.advance(3)
        self.metrics.observe("/w/a", events.prompt_finished("p1", "completed", session_id=None))
        self.assertEqual(value(self.metrics, "claudews_prompts_total", status="completed"), 1)
        self.assertEqual(value(self.metrics, "claudews_prompt_duration_seconds_count"), 1)
        self.assertEqual(value(self.metrics, "claudews_prompt_duration_seconds_sum"), 3)

    def test_a_prompt_cancelled_while_queued_is_counted_but_not_timed(self):
        """A prompt that never started has a status and no duration."""
        self.metrics.observe("/w/a", events.prompt_finished("p1", "cancelled", session_id=None))
        self.assertEqual(value(self.metrics, "claudews_prompts_total", status="cancelled"), 1)
        self.assertEqual(value(self.metrics, "claudews_prompt_duration_seconds_count"), 0)

    def test_stored_events_are_counted_by_kind(self):
        """Every stored event counts under its kind."""
        self.metrics.observe("/w/a", events.output(None, "stdout", "x"))
        self.metrics.observe("/w/b", events.output(None, "stdout", "y"))
        self.metrics.observe("/w/b", events.session_reset())
        self.assertEqual(value(self.metrics, "claudews_events_stored_total", kind="output"), 2)
        self.assertEqual(
            value(self.metrics, "claudews_events_stored_total", kind="session.reset"), 1
        )

    def test_sends_closes_and_storage_failures_are_counted(self):
        """Messages and their bytes, events fanned out, slow closes and failed writes move their counters."""
        self.metrics.sent(10)
        self.metrics.sent(5)
        self.metrics.fanned_out(3)
        self.metrics.slow_close()
        self.metrics.storage_failed(OSError(28, "No space left on device"))
        self.assertEqual(value(self.metrics, "claudews_messages_sent_total"), 2)
        self.assertEqual(value(self.metrics, "claudews_sent_bytes_total"), 15)
        self.assertEqual(value(self.metrics, "claudews_events_sent_total"), 3)
        self.assertEqual(value(self.metrics, "claudews_slow_client_closes_total"), 1)
        self.assertEqual(value(self.metrics, "claudews_storage_failures_total"), 1)

    def test_gauges_are_read_when_scraped(self):
        """Connections and CLI processes are what their sources say at scrape time."""
        counts = {"connections": 0, "processes": 0}
        self.metrics.track_connections(lambda: counts["connections"])
        self.metrics.track_processes(lambda: counts["processes"])
        counts.update(connections=4, processes=2)
        self.assertEqual(value(self.metrics, "claudews_connections"), 4)
        self.assertEqual(value(self.metrics, "claudews_cli_processes"), 2)

    def test_two_servers_never_share_counts(self):
        """Each Metrics has its own registry, not prometheus_client's global one."""
        other = Metrics(self.clock)
        self.metrics.slow_close()
        self.assertEqual(value(other, "claudews_slow_client_closes_total"), 0)

    def test_the_scrape_parses(self):
        """render() is Prometheus' text format, every family named claudews_*."""
        self.metrics.request("prompt", None)
        families = list(text_string_to_metric_families(self.metrics.render().decode()))
        names = {f.name for f in families}
        self.assertIn("claudews_requests", names)
        self.assertTrue(all(name.startswith("claudews_") for name in names), names)


class BrokenStore:
    last_seq = written_seq = 0
    first_seq = 1

    def append(self, seq, line):
        raise OSError(28, "No space left on device")

    def append_many(self, seq, lines):
        raise OSError(28, "No space left on device")

    def when_visible(self, callback):
        pass

    def read_since(self, since, upto=None):
        return iter(())


class EventLogCallbackTests(SynchronousTestCase):
    def test_every_refused_write_is_reported(self):
        """The event log tells write_failed of each write the disk refuses."""
        failed = []
        log = EventLog(
            path="/w/a", history=BrokenStore(), fanout=send_each, reactor=Clock(),
            write_failed=failed.append,
        )
        log.publish(events.output(None, "stdout", "x"))
        log.publish(events.output(None, "stdout", "y"))
        self.assertEqual([e.errno for e in failed], [28, 28])


class WiredTests(ServerTestCase):
    """The metrics as the server's rooms count them."""

    def test_requests_and_connections_are_counted_by_the_connection(self):
        """A connection counts as open; its requests count by type and code."""
        metrics = self.factory.metrics
        c = self.client()
        self.assertEqual(value(metrics, "claudews_connections"), 1)
        c.request("project.list")
        c.request("no.such.type")
        self.assertEqual(
            value(metrics, "claudews_requests_total", type="project.list", code="ok"), 1
        )
        self.assertEqual(
            value(metrics, "claudews_requests_total", type="unknown", code="unknown_type"), 1
        )
        self.assertGreater(value(metrics, "claudews_sent_bytes_total"), 0)

    def test_stored_events_reach_the_registrys_metrics(self):
        """Events a project stores count by kind, through the registry's observers."""
        c = self.client()
        path = self.create(c, "app")
        self.publish(path, "hello")
        self.assertEqual(
            value(self.registry.metrics, "claudews_events_stored_total", kind="output"), 1
        )


def scrape(factory, args=None, headers=None):
    request = DummyRequest([b"metrics"])
    request.args = args or {}
    for name, text in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [text])
    body = MetricsPage(factory).render_GET(request)
    return request.responseCode or 200, body


class PageTests(ServerTestCase):
    def test_without_the_token_is_401(self):
        """No token, or a wrong one, gets 401 and no metrics."""
        for args, headers in [
            ({}, {}),
            ({b"token": [b"wrong"]}, {}),
            ({}, {"authorization": "Bearer wrong"}),
            ({b"token": [TOKEN.encode(), TOKEN.encode()]}, {}),
        ]:
            code, body = scrape(self.factory, args, headers)
            self.assertEqual(code, 401)
            self.assertNotIn(b"claudews_", body)

    def test_the_token_as_header_or_parameter_gets_the_metrics(self):
        """Authorization: Bearer TOKEN or ?token=TOKEN gets 200 and the text format."""
        for args, headers in [
            ({}, {"authorization": "Bearer " + TOKEN}),
            ({b"token": [TOKEN.encode()]}, {}),
        ]:
            code, body = scrape(self.factory, args, headers)
            self.assertEqual(code, 200)
            self.assertIn(b"claudews_connections ", body)

    def test_metrics_public_needs_no_token(self):
        """With metrics-public the scrape needs no token."""
        self.serve(metrics_public=True)
        code, body = scrape(self.factory)
        self.assertEqual(code, 200)
        self.assertIn(b"claudews_requests", body)


# -- a real server -------------------------------------------------------


def get(server, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = dict({"Host": "127.0.0.1:%d" % server.port}, **(headers or {}))
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        connection.close()


def samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.integration
def test_metrics_are_scraped_with_the_token_and_count_a_prompt(make_server):
    """/metrics is 401 without the token; with it, it parses and counts one completed prompt."""
    server = make_server()
    status, _ = get(server, "/metrics")
    assert status == 401
    c = server.connect()
    path = server.project_dir("app")
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    assert c.finished(submit(c, path, "hello"))["status"] == "completed"
    status, text = get(server, "/metrics", {"Authorization": "Bearer " + server.token})
    assert status == 200
    found = samples(text)
    assert found[("claudews_prompts_total", (("status", "completed"),))] == 1
    assert found[("claudews_prompt_duration_seconds_count", ())] == 1
    assert found[("claudews_requests_total", (("code", "ok"), ("type", "prompt")))] == 1
    assert found[("claudews_connections", ())] == 1
    assert found[("claudews_events_stored_total", (("kind", "prompt.finished"),))] == 1
    status, _ = get(server, "/metrics?token=" + server.token)
    assert status == 200
    c.ok("project.delete", path=path)
    server.wait_log(r"Project .* deleted")
    log = server.drain_log()
    assert "Prompt " in log and ": completed, took " in log
    assert "object at 0x" not in log
    assert server.token not in log
