#!/usr/bin/env python3
"""
Issue 10's bench: claudews beside the floor, in one run, one table.

Run from the checkout (docs/benchmarks.rst, "The performance bench"):

    python bench/perf.py [--quick] [--only ROWS] [--fsync POLICIES]

It starts claudews as the tests do (C{twistd -n claudews}, tests/harness.py's
L{Server}), with bench/standin_cli.py as its CLI, and bench/floor.py (a
bare Autobahn server that broadcasts the same stand-in's lines with
prepared messages), each afresh for every workload, and drives them with
the cheap raw-socket readers of bench/loadclient.py. The rows:

1. C{fanout}: the server's CPU (user + sys, psutil) per delivery while
   one project streams to 1, 10 and 100 subscribers, and floor / claudews;
2. C{latency}: from the moment the stand-in wrote a line (its C{"t"}) to
   the moment a reader received it, 50 projects x 50 lines/s x 5
   subscribers, over the whole run (the 50 starts included) and in the
   steady second half;
3. C{ingest}: lines/s to disk with no subscriber, per fsync policy
   (C{claudews.history.FSYNC_POLICIES}, read when the bench runs);
4. C{rss}: RSS per idle authenticated connection at 1,000 and 5,000;
5. C{replay}: C{subscribe since=0} over a 1,000,000-event history
   (written by bench/replay_million.py's writer): events/s, RSS growth;
6. C{prompt}: C{prompt} to C{prompt.started}, and the CLI's C{result}
   (its C{"t"}) to C{prompt.finished}, over sequential prompts.

Each row also gives the load client's own CPU (this process and every
reader process, as a share of one core) and says so when a client process
was at 90 % of a core or more: then the client, not the server, may be
what the row measured. C{--quick} runs tiny workloads (the smoke test in
tests/test_bench.py); C{--only 1,3} or C{--only fanout,ingest} runs some
rows; C{--fsync every,none} limits row 3's policies.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from loadclient import RawClient, Readers, open_idle  # noqa: E402
from tests.harness import Server  # noqa: E402

#: The stand-in CLI both servers run; L{main} replaces it with a copy
#: whose shebang names this interpreter.
STANDIN = os.path.join(HERE, "standin_cli.py")
FLOOR = os.path.join(HERE, "floor.py")
ROWS = ("fanout", "latency", "ingest", "rss", "replay", "prompt")
#: A client process at this share of a core or more may be the bottleneck.
CLIENT_BOUND = 0.90
#: Seconds a workload's readers wait at most (a broken server must not
#: hang the bench); --quick makes it shorter.
DEADLINE = 600.0
KiB = 1024
MiB = 1024 * 1024

#: claudews' settings for every workload: enough CLI processes for 50
#: projects, and connections enough for the RSS row, all from 127.0.0.1.
SETTINGS = {
    "max-running": 64,
    "max-connections": 6000,
    "max-connections-per-address": 6000,
}

FINISHED = rb'"event":"prompt\.finished"'
RESULT = rb'^\{"type":"result"'


def progress(text):
    sys.stderr.write("perf: %s\n" % (text,))
    sys.stderr.flush()


# -- the machine


def machine():
    import autobahn
    import twisted

    import claudews

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    git = ["git", "-C", ROOT]
    revision = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "?"
    dirty = subprocess.run(git + ["status", "--porcelain", "--", "claudews"],
                           capture_output=True, text=True).stdout.strip()
    return [
        "machine:  %s, %d cores, %s, Linux %s" % (
            model, os.cpu_count() or 0, "%.1f GiB" % (psutil.virtual_memory().total / 2**30),
            platform.release()),
        "software: Python %s, Twisted %s, Autobahn %s" % (
            platform.python_version(), twisted.__version__, autobahn.__version__),
        "claudews: git %s%s (%s)" % (
            revision, " with uncommitted changes in claudews/" if dirty else "",
            os.path.dirname(claudews.__file__)),
    ]


# -- servers


class LogDrain(threading.Thread):
    """
    Reads the server's log as it comes: a full pipe would stall the
    server on its next log line.
    """

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set() and self.server.process.poll() is None:
            try:
                self.server.wait_log(r"(?!)", timeout=0.2)
            except AssertionError:
                pass

    def stop(self):
        self.done.set()
        self.join()


@contextmanager
def claudews(before_start=None, **settings):
    """
    A claudews server (the stand-in as its CLI) for one workload; its data
    is removed afterwards.
    """
    tmp = tempfile.mkdtemp(prefix="claudews-perf-")
    config = os.path.join(tmp, "bench.toml")
    with open(config, "w") as f:
        for key, value in dict(SETTINGS, **settings).items():
            f.write("%s = %s\n" % (key, json.dumps(value)))
    server = Server(tmp, "--config", config, claude_bin=STANDIN)
    drain = None
    try:
        if before_start is not None:
            before_start(server)
        server.start()
        drain = LogDrain(server)
        drain.start()
        yield server
    finally:
        if drain is not None:
            drain.stop()
        try:
            server.stop()
        finally:
            server.kill()
            shutil.rmtree(tmp, ignore_errors=True)


class FloorServer:
    """bench/floor.py in a child process."""

    def __init__(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, FLOOR, "--standin", STANDIN],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        line = self.process.stdout.readline().decode()
        match = re.match(r"listening on (\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError("the floor did not start: %r" % (line,))
        self.port = int(match.group(1))
        self.pid = self.process.pid

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()


@contextmanager
def floor():
    server = FloorServer()
    try:
        yield server
    finally:
        server.stop()


# -- figures


def cpu_of(process):
    times = process.cpu_times()
    return times.user + times.system


class Window:
    """
    CPU seconds of the server and of this process between C{start} and
    C{stop}, and the wall time.
    """

    def __init__(self, server_pid):
        self.server = psutil.Process(server_pid)
        self.me = psutil.Process()

    def start(self):
        self.server0, self.me0, self.wall0 = cpu_of(self.server), cpu_of(self.me), time.monotonic()

    def stop(self):
        self.server_cpu = cpu_of(self.server) - self.server0
        self.me_cpu = cpu_of(self.me) - self.me0
        self.wall = time.monotonic() - self.wall0


def client_load(window, readers=None):
    """
    The busiest client process's share of a core over the window: this
    process, and each reader process over its own reading time.
    """
    shares = [window.me_cpu / window.wall if window.wall else 0.0]
    if readers:
        shares += [cpu / wall for cpu, wall in zip(readers["cpu"], readers["wall"]) if wall]
    return max(shares)


def percentile(values, q):
    """Nearest rank; C{values} sorted."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))]


def ms(ns):
    return ns / 1e6


class Row:
    def __init__(self, workload, claudews, floor="-", ratio=None, target="-", met=None,
                 client=None, server=None, note=""):
        self.workload = workload
        self.claudews = claudews
        self.floor = floor
        self.ratio = ratio
        self.target = target
        self.met = met
        self.client = client
        self.server = server
        self.note = note

    @property
    def client_bound(self):
        return self.client is not None and self.client >= CLIENT_BOUND

    def cells(self):
        client = "-" if self.client is None else "%.0f%%" % (self.client * 100)
        if self.client_bound:
            client += " CLIENT-BOUND"
        return [
            self.workload,
            self.claudews,
            self.floor,
            "-" if self.ratio is None else "%.2f" % (self.ratio,),
            self.target,
            {True: "met", False: "MISSED", None: "-"}[self.met],
            client,
            "-" if self.server is None else "%.0f%%" % (self.server * 100),
        ]


HEADERS = ["workload", "claudews", "floor", "floor \u00f7 claudews", "target", "met?",
           "client CPU", "server CPU"]


def table(rows):
    """
    The rows as a text table, then each row's note (what was run, what
    went wrong, and the client-bound warning in words).
    """
    cells = [HEADERS] + [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(HEADERS))]
    lines = []
    for i, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for row in rows:
        note = row.note
        if row.client_bound:
            note = ("a client process used %.0f%% of a core: the client, not the server, "
                    "may be the bottleneck; %s" % (row.client * 100, note))
        lines.append("- %s: %s" % (row.workload, note))
    return "\n".join(lines)


# -- helpers on a claudews connection


def control(server):
    return RawClient(server.port, token=server.token)


def prompt_and_wait(client, path, text, timeout=300.0):
    """
    Send a prompt on a subscribed connection and read until its
    C{prompt.finished}.
    """
    prompt_id = client.request("prompt", path=path, prompt=text)["prompt_id"]
    for message in client.kept:
        if message.get("event") == "prompt.finished" and message.get("prompt_id") == prompt_id:
            client.kept.clear()
            return
    client.kept.clear()
    deadline = time.monotonic() + timeout
    while True:
        _, payload = client.receive(max(0.1, deadline - time.monotonic()))
        message = json.loads(payload)
        if message.get("event") == "prompt.finished" and message.get("prompt_id") == prompt_id:
            return


def subscriber(server, path, keep=False, since=None):
    request = {"type": "subscribe", "id": "sub", "path": path}
    if since is not None:
        request["since"] = since
    return {"port": server.port, "token": server.token, "subscribe": request,
            "end": FINISHED, "keep": keep}


def floor_reader(server, channel, keep=False):
    return {"port": server.port, "path": channel, "end": RESULT, "keep": keep}


def check(result, expected, what):
    """A note when readers missed messages or were closed."""
    notes = []
    if result["stamped"] != expected:
        notes.append("%s: %d of %d lines received" % (what, result["stamped"], expected))
    if result["closed"]:
        notes.append("%s: %d closed (%s)" % (what, len(result["closed"]),
                                             sorted(set(result["closed"]))))
    if result["timed_out"]:
        notes.append("%s: readers timed out" % (what,))
    return notes


# -- 1. fan-out CPU per delivery


def fanout_claudews(subscribers, lines, repeats, processes):
    runs = []
    with claudews() as server:
        path = server.project_dir("fanout")
        client = control(server)
        client.request("project.create", path=path)
        # The CLI's start is not part of the window: it is the prompt row's.
        client.request("subscribe", path=path)
        prompt_and_wait(client, path, "lines=0")
        client.request("unsubscribe", path=path)
        for _ in range(repeats):
            readers = Readers([subscriber(server, path)] * subscribers, processes, DEADLINE)
            readers.ready()
            window = Window(server.process.pid)
            window.start()
            client.request("prompt", path=path, prompt="lines=%d rate=0 size=400" % (lines,))
            result = readers.results()
            window.stop()
            runs.append((window, result))
        client.close()
    return runs


def fanout_floor(subscribers, lines, repeats, processes):
    runs = []
    with floor() as server:
        for _ in range(repeats):
            readers = Readers([floor_reader(server, "/fan")] * subscribers, processes, DEADLINE)
            readers.ready()
            client = RawClient(server.port, path="/control")
            window = Window(server.pid)
            window.start()
            client.send({"channel": "/fan", "prompt": "lines=%d rate=0 size=400" % (lines,)})
            result = readers.results()
            window.stop()
            client.close()
            runs.append((window, result))
    return runs


def summarise_fanout(runs, subscribers, lines, what):
    expected = (lines + 2) * subscribers
    per = sorted(((w.server_cpu / r["stamped"] if r["stamped"] else float("nan"), w, r)
                  for w, r in runs), key=lambda run: run[0])
    value, window, result = per[len(per) // 2]
    notes = check(result, expected, what)
    client = max(client_load(w, r) for w, r in runs)
    return value, window, client, notes


def row_fanout(args):
    rows = []
    for subscribers, lines in zip(args.fanout_subscribers, args.fanout_lines):
        processes = 1 if subscribers < 10 else 2
        progress("fan-out, %d subscriber(s), %d lines x %d" % (subscribers, lines, args.repeats))
        ours = fanout_claudews(subscribers, lines, args.repeats, processes)
        theirs = fanout_floor(subscribers, lines, args.repeats, processes)
        value, window, client, notes = summarise_fanout(ours, subscribers, lines, "claudews")
        fvalue, fwindow, fclient, fnotes = summarise_fanout(theirs, subscribers, lines, "floor")
        # The CPU clock ticks in 10 ms: a workload that fits in one tick
        # reads 0 (the --quick ones, now that a delivery costs ~2 us).
        ratio = fvalue / value if value else None
        target = {1: 0.5, 10: 0.7, 100: 0.9}.get(subscribers)
        if ratio is None:
            notes = notes + ["too little CPU to measure: less than one 10 ms tick"]
        rows.append(Row(
            "fan-out CPU/delivery, %d sub%s" % (subscribers, "" if subscribers == 1 else "s"),
            "%.1f \u00b5s" % (value * 1e6,),
            "%.1f \u00b5s" % (fvalue * 1e6,),
            ratio,
            "ratio >= %.1f" % (target,) if target else "-",
            ratio >= target if target and ratio is not None else None,
            client=max(client, fclient),
            server=window.server_cpu / window.wall,
            note="; ".join(notes + fnotes + [
                "%d lines x %d subs, median of %d; floor server %.0f%%" % (
                    lines, subscribers, len(ours), 100 * fwindow.server_cpu / fwindow.wall)]),
        ))
    return rows


# -- 2. latency


def latency_figures(result):
    latencies = sorted(result["latencies"])
    stamps = result["stamps"]
    if not stamps:
        return None
    middle = min(stamps) + (max(stamps) - min(stamps)) // 2
    steady = sorted(lat for lat, stamp in zip(result["latencies"], stamps) if stamp >= middle)
    return {
        "whole": (percentile(latencies, 50), percentile(latencies, 99), latencies[-1]),
        "steady": (percentile(steady, 50), percentile(steady, 99), steady[-1] if steady else 0),
    }


def latency_claudews(projects, rate, subscribers, lines, processes):
    with claudews() as server:
        client = control(server)
        paths = []
        for i in range(projects):
            paths.append(server.project_dir("p%02d" % (i,)))
            client.request("project.create", path=paths[-1])
        specs = [subscriber(server, path, keep=True) for path in paths for _ in range(subscribers)]
        readers = Readers(specs, processes, DEADLINE)
        readers.ready()
        window = Window(server.process.pid)
        window.start()
        # All at once, as a console that reconnects would: the starts are
        # part of what this row measures.
        for i, path in enumerate(paths):
            client.send({"type": "prompt", "id": "p%d" % (i,), "path": path,
                         "prompt": "lines=%d rate=%g size=400" % (lines, rate)})
        result = readers.results()
        window.stop()
        client.close()
    return window, result


def latency_floor(projects, rate, subscribers, lines, processes):
    with floor() as server:
        channels = ["/p%02d" % (i,) for i in range(projects)]
        specs = [floor_reader(server, channel, keep=True)
                 for channel in channels for _ in range(subscribers)]
        readers = Readers(specs, processes, DEADLINE)
        readers.ready()
        client = RawClient(server.port, path="/control")
        window = Window(server.pid)
        window.start()
        for channel in channels:
            client.send({"channel": channel,
                         "prompt": "lines=%d rate=%g size=400" % (lines, rate)})
        result = readers.results()
        window.stop()
        client.close()
    return window, result


def row_latency(args):
    projects, rate, subscribers, seconds = args.latency
    lines = int(rate * seconds)
    progress("latency, %d projects x %g lines/s x %d subscribers, %d lines each"
             % (projects, rate, subscribers, lines))
    expected = (lines + 2) * projects * subscribers
    ours = latency_claudews(projects, rate, subscribers, lines, 2)
    theirs = latency_floor(projects, rate, subscribers, lines, 2)
    figures = latency_figures(ours[1])
    floor_figures = latency_figures(theirs[1])
    notes = check(ours[1], expected, "claudews") + check(theirs[1], expected, "floor")
    client = max(client_load(*ours), client_load(*theirs))
    label = "%dx%gx%d" % (projects, rate, subscribers)

    def show(f):
        return "p50 %.1f / p99 %.1f / max %.1f ms" % tuple(ms(x) for x in f)

    rows = []
    for part, title, p99_target in (("whole", "whole run", 10), ("steady", "steady 2nd half", 5)):
        ours_f, theirs_f = figures[part], floor_figures[part]
        if part == "whole":
            target = "p99 < 10 ms, max < 50 ms"
            met = ms(ours_f[1]) < 10 and ms(ours_f[2]) < 50
        else:
            target = "p99 < 5 ms"
            met = ms(ours_f[1]) < 5
        rows.append(Row(
            "latency %s, %s" % (label, title),
            show(ours_f),
            show(theirs_f),
            theirs_f[1] / ours_f[1] if ours_f[1] else None,
            target,
            met,
            client=client,
            server=ours[0].server_cpu / ours[0].wall,
            note="; ".join(notes + ["ratio of p99s; %d deliveries" % (ours[1]["stamped"],)]),
        ))
    return rows


# -- 3. ingest


def wait_idle(client, path, timeout=600.0):
    """Read the watch feed until the project is idle with nothing queued."""
    def idle(message):
        project = message.get("project") or {}
        return (message.get("type") == "project" and project.get("path") == path
                and project.get("status") == "idle" and not project.get("queue"))

    for i, message in enumerate(client.kept):
        if idle(message):
            del client.kept[: i + 1]
            return
    client.kept.clear()
    deadline = time.monotonic() + timeout
    while not idle(json.loads(client.receive(max(0.1, deadline - time.monotonic()))[1])):
        pass


def timed_prompt(client, path, text):
    start = time.perf_counter()
    client.request("prompt", path=path, prompt=text)
    wait_idle(client, path)
    return time.perf_counter() - start


def ingest(policy, seconds):
    with claudews(fsync=policy) as server:
        client = control(server)
        path = server.project_dir("ingest")
        client.request("project.create", path=path)
        client.request("watch")
        window = Window(server.process.pid)
        timed_prompt(client, path, "lines=0")
        fixed = min(timed_prompt(client, path, "lines=0") for _ in range(3))
        # Grow the workload until it takes a while, then size the real one.
        lines = 500
        while True:
            took = timed_prompt(client, path, "lines=%d rate=0 size=400" % (lines,)) - fixed
            if took >= seconds / 4 or lines >= 1_000_000:
                break
            lines *= 4
        lines = max(500, min(2_000_000, int(lines / max(took, 1e-3) * seconds)))
        before = client.request("project.get", path=path)["project"]["last_seq"]
        window.start()
        took = timed_prompt(client, path, "lines=%d rate=0 size=400" % (lines,)) - fixed
        window.stop()
        after = client.request("project.get", path=path)["project"]["last_seq"]
        client.close()
    notes = []
    # queued, started, init, the lines, result, finished
    if after - before != lines + 5:
        notes.append("last_seq moved by %d when the watch said idle, for %d lines and 5 "
                     "other events" % (after - before, lines))
    return lines / took, lines, fixed, window, notes


def row_ingest(args):
    from claudews.config import Settings
    from claudews.history import FSYNC_POLICIES

    import attrs

    default = attrs.fields(Settings).fsync.default
    rows = []
    for policy in FSYNC_POLICIES:
        if args.fsync and policy not in args.fsync:
            continue
        progress("ingest, fsync %s" % (policy,))
        rate, lines, fixed, window, notes = ingest(policy, args.ingest_seconds)
        is_default = policy == default
        rows.append(Row(
            "ingest, fsync %s%s" % (policy, " (default)" if is_default else ""),
            "{:,.0f} lines/s".format(rate),
            target=">= 80,000 lines/s" if is_default else "-",
            met=rate >= 80_000 if is_default else None,
            client=window.me_cpu / window.wall,
            server=window.server_cpu / window.wall,
            note="; ".join(notes + ["%d lines, no subscriber; %.0f ms of fixed prompt cost "
                                    "taken off" % (lines, fixed * 1000)]),
        ))
    return rows


# -- 4. RSS per idle connection


def rss_per_connection(port, pid, counts, token=None, path="/ws"):
    process = psutil.Process(pid)
    # A few first, kept open and counted in the base: the first
    # connections import and allocate what every later one shares.
    sockets = open_idle(port, 10, path=path, token=token)
    base = process.memory_info().rss
    figures = []
    try:
        for count in counts:
            sockets += open_idle(port, count + 10 - len(sockets), path=path, token=token,
                                 batch=40)
            figures.append((process.memory_info().rss - base) / count)
    finally:
        for sock in sockets:
            sock.close()
    return figures, base


def row_rss(args):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.rss_counts) + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    progress("RSS per idle connection at %s" % (", ".join(map(str, args.rss_counts)),))
    me = psutil.Process()
    cpu0, wall0 = cpu_of(me), time.monotonic()
    with claudews() as server:
        ours, base = rss_per_connection(server.port, server.process.pid, args.rss_counts,
                                        token=server.token)
    with floor() as server:
        theirs, floor_base = rss_per_connection(server.port, server.pid, args.rss_counts)
    client = (cpu_of(me) - cpu0) / (time.monotonic() - wall0)
    rows = []
    for count, mine, its in zip(args.rss_counts, ours, theirs):
        rows.append(Row(
            "RSS/idle connection, {:,}".format(count),
            "%.1f KiB" % (mine / KiB,),
            "%.1f KiB" % (its / KiB,),
            its / mine if mine > 0 else None,
            "<= 40 KiB",
            mine <= 40 * KiB,
            client=client,
            note="authenticated, not subscribed; RSS before: claudews %.0f MiB, floor %.0f MiB"
            % (base / MiB, floor_base / MiB),
        ))
    return rows


# -- 5. replay


def row_replay(args):
    import replay_million

    events = args.replay_events
    progress("replay: writing a history of {:,} events".format(events))
    written = {}

    def write(server):
        start = time.perf_counter()
        path = server.project_dir("big")
        replay_million.write_history(server, path, events)
        written.update(path=path, seconds=time.perf_counter() - start)

    with claudews(before_start=write) as server:
        progress("replay: subscribe since=0")
        sampler = replay_million.Sampler(server.process.pid)
        before = psutil.Process(server.process.pid).memory_info().rss
        sampler.start()
        window = Window(server.process.pid)
        window.start()
        spec = subscriber(server, written["path"], since=0)
        spec["end"] = rb'"seq":%d,' % (events,)
        readers = Readers([spec], 1, DEADLINE)
        readers.ready()
        result = readers.results()
        window.stop()
        sampler.done.set()
        sampler.join()
    elapsed = (result["last_ns"] - result["subscribed_ns"]) / 1e9
    rate = result["messages"] / elapsed
    growth = max(sampler.samples + [before]) - before
    notes = []
    if result["messages"] != events:
        notes.append("%d of %d events received" % (result["messages"], events))
    notes.append("{:,} events in {:.1f} s (history written in {:.0f} s)".format(
        result["messages"], elapsed, written["seconds"]))
    client = client_load(window, result)
    server_share = window.server_cpu / window.wall
    return [
        Row("replay since=0, {:,} events".format(events), "{:,.0f} events/s".format(rate),
            target=">= 150,000 events/s", met=rate >= 150_000, client=client,
            server=server_share, note="; ".join(notes)),
        Row("replay RSS growth", "%.1f MB" % (growth / 1e6,), target="< 50 MB",
            met=growth < 50e6, client=client, server=server_share,
            note="RSS before %.0f MiB, sampled every 50 ms" % (before / MiB,)),
    ]


# -- 6. prompt overhead


def row_prompt(args):
    count = args.prompts
    progress("prompt overhead, %d sequential prompts" % (count,))
    started, finished = [], []
    with claudews() as server:
        client = control(server)
        path = server.project_dir("overhead")
        client.request("project.create", path=path)
        client.request("subscribe", path=path)
        prompt_and_wait(client, path, "lines=0")
        window = Window(server.process.pid)
        window.start()
        for i in range(count):
            sent = time.time_ns()
            client.send({"type": "prompt", "id": "o%d" % (i,), "path": path,
                         "prompt": "lines=0"})
            result_stamp = started_at = None
            while True:
                received, payload = client.receive(60)
                message = json.loads(payload)
                kind = message.get("event")
                if kind == "prompt.started" and started_at is None:
                    started_at = received
                elif kind == "claude" and message["message"].get("type") == "result":
                    result_stamp = message["message"]["t"]
                elif kind == "prompt.finished":
                    started.append(started_at - sent)
                    finished.append(received - result_stamp)
                    break
        window.stop()
        client.close()
    started.sort()
    finished.sort()
    rows = []
    for title, values in (("prompt -> prompt.started", started),
                          ("CLI result -> prompt.finished", finished)):
        p99 = percentile(values, 99)
        rows.append(Row(
            title, "median %.2f / p99 %.2f ms" % (ms(statistics.median(values)), ms(p99)),
            target="p99 < 2 ms", met=ms(p99) < 2, client=window.me_cpu / window.wall,
            server=window.server_cpu / window.wall,
            note="%d sequential prompts on a live CLI; the client is this process" % (count,)))
    return rows


# -- the run


RUNNERS = {
    "fanout": row_fanout,
    "latency": row_latency,
    "ingest": row_ingest,
    "rss": row_rss,
    "replay": row_replay,
    "prompt": row_prompt,
}


def parse_only(text):
    chosen = []
    for word in text.split(","):
        word = word.strip()
        if word.isdigit() and 1 <= int(word) <= len(ROWS):
            word = ROWS[int(word) - 1]
        if word not in ROWS:
            raise argparse.ArgumentTypeError(
                "%r: rows are 1-%d or %s" % (word, len(ROWS), ", ".join(ROWS)))
        chosen.append(word)
    return chosen


def options(argv):
    global DEADLINE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny workloads (seconds, not minutes): the smoke test")
    parser.add_argument("--only", type=parse_only, default=list(ROWS),
                        help="rows to run, by number or name: " + ", ".join(ROWS))
    parser.add_argument("--fsync", type=lambda s: s.split(","), default=None,
                        help="fsync policies for the ingest row (default: all)")
    args = parser.parse_args(argv)
    if args.fsync:
        from claudews.history import FSYNC_POLICIES

        unknown = set(args.fsync) - set(FSYNC_POLICIES)
        if unknown:
            parser.error("--fsync: %s not in %s" % (", ".join(sorted(unknown)),
                                                   ", ".join(FSYNC_POLICIES)))
    if args.quick:
        DEADLINE = 120.0
        args.fanout_subscribers, args.fanout_lines, args.repeats = (1, 10, 100), (2000, 1000, 100), 1
        args.latency = (5, 50, 5, 1)
        args.ingest_seconds = 0.2
        args.rss_counts = (100, 200)
        args.replay_events = 20_000
        args.prompts = 5
    else:
        args.fanout_subscribers = (1, 10, 100)
        args.fanout_lines, args.repeats = (50_000, 20_000, 4_000), 3
        args.latency = (50, 50, 5, 20)
        args.ingest_seconds = 3.0
        args.rss_counts = (1000, 5000)
        args.replay_events = 1_000_000
        args.prompts = 50
    return args


def standin_launcher(directory):
    """
    A copy of the stand-in whose shebang is this Python: both servers run
    it by its path, as claudews runs a CLI, and neither pays for a wrapper
    on the C{PATH} (pyenv's shims cost 60 ms of CPU a start, which 50
    starts at once turn into latency).
    """
    path = os.path.join(directory, "standin_cli")
    with open(os.path.join(HERE, "standin_cli.py")) as f:
        source = f.read()
    with open(path, "w") as f:
        f.write("#!%s\n" % (sys.executable,) + source.split("\n", 1)[1])
    os.chmod(path, 0o755)
    return path


def load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def machine_busy():
    """CPU seconds the whole machine has spent busy."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def own_cpu():
    """
    CPU seconds of this process and of every descendant it has reaped
    (servers, floors, readers; their stand-ins were reaped by them).
    """
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv=None):
    global STANDIN
    args = options(argv)
    launcher = tempfile.mkdtemp(prefix="claudews-perf-standin-")
    STANDIN = standin_launcher(launcher)
    try:
        return run(args, argv)
    finally:
        shutil.rmtree(launcher, ignore_errors=True)


def run(args, argv):
    header = machine() + ["before:   " + load()]
    for line in header:
        progress(line)
    started, busy, ours = time.monotonic(), machine_busy(), own_cpu()
    rows = []
    for name in ROWS:
        if name in args.only:
            rows += RUNNERS[name](args)
    wall = time.monotonic() - started
    header.append("after:    " + load())
    # What else ran meanwhile: other people's work on a shared machine
    # shows here, and makes every figure below worse.
    header.append("others:   %.2f of %d cores busy on average with processes not of this "
                  "bench" % (max(0.0, (machine_busy() - busy) - (own_cpu() - ours)) / wall,
                             os.cpu_count() or 0))
    print("\n".join(header))
    words = sys.argv[1:] if argv is None else list(argv)
    print("command:  %s (%.0f s)%s" % (
        " ".join(["python bench/perf.py"] + words), time.monotonic() - started,
        "; tiny workloads, the figures mean little" if args.quick else ""))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
