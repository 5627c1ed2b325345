#!/usr/bin/env python3
"""
A stand-in for the Claude Code CLI that prints a workload, for
bench/perf.py (claudews runs it as its C{--claude-bin}; bench/floor.py
spawns it the same way).

It is started like the real CLI in streaming mode (the flags are
accepted and ignored; C{--version} answers) and reads one JSON message per
stdin line, as tests/fake_claude.py does. For each C{user} message it
prints a C{system}/C{init} line, the workload's lines, and a C{result}
line, in the real CLI's stream-json shapes. The workload is the prompt's
text, never a flag::

    lines=1000 rate=50 size=400

C{lines} C{stream_event} text deltas of C{size} bytes each (the newline
not counted), C{rate} of them per second, or, with C{rate=0}, as fast as
the pipe takes them, written in big chunks so that the stand-in is never
what bounds a bench. Every line it prints ends with C{"t":NS}, the
wall-clock time (C{time.time_ns()}) at which it was written, for the
readers to measure latency from.

It keeps working for any number of prompts, answers an C{interrupt}
control request (the workload stops and the result says so), and exits
when its stdin ends. Stdlib only.
"""

import json
import os
import re
import sys
import threading
import time
import uuid

VERSION = "2.1.0"

#: Lines per write() when the workload has no rate.
CHUNK_LINES = 256

_WORD = re.compile(r"(lines|rate|size)=(\d+(?:\.\d+)?)")


def workload(text):
    """
    C{(lines, rate, size)} from a prompt's text; what it does not say is
    zero lines, no rate, 400 bytes.
    """
    found = {"lines": 0, "rate": 0.0, "size": 400}
    for key, value in _WORD.findall(text if isinstance(text, str) else ""):
        found[key] = float(value) if key == "rate" else int(float(value))
    return found["lines"], found["rate"], found["size"]


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


_out = threading.Lock()


def write_all(data):
    # Under a lock: a control response from the input thread must not land
    # inside a chunk that a pipe took in parts.
    with _out:
        view = memoryview(data)
        while view:
            try:
                written = os.write(1, view)
            except BrokenPipeError:
                os._exit(1)
            view = view[written:]


class StandIn:
    def __init__(self, session_id):
        self.session_id = session_id
        self.prompts = 0
        self.lines = 0
        self.interrupted = threading.Event()
        self.inbox = []
        self.ready = threading.Condition()
        self.sid_json = json.dumps(session_id)

    # -- input

    def read_stdin(self):
        for raw in sys.stdin.buffer:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("type") == "control_request":
                request = message.get("request") or {}
                if request.get("subtype") == "interrupt":
                    self.interrupted.set()
                write_all(compact({"type": "control_response", "response": {
                    "subtype": "success", "request_id": message.get("request_id"),
                    "response": {}}}) + b"\n")
            elif message.get("type") == "user":
                with self.ready:
                    self.inbox.append(message)
                    self.ready.notify()
        with self.ready:
            self.inbox.append(None)
            self.ready.notify()

    def run(self):
        threading.Thread(target=self.read_stdin, daemon=True).start()
        while True:
            with self.ready:
                while not self.inbox:
                    self.ready.wait()
                message = self.inbox.pop(0)
            if message is None:
                os._exit(0)
            self.prompt(message)

    # -- output

    def line_parts(self, size):
        """
        The bytes before and after a line's varying parts, with the text
        padded so that the whole line is C{size} bytes for a 19-digit C{t}.
        """
        head = ('{"type":"stream_event","event":{"type":"content_block_delta","index":0,'
                '"delta":{"type":"text_delta","text":"')
        middle = '"}},"session_id":%s,"parent_tool_use_id":null,"uuid":"' % (self.sid_json,)
        tail = '","t":'
        fixed = len(head) + len(middle) + len(tail) + 36 + 19 + 1
        text = "x" * max(1, size - fixed)
        return (head + text + middle).encode("ascii"), tail.encode("ascii")

    def uuid(self):
        self.lines += 1
        # Unique and shaped like a UUID, at a fraction of uuid4's cost.
        return b"00000000-0000-4000-8000-%012x" % (self.lines,)

    def prompt(self, message):
        content = (message.get("message") or {}).get("content")
        if isinstance(content, list):
            content = " ".join(block.get("text", "") for block in content
                               if isinstance(block, dict))
        lines, rate, size = workload(content)
        self.prompts += 1
        self.interrupted.clear()
        started = time.monotonic()
        init = compact({
            "type": "system", "subtype": "init", "cwd": os.getcwd(),
            "session_id": self.session_id, "tools": ["Bash", "Read", "Write"],
            "mcp_servers": [], "model": "claude-standin", "permissionMode": "default",
            "apiKeySource": "none", "claude_code_version": VERSION,
            "uuid": str(uuid.uuid4()),
        })
        write_all(init[:-1] + b',"t":%d}\n' % (time.time_ns(),))
        head, tail = self.line_parts(size)
        if rate > 0:
            self.paced(lines, rate, head, tail)
        else:
            self.flood(lines, head, tail)
        ms = int((time.monotonic() - started) * 1000)
        stopped = self.interrupted.is_set()
        result = compact({
            "type": "result", "subtype": "error_during_execution" if stopped else "success",
            "is_error": stopped, "duration_ms": ms, "duration_api_ms": ms, "num_turns": 1,
            "result": "interrupted" if stopped else "done", "session_id": self.session_id,
            "total_cost_usd": round(self.prompts * 0.0001, 6),
            "usage": {"input_tokens": 1, "output_tokens": lines},
            "uuid": str(uuid.uuid4()),
        })
        write_all(result[:-1] + b',"t":%d}\n' % (time.time_ns(),))

    def paced(self, lines, rate, head, tail):
        start = time.monotonic()
        for i in range(lines):
            if self.interrupted.is_set():
                return
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            write_all(b"%s%s%s%d}\n" % (head, self.uuid(), tail, time.time_ns()))

    def flood(self, lines, head, tail):
        left = lines
        while left > 0 and not self.interrupted.is_set():
            n = min(CHUNK_LINES, left)
            left -= n
            # One time for the chunk: it is written at once.
            stamp = b"%d}\n" % (time.time_ns(),)
            write_all(b"".join(
                [b"%s%s%s%s" % (head, self.uuid(), tail, stamp) for _ in range(n)]
            ))


def main():
    argv = sys.argv[1:]
    if "--version" in argv or "-v" in argv:
        sys.stdout.write(VERSION + " (Claude Code)\n")
        return
    session_id = str(uuid.uuid4())
    for flag in ("--resume", "-r"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            session_id = argv[argv.index(flag) + 1]
    StandIn(session_id).run()


if __name__ == "__main__":
    main()
