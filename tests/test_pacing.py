"""
Requests over the rate are paced, never refused (issue 10), tried from
outside against a real C{twistd -n claudews}: a client that pipelines
2,000 requests in one write gets 2,000 answers, in order, and is not
closed, while another connection is answered meanwhile.

Nothing here waits on a clock or asserts a duration: the order in which
answers arrive shows that the other connection did not wait behind the
burst.
"""

import json
import select

import pytest

from tests import wsmemory
from tests.harness import DEADLINE
from tests.rawclient import Raw

pytestmark = pytest.mark.integration

#: Requests in the burst, and the pace of the server that answers them
#: (requests a second, after a burst of the default 200): the default 100
#: would take 18 s, this takes about 4.
COUNT = 2000
RATE = 500


def answers(raw):
    return [json.loads(f.payload)["id"] for f in raw.frames if f.opcode == wsmemory.TEXT]


def read_frames(raw, wait=True):
    """
    Read what the server sent into C{raw.frames}: at least one more frame
    if C{wait}, else only what has arrived already (L{Raw.read_until}
    waits for a given frame).
    """
    timeout = DEADLINE if wait else 0
    while select.select([raw.sock], [], [], timeout)[0]:
        chunk = raw.sock.recv(1 << 20)
        assert chunk, "the server closed the connection"
        raw.buffer += chunk
        frames, raw.buffer = wsmemory.decode_frames(raw.buffer)
        raw.frames.extend(frames)
        if wait and frames:
            return
    assert not wait, "no answer in %s s" % (DEADLINE,)


def test_a_pipelined_burst_is_answered_in_full_and_in_order_while_others_are_served(make_server):
    """2,000 requests in one write: 2,000 answers in order, no close; another connection is answered before the burst's last answer."""
    server = make_server(env={"CLAUDEWS_REQUEST_RATE": str(RATE)})
    bystander = server.connect()
    raw = Raw(server)
    assert raw.status() == 101
    assert raw.send(b"".join(
        wsmemory.text_frame(json.dumps({"type": "project.list", "id": i})) for i in range(COUNT)
    ))
    # The burst is being answered...
    while not answers(raw):
        read_frames(raw)
    # ...and another connection is answered meanwhile: what the burst got
    # by the time that answer came lacks its last answer.
    assert bystander.ok("server.info")["protocol"] == 1
    read_frames(raw, wait=False)
    assert COUNT - 1 not in answers(raw), len(answers(raw))

    while COUNT - 1 not in answers(raw):
        read_frames(raw)
    assert [f.opcode for f in raw.frames] == [wsmemory.TEXT] * COUNT
    replies = [json.loads(f.payload) for f in raw.frames]
    assert [r["id"] for r in replies] == list(range(COUNT))
    assert all(r["ok"] for r in replies)

    # Still open: a ping is answered, and the close handshake completes.
    raw.send(wsmemory.ping_frame(b"still there"))
    pong = raw.read_until(lambda f: f.opcode == wsmemory.PONG)
    assert pong is not None and pong.payload == b"still there", pong
    raw.send(wsmemory.close_frame(1000))
    close = raw.close_frame()
    assert close is not None and close.close_code == 1000, close
    raw.close()
    assert bystander.ok("server.info")["protocol"] == 1
    bystander.close()
    server.stop_cleanly()
    log = "".join(server.log)
    assert "too many requests" not in log and "Closing" not in log, log[-3000:]
