"""
Cheap WebSocket clients for bench/perf.py, so that the bench measures the
server and not a client library.

- L{Stream}: one connection's incoming bytes, parsed frame header by
  frame header; of each message it keeps only a head (to tell what it is)
  and a tail (where the stand-in CLI's C{"t":NS} stamp is, for latency).
- L{reader_main}: a process of many such connections on one selector;
  L{Readers} runs several of them and adds up what they saw, their own
  CPU time included, so the bench can say when the client, not the
  server, was the bottleneck.
- L{RawClient}: one blocking connection for requests, timed to the
  nanosecond of each C{recv}.
- L{open_idle}: many connections that only shake hands.

The framing is tests/wsmemory.py's; the same code talks to claudews and to
bench/floor.py (which needs no token and no C{subscribe}).
"""

import json
import multiprocessing
import os
import re
import resource
import selectors
import socket
import struct
import sys
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import wsmemory  # noqa: E402

#: The stand-in CLI's stamp, the last field of every line it prints; in a
#: claudews event it ends the embedded message, so C{}} or C{}}}} follows.
STAMP = re.compile(rb'"t":(\d{16,20})\}')
HEAD = 320
TAIL = 48
#: A frame longer than this is read through rather than gathered whole.
BIG = 64 * 1024
RECV = 1 << 18


class Closed(ConnectionError):
    pass


def handshake(port, path="/ws", token=None, host="127.0.0.1"):
    """
    A connected socket that completed the opening handshake, and the bytes
    that came after the response (frames, if any).
    """
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(wsmemory.handshake_request(
        path=path, token=token, host="%s:%d" % (host, port)))
    return sock, read_handshake(sock)


def read_handshake(sock):
    """Read the server's handshake answer; what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise Closed("closed during the handshake: %r" % (data[:200],))
        data += chunk
    status, rest = wsmemory.parse_status(data)
    if status != 101:
        raise Closed("handshake refused: %r" % (data[:300],))
    return rest


def text_frame(obj):
    return wsmemory.text_frame(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))


class Stream:
    """
    The messages of one connection, counted as they arrive.

    @ivar messages: complete data messages received.
    @ivar stamped: those that carried a stamp (C{"t":NS} at the end).
    @ivar ends: those whose head matched C{end}.
    @ivar latencies: receive time minus stamp, in ns, when C{keep} is set;
        C{stamps} the stamps themselves, in the same order.
    """

    def __init__(self, sock, end=None, ends_needed=1, keep=False, subscribed=True):
        self.sock = sock
        self.end = re.compile(end) if end else None
        self.ends_needed = ends_needed
        self.keep = keep
        self.subscribed = subscribed
        self.subscribed_ns = None
        self.messages = 0
        self.stamped = 0
        self.ends = 0
        self.close_code = None
        self.eof = False
        self.first_ns = None
        self.last_ns = None
        self.latencies = array("q")
        self.stamps = array("q")
        self._pending = b""
        # A big frame being read through: how much is left of it.
        self._left = 0
        self._big_head = b""
        self._big_tail = b""
        self._big_first = 0
        # The message being assembled from fragments: its first head.
        self._message_head = None

    @property
    def done(self):
        return self.eof or self.close_code is not None or (
            self.end is not None and self.ends >= self.ends_needed)

    def feed(self, data, now):
        if self._left:
            take = min(self._left, len(data))
            if len(self._big_head) < HEAD:
                self._big_head += data[: min(take, HEAD - len(self._big_head))]
            self._big_tail = (self._big_tail + data[:take])[-TAIL:]
            self._left -= take
            if self._left:
                return
            self._frame(self._big_first, self._big_head, self._big_tail, now)
            data = data[take:]
        buf = self._pending + data if self._pending else data
        pos, n = 0, len(buf)
        while n - pos >= 2:
            first, length = buf[pos], buf[pos + 1] & 0x7F
            at = pos + 2
            if length == 126:
                if n - at < 2:
                    break
                length = (buf[at] << 8) | buf[at + 1]
                at += 2
            elif length == 127:
                if n - at < 8:
                    break
                (length,) = struct.unpack_from("!Q", buf, at)
                at += 8
            end = at + length
            if end > n:
                if length > BIG:
                    self._big_first = first
                    self._big_head = buf[at:min(n, at + HEAD)]
                    self._big_tail = buf[max(at, n - TAIL):n]
                    self._left = end - n
                    pos = n
                break
            self._frame(first, buf[at:min(end, at + HEAD)], buf[max(at, end - TAIL):end], now)
            pos = end
        self._pending = buf[pos:] if pos < n else b""

    def _frame(self, first, head, tail, now):
        opcode, fin = first & 0x0F, first & 0x80
        if opcode == wsmemory.TEXT or opcode == wsmemory.BINARY:
            if not fin:
                self._message_head = head
                return
        elif opcode == 0:
            if not fin:
                return
            head, self._message_head = self._message_head or b"", None
        elif opcode == wsmemory.PING:
            self.sock.setblocking(True)
            self.sock.sendall(wsmemory.encode_frame(wsmemory.PONG, head))
            self.sock.setblocking(False)
            return
        elif opcode == wsmemory.CLOSE:
            self.close_code = struct.unpack("!H", head[:2])[0] if len(head) >= 2 else 1005
            return
        else:
            return
        self._message(head, tail, now)

    def _message(self, head, tail, now):
        if not self.subscribed:
            if head.startswith(b'{"type":"result"') and b'"id":"sub"' in head:
                self.subscribed = True
                return
        self.messages += 1
        if self.first_ns is None:
            self.first_ns = now
        self.last_ns = now
        match = STAMP.search(tail)
        if match is not None:
            self.stamped += 1
            if self.keep:
                stamp = int(match.group(1))
                self.stamps.append(stamp)
                self.latencies.append(now - stamp)
        if self.end is not None and self.end.search(head):
            self.ends += 1


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reader_main(pipe, specs, deadline_seconds):
    """
    One reader process: opens every connection of C{specs} (dicts:
    C{port}, C{path}, C{token}, C{subscribe} (a request or None), C{end},
    C{ends}, C{keep}), says C{"ready"} once every subscription was
    answered, reads until every connection is done (or it is told to stop,
    or the deadline passes), then sends its figures and exits.
    """
    streams = []
    selector = selectors.DefaultSelector()
    try:
        for spec in specs:
            sock, rest = handshake(spec["port"], spec.get("path", "/ws"), spec.get("token"))
            stream = Stream(sock, spec.get("end"), spec.get("ends", 1), spec.get("keep", False),
                            subscribed=spec.get("subscribe") is None)
            if spec.get("subscribe") is not None:
                stream.subscribed_ns = time.time_ns()
                sock.sendall(text_frame(spec["subscribe"]))
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, stream)
            if rest:
                stream.feed(rest, time.time_ns())
            streams.append(stream)
    except Exception as e:
        pipe.send(("error", "%s: %s" % (type(e).__name__, e)))
        return
    selector.register(pipe, selectors.EVENT_READ, None)
    deadline = time.monotonic() + deadline_seconds
    ready = False
    stopped = timed_out = False
    cpu0, wall0 = _cpu(), time.monotonic()
    while True:
        if not ready and all(s.subscribed or s.done for s in streams):
            ready = True
            cpu0, wall0 = _cpu(), time.monotonic()
            pipe.send(("ready", None))
        if ready and all(s.done for s in streams):
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        for key, _ in selector.select(1.0):
            stream = key.data
            if stream is None:
                if pipe.poll():
                    pipe.recv()
                    stopped = True
                continue
            try:
                data = stream.sock.recv(RECV)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                stream.eof = True
                selector.unregister(stream.sock)
                continue
            stream.feed(data, time.time_ns())
        if stopped:
            break
    cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
    latencies, stamps = array("q"), array("q")
    for stream in streams:
        latencies.extend(stream.latencies)
        stamps.extend(stream.stamps)
    firsts = [s.first_ns for s in streams if s.first_ns is not None]
    pipe.send(("done", {
        "messages": sum(s.messages for s in streams),
        "stamped": sum(s.stamped for s in streams),
        "ends": sum(s.ends for s in streams),
        "done": sum(1 for s in streams if s.done),
        "closed": [s.close_code for s in streams if s.close_code is not None],
        "eof": sum(1 for s in streams if s.eof),
        "subscribed_ns": min((s.subscribed_ns for s in streams if s.subscribed_ns), default=None),
        "first_ns": min(firsts, default=None),
        "last_ns": max((s.last_ns for s in streams if s.last_ns is not None), default=None),
        "cpu": cpu,
        "wall": wall,
        "timed_out": timed_out,
        "stopped": stopped,
        "latencies": latencies.tobytes(),
        "stamps": stamps.tobytes(),
    }))
    for stream in streams:
        stream.sock.close()


class ReaderError(RuntimeError):
    pass


class Readers:
    """
    C{specs} spread over C{processes} reader processes.
    """

    def __init__(self, specs, processes=1, deadline=600.0):
        context = multiprocessing.get_context("spawn")
        processes = max(1, min(processes, len(specs)))
        self._pipes, self._procs = [], []
        for i in range(processes):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=reader_main, args=(theirs, specs[i::processes], deadline), daemon=True)
            process.start()
            theirs.close()
            self._pipes.append(mine)
            self._procs.append(process)
        self.deadline = deadline

    def _expect(self, pipe, word, timeout):
        if not pipe.poll(timeout):
            raise ReaderError("a reader said nothing for %.0f s (waiting for %s)" % (timeout, word))
        try:
            got, value = pipe.recv()
        except EOFError:
            raise ReaderError("a reader process died (waiting for %s)" % (word,)) from None
        if got == "error":
            raise ReaderError(value)
        if got != word:
            raise ReaderError("a reader said %r, not %r" % (got, word))
        return value

    def ready(self, timeout=120.0):
        """Every connection is open and subscribed."""
        for pipe in self._pipes:
            self._expect(pipe, "ready", timeout)

    def results(self, timeout=None):
        """
        Wait until every reader is done; what they saw, added up.
        """
        parts = [self._expect(pipe, "done", timeout or self.deadline + 30) for pipe in self._pipes]
        self.close()
        latencies, stamps = array("q"), array("q")
        for part in parts:
            latencies.frombytes(part["latencies"])
            stamps.frombytes(part["stamps"])
        firsts = [p["first_ns"] for p in parts if p["first_ns"] is not None]
        subscribed = [p["subscribed_ns"] for p in parts if p["subscribed_ns"] is not None]
        return {
            "messages": sum(p["messages"] for p in parts),
            "stamped": sum(p["stamped"] for p in parts),
            "ends": sum(p["ends"] for p in parts),
            "closed": [code for p in parts for code in p["closed"]],
            "eof": sum(p["eof"] for p in parts),
            "timed_out": any(p["timed_out"] for p in parts),
            "first_ns": min(firsts, default=None),
            "last_ns": max((p["last_ns"] for p in parts if p["last_ns"]), default=None),
            "subscribed_ns": min(subscribed, default=None),
            "cpu": [p["cpu"] for p in parts],
            "wall": [p["wall"] for p in parts],
            "latencies": latencies,
            "stamps": stamps,
        }

    def stop(self):
        for pipe in self._pipes:
            try:
                pipe.send("stop")
            except OSError:
                pass

    def close(self):
        for process in self._procs:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()


class RawClient:
    """
    One blocking connection that sends requests and reads messages whole,
    each with the time (ns) of the C{recv} that completed it.
    """

    def __init__(self, port, path="/ws", token=None):
        self.sock, rest = handshake(port, path, token)
        self._buffer = rest
        self._received_ns = time.time_ns()
        self._ids = 0
        self.kept = []

    def close(self):
        try:
            self.sock.sendall(wsmemory.close_frame(1000))
        except OSError:
            pass
        self.sock.close()

    def send(self, obj):
        self.sock.sendall(text_frame(obj))

    def receive(self, timeout=60.0):
        """
        The next data message: C{(recv_ns, payload)}, where C{recv_ns} is
        the time of the C{recv} that brought its last byte; pings are
        answered.
        """
        deadline = time.monotonic() + timeout
        while True:
            size = _frame_size(self._buffer)
            if size is not None and len(self._buffer) >= size:
                frame = wsmemory.decode_frames(self._buffer[:size])[0][0]
                self._buffer = self._buffer[size:]
                if frame.opcode == wsmemory.PING:
                    self.sock.sendall(wsmemory.encode_frame(wsmemory.PONG, frame.payload))
                elif frame.opcode == wsmemory.CLOSE:
                    raise Closed("closed by the server: %r" % (frame.payload,))
                elif frame.opcode in (wsmemory.TEXT, wsmemory.BINARY):
                    return self._received_ns, frame.payload
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message in %s s" % (timeout,))
            self.sock.settimeout(left)
            chunk = self.sock.recv(RECV)
            self._received_ns = time.time_ns()
            if not chunk:
                raise Closed("connection closed")
            self._buffer += chunk

    def request(self, type, timeout=60.0, **fields):
        """
        Send a request and return its result (an error reply raises);
        other messages meanwhile are kept in C{kept}.
        """
        self._ids += 1
        self.send(dict(fields, type=type, id=self._ids))
        while True:
            _, payload = self.receive(timeout)
            message = json.loads(payload)
            if message.get("type") == "result" and message.get("id") == self._ids:
                if not message.get("ok"):
                    raise RuntimeError("%s failed: %r" % (type, message.get("error")))
                return message["result"]
            self.kept.append(message)


def _frame_size(data):
    """The size of the frame at the start of C{data}, if its header is there."""
    if len(data) < 2:
        return None
    length, at = data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        (length,) = struct.unpack_from("!H", data, 2)
        at = 4
    elif length == 127:
        if len(data) < 10:
            return None
        (length,) = struct.unpack_from("!Q", data, 2)
        at = 10
    return at + length


def open_idle(port, count, path="/ws", token=None, batch=100):
    """
    C{count} connections that complete their handshake and then only sit
    there; handshakes go out C{batch} at a time.
    """
    sockets = []
    while len(sockets) < count:
        group = []
        for _ in range(min(batch, count - len(sockets))):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(wsmemory.handshake_request(
                path=path, token=token, host="127.0.0.1:%d" % (port,)))
            group.append(sock)
        for sock in group:
            read_handshake(sock)
        sockets.extend(group)
    return sockets


def main():
    print(__doc__)


if __name__ == "__main__":
    main()
