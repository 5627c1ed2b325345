#!/usr/bin/env python3
"""
Replaying a million events: the server's memory and the speed of history
pages on a big history. Run by hand, from the checkout:

    python bench/replay_million.py [--events 1000000] [--keep DIR]

It writes a history of N events for one project straight into a data
directory, in the server's own format (through L{claudews.history.History},
so rotation and file names are the real ones), starts a real server on it
(twistd with the fake CLI, as the tests do), and then, through a real
WebSocket client:

1. asks for C{history} pages at several positions (cold: the first look at
   that part of the files; warm: the same again), timing each round trip;
2. replays the whole history with C{subscribe since=0}, sampling the
   server's RSS every 50 ms, and reports its growth over the RSS before.

Targets (docs/benchmarks.rst): RSS growth under 50 MB during the replay,
history pages under 50 ms. Nothing here is a test: it prints numbers.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from claudews import metadata, paths  # noqa: E402
from claudews import events  # noqa: E402
from claudews.events import encode_event, timestamp  # noqa: E402
from claudews.history import History  # noqa: E402
from tests.harness import Server  # noqa: E402

T0 = 1795688826.0


class _NoReactor:
    """History wants a reactor only for batched fsync, which "none" skips."""

    def callLater(self, *args, **kwargs):
        raise AssertionError("not used with fsync=none")


def _message(i: int) -> dict:
    # Shaped like what the CLI prints most: assistant text, a few hundred bytes.
    return {
        "type": "assistant",
        "message": {
            "id": "msg_%08d" % (i,),
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "line %d of a long answer " % (i,) * 8}],
            "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 5},
        },
        "parent_tool_use_id": None,
        "session_id": "S-bench",
    }


def write_history(server: Server, path: str, n: int) -> tuple[str, int]:
    """
    A project at C{path} in the server's data directory, with C{n} events.
    """
    project_id = paths.project_id(path)
    directory = os.path.join(server.data, "projects", project_id)
    os.makedirs(directory, mode=0o700)
    epoch = int(T0 * 1000)
    history = History(
        os.path.join(directory, "logs"),
        rotate_bytes=64 * 2**20,
        max_bytes=2**40,
        fsync="none",
        reactor=_NoReactor(),
        now=lambda: T0,
    )
    size = 0
    for seq in range(1, n + 1):
        event = events.claude("p-bench", _message(seq))
        line = encode_event(path, seq, timestamp(T0 + seq / 1000), event)
        history.append(seq, line)
        size += len(line) + 1
    history.close()
    metadata.write(
        directory,
        {
            "path": path,
            "id": project_id,
            "session_id": "S-bench",
            "created_at": timestamp(T0),
            "epoch": epoch,
            "last_seq": n,
            "open_prompts": [],
            "markers": [],
            "clean": True,
        },
    )
    return directory, size


def time_pages(client, path: str, n: int) -> list[tuple[str, int, float, float]]:
    """
    (position, limit, cold ms, warm ms) for history pages here and there.
    """
    rows = []
    for before in (1, 2, n // 4, n // 2, n - 1, None):
        for limit in (100, 1000):
            times = []
            for _ in range(2):
                start = time.perf_counter()
                result = client.ok("history", path=path, before=before, limit=limit) if (
                    before is not None
                ) else client.ok("history", path=path, limit=limit)
                times.append((time.perf_counter() - start) * 1000)
            want = min(limit, (before or n + 1) - 1)
            assert len(result["events"]) == want, (before, limit, len(result["events"]))
            rows.append((str(before), limit, times[0], times[1]))
    return rows


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(self.process.memory_info().rss)
            self.done.wait(self.interval)


def connect(server: Server):
    # websocket-client checks the UTF-8 of every text frame in pure Python
    # unless told not to: that check, not the server, would be timed.
    return server.connect(skip_utf8_validation=True)


def replay(server: Server, path: str, n: int) -> dict:
    client = connect(server)
    # The client only counts: keeping a million events would measure the
    # client, not the server.
    before = psutil.Process(server.process.pid).memory_info().rss
    sampler = Sampler(server.process.pid)
    sampler.start()
    start = time.perf_counter()
    client.send({"type": "subscribe", "id": 1, "path": path, "since": 0})
    received, last, size = 0, 0, 0
    while last < n:
        client.ws.settimeout(60)
        data = client.ws.recv()
        size += len(data)
        if data.startswith('{"type":"event"'):
            seq = json.loads(data)["seq"]
            assert seq == last + 1, (seq, last)
            last = seq
            received += 1
    elapsed = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    client.close()
    peak = max(sampler.samples)
    return {
        "events": received,
        "bytes": size,
        "seconds": elapsed,
        "rss_before": before,
        "rss_peak": peak,
        "rss_growth": peak - before,
        "samples": len(sampler.samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", help="work in this directory and keep it")
    args = parser.parse_args()
    base = args.keep or tempfile.mkdtemp(prefix="claudews-bench-")
    server = Server(base, "--fsync", "none")
    try:
        path = server.project_dir("big")
        start = time.perf_counter()
        directory, size = write_history(server, path, args.events)
        files = len(os.listdir(os.path.join(directory, "logs"))) - 1
        print("wrote %d events, %.0f MB in %d files, in %.1f s"
              % (args.events, size / 2**20, files, time.perf_counter() - start))
        start = time.perf_counter()
        server.start()
        print("server up in %.2f s, RSS %.1f MB" % (
            time.perf_counter() - start,
            psutil.Process(server.process.pid).memory_info().rss / 2**20))
        client = connect(server)
        print("\nhistory pages (round trip through the WebSocket, ms)")
        print("%-10s %6s %8s %8s" % ("before", "limit", "cold", "warm"))
        for before, limit, cold, warm in time_pages(client, path, args.events):
            print("%-10s %6d %8.1f %8.1f" % (before, limit, cold, warm))
        client.close()
        print("\nreplay: subscribe since=0")
        result = replay(server, path, args.events)
        print("%d events (%.0f MB) in %.1f s: %.0f events/s" % (
            result["events"], result["bytes"] / 2**20, result["seconds"],
            result["events"] / result["seconds"]))
        print("server RSS before %.1f MB, peak %.1f MB, growth %.1f MB (%d samples)" % (
            result["rss_before"] / 2**20, result["rss_peak"] / 2**20,
            result["rss_growth"] / 2**20, result["samples"]))
        rows = time_pages(connect(server), path, args.events)
        print("pages after the replay: median %.1f ms, max %.1f ms" % (
            statistics.median(r[3] for r in rows), max(r[3] for r in rows)))
    finally:
        server.kill()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
