"""
Tests for L{claudews.site}: one port for HTTP and the WebSocket.

The unit tests render resources with Twisted's own test request; the
integration tests ask a real twistd server with plain HTTP (urllib) and
a real WebSocket client, through the same port.
"""

import http.client
import json

import pytest
import websocket
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest

from claudews.site import SECURITY_HEADERS, Channel, Console, console_files

FILES = {
    "/index.html": (b"<!doctype html><title>claudews</title>", b"text/html; charset=utf-8"),
    "/app.js": (b"export {};", b"text/javascript; charset=utf-8"),
}


def render(resource, path):
    request = DummyRequest(path.lstrip("/").split("/"))
    request.path = path.encode()
    body = resource.render_GET(request)
    return request, body


class ConsoleTests(SynchronousTestCase):
    def test_the_root_is_the_page(self):
        """/ serves index.html as HTML, to be asked again each time."""
        request, body = render(Console(FILES), "/")
        self.assertEqual(body, FILES["/index.html"][0])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-cache"])

    def test_a_module_is_javascript(self):
        """Module scripts need a JavaScript type, or browsers refuse them."""
        request, body = render(Console(FILES), "/app.js")
        self.assertEqual(body, b"export {};")
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [b"text/javascript; charset=utf-8"]
        )

    def test_only_the_known_files_are_served(self):
        """A path that names no console file, or climbs out, is 404; nothing is read from disk."""
        for path in ("/etc/passwd", "/../pyproject.toml", "/app.js/", "/index.html%00", "/x.py"):
            request, body = render(Console(FILES), path)
            self.assertEqual(request.responseCode, 404, path)
            self.assertEqual(body, b"Not found\n")

    def test_the_package_carries_the_console(self):
        """The installed package has the page, its modules and the vendored libraries; no licence files."""
        files = console_files()
        self.assertIn("/index.html", files)
        self.assertIn("/app.js", files)
        self.assertTrue(any(name.startswith("/vendor/") for name in files))
        self.assertFalse([name for name in files if "LICENSE" in name])


class ChannelTests(SynchronousTestCase):
    def make(self):
        clock = Clock()
        channel = Channel()
        channel.callLater = clock.callLater
        transport = StringTransport()
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)
        channel.makeConnection(transport)
        return clock, channel, aborted

    def test_a_request_that_trickles_in_is_cut_off(self):
        """Bytes that keep coming do not stretch the time to send a request."""
        clock, channel, aborted = self.make()
        for _ in range(9):
            clock.advance(1)
            channel.dataReceived(b"X")
        clock.advance(1)
        self.assertEqual(aborted, [True])

    def test_a_request_in_time_is_not_cut_off(self):
        """Headers complete before the deadline: the deadline goes."""
        clock, channel, aborted = self.make()
        channel.dataReceived(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        clock.advance(60)
        self.assertEqual(aborted, [])


# -- a real server -------------------------------------------------------


def get(server, path, headers=None, method="GET"):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, headers=dict({"Host": "127.0.0.1:%d" % server.port}, **(headers or {})))
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest.mark.integration
def test_the_console_and_the_websocket_share_one_port(make_server):
    """GET / is the console with its security headers; /ws still speaks WebSocket."""
    server = make_server()
    status, headers, body = get(server, "/")
    assert status == 200
    assert b"<!doctype html>" in body.lower()
    for name, value in SECURITY_HEADERS:
        assert headers[name.decode()] == value.decode()
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    client = server.connect()
    assert client.ok("server.info")["protocol"] == 1


@pytest.mark.integration
def test_plain_http_on_the_websocket_path_is_426_and_locks_nobody_out(make_server):
    """Fifty plain GETs of /ws (a probe, a browser tab): 426 each, and the right client still gets in."""
    server = make_server()
    for _ in range(50):
        status, headers, _ = get(server, "/ws")
        assert status == 426
        assert headers["Upgrade"].lower() == "websocket"
    status, _, _ = get(server, "/no/such/thing")
    assert status == 404
    assert server.connect().ok("project.list") == {"projects": []}


@pytest.mark.integration
def test_a_page_of_the_server_itself_may_open_the_websocket(make_server):
    """The console's origin (this server's own) is let in; another port of the same host is not."""
    server = make_server()
    own = "http://127.0.0.1:%d" % (server.port,)
    assert server.connect(origin=own, suppress_origin=False).ok("server.info")["protocol"] == 1
    other = "http://127.0.0.1:%d" % (server.port + 1,)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(server.url(), origin=other, timeout=30)
    assert refused.value.status_code == 403


@pytest.mark.integration
def test_the_server_info_names_the_project_roots(make_server):
    """The console shows where projects may be created."""
    server = make_server()
    info = server.connect().ok("server.info")
    assert info["project_roots"] == [server.root]
    assert json.dumps(info)


@pytest.mark.integration
def test_health_answers_probes_without_a_token(make_server):
    """GET /health: 200, JSON, no token needed and none in it; fifty of them lock nobody out."""
    server = make_server()
    client = server.connect()
    client.ok("project.create", path=server.project_dir("app"))
    for _ in range(50):
        status, headers, body = get(server, "/health")
        assert status == 200
    health = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert health["status"] == "ok"
    assert (health["projects"], health["running"], health["connections"]) == (1, 0, 1)
    assert server.token not in body.decode()
    assert server.connect().ok("project.list")["projects"]
