"""
Test harness: a real twistd process running claudews, and a real
WebSocket client (websocket-client, a library independent of the server's
Autobahn) that talks to it.

Nothing here sleeps to wait: the server is ready when it logs the line
saying where it listens, and a client waits on its socket for the frame
it expects, with a deadline so a bug fails the test instead of hanging it.
"""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import psutil
import websocket

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAKE_CLAUDE = os.path.join(HERE, "fake_claude.py")
TWISTD = "from twisted.scripts.twistd import run; run()"

#: Upper bound for any single wait; a passing test never gets near it.
DEADLINE = 30.0


class Server:
    """
    C{twistd -n claudews} in a child process, logging to its stdout.
    """

    def __init__(self, tmp_path, *args, claude_bin=FAKE_CLAUDE, token="test-token", env=None):
        self.tmp = str(tmp_path)
        self.data = os.path.join(self.tmp, "data")
        self.root = os.path.join(self.tmp, "projects")
        self.home = os.path.join(self.tmp, "home")
        for d in (self.root, self.home):
            os.makedirs(d, exist_ok=True)
        self.token = token
        self.args = [
            "--listen", "tcp:0:interface=127.0.0.1",
            "--data", self.data,
            "--claude-bin", claude_bin,
            "--project-root", self.root,
            *args,
        ]
        if token is not None:
            self.args += ["--token", token]
        # The checkout's code (and its twisted/plugins) wins over any
        # installed copy: the tests test this tree.
        pythonpath = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
        self.env = dict(
            os.environ, HOME=self.home, PYTHONPATH=pythonpath, PYTHONUNBUFFERED="1"
        )
        self.env.pop("CLAUDEWS_TOKEN", None)
        self.env.update(env or {})
        self.process = None
        self.port = None
        self.log = []

    def start(self):
        self.log = []
        self._pending = b""
        self.process = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=-", "claudews", *self.args],
            cwd=self.tmp,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            line = self.wait_log(r"listening")
        except BaseException:
            self.kill()
            raise
        match = re.search(r"://[^/]+:(\d+)/ws", line)
        assert match, line
        self.port = int(match.group(1))
        return self

    def _readline(self, deadline):
        # select() and a buffered reader do not mix (lines already in the
        # buffer are invisible to select): read the raw pipe ourselves.
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError("server exited:\n" + "".join(self.log[-40:]))
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        text = line.decode("utf-8", "replace") + "\n"
        self.log.append(text)
        return text

    def wait_log(self, pattern, timeout=DEADLINE):
        """
        Read the server's log until a line matches C{pattern}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._readline(deadline)
            if line is not None and re.search(pattern, line):
                return line
        raise AssertionError("no log line matched %r:\n%s" % (pattern, "".join(self.log[-40:])))

    def drain_log(self):
        """Read what the server logged so far, without waiting."""
        while self.process and self.process.poll() is None:
            if self._readline(time.monotonic()) is None:
                break
        return "".join(self.log)

    def stop(self, sig=signal.SIGTERM):
        """
        Stop the server and return its exit code; collect its whole log.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        rest = self._pending + self.process.stdout.read()
        self._pending = b""
        self.log.append(rest.decode("utf-8", "replace"))
        code = self.process.wait(timeout=DEADLINE)
        self.process.stdout.close()
        self.process = None
        return code

    def kill(self):
        """
        Make sure the server is gone (test teardown): SIGKILL if need be.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=DEADLINE)
            self.process.stdout.close()
            self.process = None

    def stop_cleanly(self):
        """
        SIGTERM, and check that twistd shut down in order (it then ends
        itself with the same signal, so the exit status is -SIGTERM).
        """
        code = self.stop()
        log = "".join(self.log)
        assert "Server Shut Down." in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert code in (0, -signal.SIGTERM), code

    def url(self, token=True):
        url = "ws://127.0.0.1:%d/ws" % (self.port,)
        if token and self.token:
            url += "?token=" + self.token
        return url

    def connect(self, **kwargs):
        return Client(self.url(), **kwargs)

    def project_dir(self, name):
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        return os.path.realpath(path)


class Closed(ConnectionError):
    """
    The server closed the connection; C{code} and C{reason} of its close frame.
    """

    def __init__(self, payload):
        self.code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        self.reason = payload[2:].decode("utf-8", "replace")
        super().__init__("closed by the server: %r" % (payload,))


class Client:
    """
    A blocking WebSocket client that keeps every event it receives.
    """

    def __init__(self, url, **kwargs):
        # websocket-client sends an Origin header unless told not to; the
        # server refuses origins that are not on its allow-list.
        kwargs.setdefault("suppress_origin", True)
        self.ws = websocket.create_connection(url, timeout=DEADLINE, **kwargs)
        self.events = []
        self._ids = 0

    def close(self):
        self.ws.close()

    def receive(self, timeout=DEADLINE):
        """
        The next message, within C{timeout} seconds in all: the server's
        pings (answered by the library) must not stretch the wait, or a
        test waiting for what never comes would wait for ever.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.ws.settimeout(max(0.01, deadline - time.monotonic()))
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise Closed(data)
            if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
                if time.monotonic() >= deadline:
                    raise websocket.WebSocketTimeoutException("no message in %s s" % (timeout,))
                continue
            return json.loads(data)

    def send(self, message):
        self.ws.send(json.dumps(message))

    def request(self, type, **fields):
        """
        Send a request and return its reply, keeping events that arrive
        meanwhile.
        """
        self._ids += 1
        request_id = self._ids
        self.send(dict(fields, type=type, id=request_id))
        deadline = time.monotonic() + DEADLINE
        while True:
            message = self.receive(max(0.1, deadline - time.monotonic()))
            if message.get("type") == "result" and message.get("id") == request_id:
                return message
            self.events.append(message)

    def ok(self, type, **fields):
        reply = self.request(type, **fields)
        assert reply["ok"], reply
        return reply["result"]

    def wait_event(self, predicate, timeout=DEADLINE):
        """
        Return the first kept or arriving event that matches C{predicate}.
        """
        for message in self.events:
            if predicate(message):
                return message
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no matching event; got %r" % (self.events[-10:],))
            message = self.receive(remaining)
            self.events.append(message)
            if predicate(message):
                return message

    def finished(self, prompt_id, timeout=DEADLINE):
        return self.wait_event(
            lambda m: m.get("event") == "prompt.finished" and m.get("prompt_id") == prompt_id,
            timeout,
        )

    def of(self, prompt_id, kind=None):
        return [
            m for m in self.events
            if m.get("prompt_id") == prompt_id and (kind is None or m.get("event") == kind)
        ]


def read_pids(path):
    """The pids the fake CLI recorded in C{path} (FAKE_CLAUDE_PIDFILE)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f if line.strip()]


def submit(client, path, text, **fields):
    """Send a prompt and return its id."""
    return client.ok("prompt", path=path, prompt=text, **fields)["prompt_id"]


def is_tool_use(event):
    """
    Whether C{event} is a C{claude} event carrying an assistant tool call
    (not merely a message with a C{parent_tool_use_id} field).
    """
    if event.get("event") != "claude":
        return False
    message = event["message"]
    if message.get("type") != "assistant":
        return False
    content = message.get("message", {}).get("content")
    return isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_use" for block in content
    )


def alive(pids):
    """The pids among C{pids} that name a live (non-zombie) process."""
    living = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.append(pid)
        except psutil.NoSuchProcess:
            pass
    return living
