"""
The breaks of issue 13 (items 1, 3 and 4), tried from outside against a
real C{twistd -n claudews}: no lockout of legitimate clients by failed
handshakes, history pages of multi-MB events to clients that never read,
and a flood of 1-byte fragments. Each of these failed before the fix.

Nothing here waits on a clock: a refusal that is delayed is waited on by
its answer, a slow client by the server's log line that it was closed,
and a flood by the close frame the server sends.
"""

import json
import re
import select

import psutil
import pytest

from tests import wsmemory
from tests.harness import submit
from tests.rawclient import Raw

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
#: Bytes of each large event: what the fake CLI prints for huge:N is an
#: assistant message and a result, each carrying N bytes of text.
EVENT_BYTES = 4 * 1000 * 1000
#: The send-backlog-cap of the server that pages them.
BACKLOG_CAP = 16 * MiB


def rss(server):
    return psutil.Process(server.process.pid).memory_info().rss


# -- 1. failed handshakes never lock out a correct token


def test_foreign_origins_and_wrong_tokens_from_loopback_do_not_lock_out_a_correct_client(
    make_server,
):
    """Twelve foreign Origins, then fifteen wrong tokens: a correct client still connects, before a delayed refusal."""
    server = make_server()
    for _ in range(12):
        page = Raw(server, origin="https://evil.example")
        assert page.status() == 403
        page.close()
    client = server.connect()
    assert client.ok("server.info")["protocol"] == 1
    client.close()
    for _ in range(15):
        guess = Raw(server, token="wrong")
        assert guess.status() == 401
        guess.close()
    # The next wrong token's refusal waits (past max-failed-handshakes, a
    # growing delay); a correct token meanwhile is answered at once.
    waiting = Raw(server, token="wrong")
    client = server.connect()
    assert client.ok("server.info")["protocol"] == 1
    ready, _, _ = select.select([waiting.sock], [], [], 0)
    assert ready == [], "the delayed refusal came before the correct client's answer"
    assert waiting.status() == 401
    waiting.close()
    client.close()
    log = server.drain_log()
    assert " 429" not in log and "Blocking" not in log, log[-2000:]


# -- 3. pages of multi-MB events to clients that never read


@pytest.fixture
def big_history(make_server, tmp_path):
    """
    A server whose slow clients are closed once over 1 MiB unsent for 2 s
    (or at once past BACKLOG_CAP), and a project with a dozen events of
    4 MB: (server, client, path).
    """
    config = tmp_path / "slow.toml"
    config.write_text(
        "send-backlog-bytes = %d\nsend-backlog-grace = 2.0\nsend-backlog-cap = %d\n"
        % (MiB, BACKLOG_CAP)
    )
    server = make_server("--config", str(config))
    client = server.connect()
    path = server.project_dir("big")
    client.ok("project.create", path=path)
    client.ok("subscribe", path=path)
    for _ in range(6):
        client.finished(submit(client, path, "huge:%d" % (EVENT_BYTES,)))
    client.ok("unsubscribe", path=path)
    client.events.clear()
    return server, client, path


def test_history_pages_to_clients_that_never_read_are_bounded_and_closed_1008(big_history):
    """Four clients ask for the whole history and never read: RSS grows by a backlog each at most, others are served, they are closed 1008."""
    server, bystander, path = big_history
    # The page a client that reads gets, as a warm-up of the server's buffers.
    page = bystander.ok("history", path=path, limit=1000)
    assert max(len(json.dumps(e)) for e in page["events"]) >= EVENT_BYTES
    before = rss(server)
    readers = []
    for _ in range(4):
        raw = Raw(server, receive_buffer=4096)
        assert raw.status() == 101
        raw.send(wsmemory.text_frame(json.dumps(
            {"type": "history", "id": 1, "path": path, "limit": 1000}
        )))
        readers.append(raw)
    info = bystander.ok("server.info")
    assert info["protocol"] == 1
    assert "a slow client" not in server.drain_log()
    peak = rss(server)
    closed = {}
    by_port = {raw.port: raw for raw in readers}
    while len(closed) < len(readers):
        line = server.wait_log(r"Closing \S+, a slow client")
        peak = max(peak, rss(server))
        port = int(re.search(r":(\d+), a slow client", line).group(1))
        # It reads now, before the close handshake's timeout drops it.
        closed[port] = by_port[port].close_frame()
    for raw in readers:
        raw.close()
    assert sorted(closed) == sorted(by_port)
    assert [f.close_code if f else None for f in closed.values()] == [1008] * len(readers)
    # What the server held for them is bounded by the backlog cap of each
    # (in fact a line or two each); never the whole history (48 MB) each.
    assert peak - before < len(readers) * BACKLOG_CAP, (before, peak)
    # And the server still answers.
    assert bystander.ok("server.info")["protocol"] == 1


# -- 4. a flood of 1-byte fragments


def test_one_byte_fragment_floods_are_closed_while_others_are_answered(make_server):
    """Three connections send a message in 1-byte fragments: each is closed 1008, another client's requests are answered meanwhile."""
    server = make_server()
    floods = []
    for _ in range(3):
        raw = Raw(server)
        assert raw.status() == 101
        floods.append(raw)
    bystander = server.connect()
    first = wsmemory.encode_frame(wsmemory.TEXT, b"{", fin=False)
    fragment = wsmemory.encode_frame(0, b" ", fin=False)
    batch = fragment * 1000
    flooding = list(floods)
    for raw in floods:
        raw.send(first)
    for _ in range(100):
        for raw in list(flooding):
            # Whatever the server sent (its close frame) ends the flood.
            answered, _, _ = select.select([raw.sock], [], [], 0)
            if answered or not raw.send(batch):
                flooding.remove(raw)
        assert bystander.ok("server.info")["protocol"] == 1
    for raw in floods:
        frame = raw.close_frame()
        assert frame is not None and frame.close_code == 1008, frame
        raw.close()
    assert bystander.ok("server.info")["protocol"] == 1
    bystander.close()
