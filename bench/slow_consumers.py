"""
Slow consumers: one client that never reads must not hold up, or blow up,
a server streaming large events to many clients that do.

One real server (twistd, the fake CLI of tests/fake_claude.py), SUBSCRIBERS
clients that read everything, one client that subscribes and never reads,
and a project whose prompts each print an assistant message and a result
of SIZE bytes (the fake CLI's huge:SIZE). Reports:

- whether the non-reader was closed with 1008, and when;
- whether every reader received every event, in order (their seq lists
  are compared with each other and with the project's last_seq);
- the server's RSS (psutil, sampled every 20 ms): before, peak, after.

Run by hand from the repository root (not part of the test suite)::

    python bench/slow_consumers.py [--subscribers 50] [--prompts 10] [--size 1000000]

The readers are plain non-blocking sockets in one thread, parsing only
frame headers and the start of each event, so that the bench measures the
server rather than a client library.
"""

import argparse
import json
import os
import re
import selectors
import socket
import struct
import sys
import tempfile
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import wsmemory
from tests.harness import Server

SEQ = re.compile(rb'"seq":(\d+)')
MiB = 1024 * 1024


class Reader:
    """
    One subscriber on a raw socket: keeps the seq of every event, and the
    close code if the server closes it.
    """

    def __init__(self, server, path, read=True):
        self.sock = socket.create_connection(("127.0.0.1", server.port))
        self.sock.sendall(wsmemory.handshake_request(
            token=server.token, host="127.0.0.1:%d" % (server.port,)
        ))
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(4096)
        status, rest = wsmemory.parse_status(data)
        assert status == 101, data
        self.buffer = bytearray(rest)
        self.sock.sendall(wsmemory.text_frame(json.dumps(
            {"type": "subscribe", "id": "sub", "path": path}
        )))
        self.read = read
        self.seqs = []
        self.finished = 0
        self.close_code = None
        self.closed_at = None
        self.eof = False
        # The frame being read: how much of it is left, and its first bytes.
        self._left = 0
        self._head = bytearray()
        self._opcode = None
        self.bytes = 0

    def feed(self, chunk):
        self.bytes += len(chunk)
        self.buffer += chunk
        while True:
            if self._left:
                take = min(self._left, len(self.buffer))
                if len(self._head) < 256:
                    self._head += self.buffer[: min(take, 256 - len(self._head))]
                del self.buffer[:take]
                self._left -= take
                if self._left:
                    return
                self._frame_done()
                continue
            if len(self.buffer) < 2:
                return
            first, second = self.buffer[0], self.buffer[1]
            length, at = second & 0x7F, 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                (length,) = struct.unpack("!H", self.buffer[2:4])
                at = 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                (length,) = struct.unpack("!Q", self.buffer[2:10])
                at = 10
            del self.buffer[:at]
            self._opcode = first & 0x0F
            self._head = bytearray()
            self._left = length
            if not length:
                self._frame_done()

    def _frame_done(self):
        head = bytes(self._head)
        if self._opcode == wsmemory.CLOSE:
            self.close_code = struct.unpack("!H", head[:2])[0] if len(head) >= 2 else None
            self.closed_at = time.monotonic()
        elif self._opcode == wsmemory.PING:
            # Readers answer pings, or the server drops them after a minute.
            self.sock.setblocking(True)
            self.sock.sendall(wsmemory.encode_frame(wsmemory.PONG, head))
            self.sock.setblocking(False)
        elif self._opcode == wsmemory.TEXT and head.startswith(b'{"type":"event"'):
            match = SEQ.search(head)
            self.seqs.append(int(match.group(1)))
            if b'"event":"prompt.finished"' in head:
                self.finished += 1


def sample_rss(pid, samples, stop):
    process = psutil.Process(pid)
    while not stop.is_set():
        samples.append((time.monotonic(), process.memory_info().rss))
        time.sleep(0.02)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--size", type=int, default=1000000)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="claudews-bench-")
    server = Server(tmp, "--config", os.path.join(tmp, "bench.toml"))
    with open(os.path.join(tmp, "bench.toml"), "w") as f:
        f.write("max-connections-per-address = %d\nmax-queue = %d\n"
                % (args.subscribers + 10, args.prompts + 1))
    server.start()
    samples, stop = [], threading.Event()
    try:
        control = server.connect()
        path = server.project_dir("stream")
        control.ok("project.create", path=path)
        readers = [Reader(server, path) for _ in range(args.subscribers)]
        stuck = Reader(server, path, read=False)
        # Nothing reads the non-reader's socket from here on: its receive
        # buffer stays as small as the kernel made it.
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        selector = selectors.DefaultSelector()
        for reader in readers:
            reader.sock.setblocking(False)
            selector.register(reader.sock, selectors.EVENT_READ, reader)
        time.sleep(0.5)
        sampler = threading.Thread(
            target=sample_rss, args=(server.process.pid, samples, stop), daemon=True
        )
        sampler.start()
        time.sleep(0.2)
        baseline = max(rss for _, rss in samples)
        started = time.monotonic()
        for i in range(args.prompts):
            control.ok("prompt", path=path, prompt="event %d huge:%d" % (i, args.size))

        slow_closed = threading.Event()

        def watch_log():
            # The server says when it closes the non-reader; it then has
            # 5 s to read up to the close frame before it is dropped. The
            # log goes on being read, lest a full pipe stall the server.
            try:
                server.wait_log(r"a slow client", timeout=60)
            finally:
                slow_closed.set()
            while not stop.is_set():
                server.drain_log()
                time.sleep(0.1)

        watcher = threading.Thread(target=watch_log, daemon=True)
        watcher.start()
        deadline = time.monotonic() + 300
        stuck_state = "waiting"
        readers_done_at = None
        while time.monotonic() < deadline:
            if readers_done_at is None and all(
                r.finished >= args.prompts or r.close_code or r.eof for r in readers
            ):
                readers_done_at = time.monotonic()
            if readers_done_at is not None and stuck_state == "done":
                break
            if slow_closed.is_set() and stuck_state == "waiting":
                stuck.sock.setblocking(False)
                selector.register(stuck.sock, selectors.EVENT_READ, stuck)
                stuck_state = "reading"
            for key, _ in selector.select(0.1):
                reader = key.data
                try:
                    chunk = reader.sock.recv(4 * MiB)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    reader.eof = True
                    selector.unregister(reader.sock)
                    continue
                reader.feed(chunk)
            if stuck_state == "reading" and (stuck.close_code or stuck.eof):
                stuck_state = "done"
        elapsed = (readers_done_at or time.monotonic()) - started
        time.sleep(1.0)
        stop.set()
        sampler.join()
        watcher.join()
        control.close()
        # A new connection: the first one was idle long enough to miss pings.
        control = server.connect()
        last_seq = control.ok("project.get", path=path)["project"]["last_seq"]
        control.close()
    finally:
        stop.set()
        server.stop()
        server.kill()

    expected = list(range(1, last_seq + 1))
    complete = sum(1 for r in readers if r.seqs == expected)
    closed = sum(1 for r in readers if r.close_code)
    peak = max(rss for _, rss in samples)
    after = samples[-1][1]
    delivered = sum(r.bytes for r in readers)
    print("subscribers reading:          %d" % (args.subscribers,))
    print("prompts x event size:         %d x %d bytes (assistant message and result each)"
          % (args.prompts, args.size))
    print("events per subscriber:        %d (last_seq)" % (last_seq,))
    print("readers with every event:     %d / %d (closed: %d)"
          % (complete, args.subscribers, closed))
    print("bytes delivered to readers:   %.1f MiB in %.1f s (%.0f MiB/s)"
          % (delivered / MiB, elapsed, delivered / MiB / elapsed))
    print("non-reader close code:        %s, %.1f s after the first prompt; it got %d events"
          % (stuck.close_code, (stuck.closed_at or time.monotonic()) - started, len(stuck.seqs)))
    print("server RSS before/peak/after: %.1f / %.1f / %.1f MiB"
          % (baseline / MiB, peak / MiB, after / MiB))
    ok = complete == args.subscribers and stuck.close_code == 1008
    print("result:                       %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
