"""
Durability: what survives a crash, a lost metadata file, a full disk and
a long history.

The first half drives L{Registry} and L{Project} on a L{Clock} with the
fake process reactor of C{tests.test_project} (the replay to subscribers
is in C{tests.test_subscribers}); the
second half kills real twistd processes with SIGKILL and restarts them on
the same data (see C{tests.harness}).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import psutil
import pytest
from twisted.trial.unittest import SynchronousTestCase

from claudews import metadata, proctree
from claudews import recovery as recovery_module
from claudews.config import Settings
from claudews.history import History
from claudews.clisession import marker_prefix
from claudews.registry import Registry
from tests.harness import Server, alive, read_pids
from tests.test_project import ProcessReactor, Subscriber

# -- unit tests ------------------------------------------------------------


def stored(project):
    """Every stored event of a project, decoded, checked gap-free."""
    events = [json.loads(line) for _, line in project.history.read_since(0)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events


def finishes(events, prompt_id):
    return [e["status"] for e in events
            if e["event"] == "prompt.finished" and e["prompt_id"] == prompt_id]


class RegistryRecoveryTests(SynchronousTestCase):
    """A server that died: its successor settles prompts from the history."""

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="claudews-durability-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.workdir = os.path.join(self.base, "work", "app")
        os.makedirs(self.workdir)
        self.settings = Settings(
            data=os.path.join(self.base, "data"),
            project_roots=(os.path.join(self.base, "work"),),
            fsync="none",
        )
        self.scans = []
        real = recovery_module.scan_tail

        def counting(history, wanted=()):
            self.scans.append(list(wanted))
            return real(history, wanted)

        self.patch(recovery_module, "scan_tail", counting)

    def registry(self):
        self.reactor = ProcessReactor()
        registry = Registry(self.settings, self.reactor)
        registry.startService()
        return registry

    def crash(self, registry):
        """The server dies: nothing is shut down, files stay as they are."""
        for project in registry.list():
            project.history.close()

    def run_then_crash(self, reset=False):
        """
        A completed prompt (session S-1), then one running and one queued
        when the server dies; returns the three prompt ids and the project.
        """
        registry = self.registry()
        project = registry.create(self.workdir)
        project.subscribe(Subscriber(), None)
        done = project.submit("one", {}, ())["prompt_id"]
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        cli.result("S-1")
        if reset:
            project.reset_session()
        running = project.submit("two", {}, ())["prompt_id"]
        queued = project.submit("three", {}, ())["prompt_id"]
        self.reactor.advance(0)
        if not reset:
            cli.init("S-1")
        self.crash(registry)
        return project, done, running, queued

    def restart(self):
        registry = self.registry()
        self.addCleanup(self.crash, registry)
        [project] = registry.list()
        return project

    def meta_file(self, project):
        return os.path.join(project.directory, metadata.FILENAME)

    def test_lost_metadata_is_rebuilt_from_the_history(self):
        """Path, session, created_at, open prompts: all come back from the logs."""
        old, done, running, queued = self.run_then_crash()
        first = stored(old)[0]
        os.remove(self.meta_file(old))
        project = self.restart()
        self.assertEqual(project.path, self.workdir)
        self.assertEqual(project.session_id, "S-1")
        self.assertEqual(project.created_at, first["ts"])
        events = stored(project)
        self.assertEqual(finishes(events, done), ["completed"])
        self.assertEqual(finishes(events, running), ["interrupted"])
        self.assertEqual(finishes(events, queued), ["interrupted"])
        self.assertEqual(metadata.read(project.directory)["open_prompts"], [])

    def test_damaged_metadata_is_rebuilt_too(self):
        """A metadata file that is not JSON counts as lost."""
        old, done, running, queued = self.run_then_crash()
        with open(self.meta_file(old), "wb") as f:
            f.write(b'{"path": "/trunc')
        project = self.restart()
        self.assertEqual((project.path, project.session_id), (self.workdir, "S-1"))
        self.assertEqual(finishes(stored(project), running), ["interrupted"])

    def test_a_rebuilt_epoch_is_the_first_events_time_and_stable(self):
        """The epoch is the oldest event's ts in ms; rebuilding again gives the same."""
        old, *_ = self.run_then_crash()
        os.remove(self.meta_file(old))
        project = self.restart()
        ts = stored(project)[0]["ts"]
        epoch = project.epoch
        self.assertEqual(recovery_module.millis(ts), epoch)
        self.assertEqual(ts[20:23], "%03d" % (epoch % 1000,))
        self.crash_and_forget(project)
        self.assertEqual(self.restart().epoch, epoch)

    def crash_and_forget(self, project):
        project.history.close()
        os.remove(self.meta_file(project))

    def test_seq_continues_after_a_rebuild(self):
        """The next event after a rebuild takes the seq after the last stored one."""
        old, *_ = self.run_then_crash()
        last = old.last_seq
        os.remove(self.meta_file(old))
        project = self.restart()
        # recover() stored the two interrupted prompts.
        self.assertEqual(project.last_seq, last + 2)
        project.submit("four", {}, ())
        self.assertEqual(stored(project)[-1]["seq"], last + 3)

    def test_a_session_reset_before_the_crash_is_kept(self):
        """The newest session event is a reset: the rebuilt project has no session."""
        old, *_ = self.run_then_crash(reset=True)
        os.remove(self.meta_file(old))
        self.assertIsNone(self.restart().session_id)

    def test_metadata_behind_the_history_does_not_finish_a_prompt_twice(self):
        """An open prompt whose finish is stored is not interrupted again."""
        old, done, running, queued = self.run_then_crash()
        meta = metadata.read(old.directory)
        # A save that failed after the first prompt finished.
        meta["open_prompts"] = [done, running, queued]
        metadata.write(old.directory, meta)
        events = stored(self.restart())
        self.assertEqual(finishes(events, done), ["completed"])
        self.assertEqual(finishes(events, running), ["interrupted"])

    def test_a_prompt_open_in_the_history_but_not_in_metadata_is_interrupted(self):
        """The history's tail wins over metadata that missed a prompt."""
        old, done, running, queued = self.run_then_crash()
        meta = metadata.read(old.directory)
        meta["open_prompts"] = [running]
        metadata.write(old.directory, meta)
        self.assertEqual(finishes(stored(self.restart()), queued), ["interrupted"])

    def test_after_a_clean_stop_the_history_is_not_scanned(self):
        """Metadata written by close() is trusted as it is."""
        registry = self.registry()
        project = registry.create(self.workdir)
        project.submit("one", {}, ())
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        cli.result("S-1")
        d = registry.stopService()
        cli.exit(None, signal.SIGTERM)
        self.successResultOf(d)
        self.assertTrue(metadata.read(project.directory)["clean"])
        self.scans.clear()
        self.restart()
        self.assertEqual(self.scans, [])

    def test_processes_left_running_are_ended_even_without_metadata(self):
        """A process carrying the project's marker prefix is found and ended."""
        old, *_ = self.run_then_crash()
        os.remove(self.meta_file(old))
        env = dict(os.environ)
        env[proctree.MARKER_ENV] = marker_prefix(old.directory) + "left-behind"
        orphan = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env=env, start_new_session=True,
        )
        self.addCleanup(lambda: orphan.poll() is None and orphan.kill())
        self.restart()
        self.assertEqual(orphan.wait(timeout=10), -signal.SIGTERM)
        self.reactor.advance(1)


class MetadataWriteTests(SynchronousTestCase):
    def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(self):
        """ENOSPC mid-write: the old metadata stays whole, no .tmp takes space."""
        directory = tempfile.mkdtemp(prefix="claudews-meta-")
        self.addCleanup(shutil.rmtree, directory, True)
        metadata.write(directory, {"path": "/old"})
        real = os.write

        def full(fd, data):
            real(fd, bytes(data[:10]))
            raise OSError(28, "No space left on device")

        self.patch(os, "write", full)
        self.assertRaises(OSError, metadata.write, directory, {"path": "/new" * 1000})
        self.patch(os, "write", real)
        self.assertEqual(metadata.read(directory), {"path": "/old"})
        self.assertEqual(os.listdir(directory), [metadata.FILENAME])

    def test_spawned_processes_carry_the_projects_marker_prefix(self):
        """The marker a CLI inherits starts with the prefix of its data directory."""
        from claudews.interfaces import send_each
        from claudews.proctree import SystemTrees
        from claudews.config import ProjectConfig
        from claudews.project import Project
        from claudews.supervisor import Supervisor

        directory = tempfile.mkdtemp(prefix="claudews-marker-")
        self.addCleanup(shutil.rmtree, directory, True)
        reactor = ProcessReactor()
        history = History(os.path.join(directory, "logs"), fsync="none", reactor=reactor)
        self.addCleanup(history.close)
        project = Project(path=directory, project_id="x", directory=directory, meta={},
                          history=history, supervisor=Supervisor(1, 60.0, reactor=reactor),
                          config=ProjectConfig(), fanout=send_each,
                          trees=SystemTrees(reactor), reactor=reactor, environ={})
        project.submit("hello", {}, ())
        reactor.advance(0)
        [cli] = reactor.spawned
        marker = cli.env[proctree.MARKER_ENV]
        self.assertTrue(marker.startswith(marker_prefix(directory)))
        self.assertEqual(metadata.read(directory)["markers"], [marker])


# -- a real server, killed ------------------------------------------------


def descendants(server):
    return [p.pid for p in psutil.Process(server.process.pid).children(recursive=True)]


def replay(client, path):
    """Subscribe since 0 on a fresh connection: every stored event, checked gap-free."""
    state = client.ok("subscribe", path=path, since=0)
    last = state["last_seq"]
    if last:
        client.wait_event(lambda m: m.get("seq") == last)
    events = [e for e in client.events if e.get("type") == "event"]
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    return state, events


def statuses(events):
    """prompt_id -> the statuses of its prompt.finished events, in order."""
    found = {}
    for e in events:
        if e["event"] == "prompt.finished":
            found.setdefault(e["prompt_id"], []).append(e["status"])
    return found


def uses_a_tool(prompt_id):
    """Matches the assistant message of C{prompt_id} that starts a tool."""
    def match(m):
        message = m.get("message") or {}
        content = (message.get("message") or {}).get("content") or []
        return m.get("prompt_id") == prompt_id and any(
            isinstance(block, dict) and block.get("type") == "tool_use" for block in content)
    return match


def queued_ids(events):
    return [e["prompt_id"] for e in events if e["event"] == "prompt.queued"]


def restart_after_kill(server, path, before):
    """
    SIGKILL the server, start it again; check that every prompt that was
    queued got exactly one prompt.finished, those in flight `interrupted`,
    and that nothing the dead server ran is still alive.
    """
    server.stop(signal.SIGKILL)
    server.start()
    client = server.connect()
    state, events = replay(client, path)
    found = statuses(events)
    for prompt_id in queued_ids(events):
        assert len(found.get(prompt_id, [])) == 1, (prompt_id, found.get(prompt_id))
    gone, living = psutil.wait_procs(
        [psutil.Process(p) for p in alive(before)], timeout=15
    )
    assert not living, living
    return client, state, events, found


@pytest.mark.integration
def test_sigkill_during_a_tool_run_interrupts_running_and_queued_once(tool_server):
    """kill -9 mid-prompt: history intact, both prompts interrupted once, no process left."""
    server, c, path, pidfile = tool_server
    first = c.ok("prompt", path=path, prompt="hello")["prompt_id"]
    session = c.finished(first)["session_id"]
    running = c.ok("prompt", path=path, prompt="tool-sleep:600")["prompt_id"]
    queued = c.ok("prompt", path=path, prompt="later")["prompt_id"]
    c.wait_event(uses_a_tool(running))
    before = descendants(server) + read_pids(pidfile)
    assert read_pids(pidfile)
    c, state, events, found = restart_after_kill(server, path, before)
    assert found[first] == ["completed"]
    assert found[running] == ["interrupted"] and found[queued] == ["interrupted"]
    assert state["epoch"] == c.ok("project.get", path=path)["project"]["epoch"]
    # The conversation and the numbering go on.
    nxt = c.ok("prompt", path=path, prompt="again")["prompt_id"]
    done = c.finished(nxt)
    assert (done["status"], done["session_id"]) == ("completed", session)
    assert [e["seq"] for e in c.events if e.get("type") == "event"] == list(
        range(1, done["seq"] + 1))


@pytest.mark.integration
def test_sigkill_while_many_small_events_stream(tool_server):
    """A queue of quick prompts streaming events: kill -9 anywhere loses nothing sent."""
    server, c, path, pidfile = tool_server
    ids = [c.ok("prompt", path=path, prompt="quick %d" % i)["prompt_id"] for i in range(60)]
    c.finished(ids[2])
    sent = max(e["seq"] for e in c.events if e.get("type") == "event")
    c2, state, events, found = restart_after_kill(server, path, descendants(server))
    assert state["last_seq"] >= sent
    assert set(ids) <= set(found)
    assert set(s for [s] in found.values()) <= {"completed", "interrupted"}
    assert "interrupted" in (s for [s] in found.values())
    # What the client was told is what the history holds, byte for byte.
    told = {e["seq"]: e for e in c.events if e.get("type") == "event"}
    assert all(events[seq - 1] == e for seq, e in told.items())


@pytest.mark.integration
@pytest.mark.parametrize("policy", ["every", "none"])
def test_sigkill_loses_nothing_sent_under_each_fsync_policy(make_server, policy):
    """
    Whatever the fsync policy, every event a client was sent was written
    before it was sent: a server killed mid-stream keeps it, byte for byte
    (the default, interval, is the test above). Under every, what was sent
    had its fsync done too, which a kill cannot show; tests/test_history.py
    and tests/test_eventlog.py show nothing is sent before it.
    """
    server = make_server("--fsync", policy)
    c = server.connect()
    path = server.project_dir("app")
    c.ok("project.create", path=path)
    c.ok("subscribe", path=path)
    ids = [c.ok("prompt", path=path, prompt="quick %d" % i)["prompt_id"] for i in range(40)]
    c.finished(ids[3])
    server.stop(signal.SIGKILL)
    server.start()
    after = server.connect()
    state, events = replay(after, path)
    told = {e["seq"]: e for e in c.events if e.get("type") == "event"}
    assert told and state["last_seq"] >= max(told)
    assert all(events[seq - 1] == e for seq, e in told.items())
    # What the restart itself stores (the interrupted prompts' ends) is
    # sent, under every, once its fsync is done: maybe after the replay.
    for prompt_id in ids:
        after.finished(prompt_id)
    found = statuses([e for e in after.events if e.get("type") == "event"])
    assert set(ids) <= set(found)
    assert all(len(s) == 1 for s in found.values())


@pytest.mark.integration
def test_sigkill_while_huge_events_are_written(tool_server):
    """kill -9 while lines of many MB are stored: the history stays readable."""
    server, c, path, pidfile = tool_server
    c.ok("unsubscribe", path=path)
    for _ in range(3):
        c.ok("prompt", path=path, prompt="huge:3000000")
    c2 = server.connect()
    c2.ok("subscribe", path=path)
    c2.wait_event(lambda m: m.get("event") == "prompt.started")
    c2, state, events, found = restart_after_kill(server, path, descendants(server))
    assert len(found) == 3
    page = c2.ok("history", path=path, limit=5)
    assert [e["seq"] for e in page["events"]] == list(
        range(state["last_seq"] - len(page["events"]) + 1, state["last_seq"] + 1))


@pytest.mark.integration
def test_sigkill_right_after_a_prompt_is_queued(tool_server):
    """The reply to prompt came back, the server died: that prompt is interrupted once."""
    server, c, path, pidfile = tool_server
    prompt_id = c.ok("prompt", path=path, prompt="tool-sleep:600")["prompt_id"]
    c, state, events, found = restart_after_kill(server, path, descendants(server))
    assert found[prompt_id] == ["interrupted"]


@pytest.mark.integration
def test_lost_metadata_after_a_crash_is_rebuilt(tool_server):
    """kill -9, metadata.json gone: the project, its session and its prompts come back."""
    server, c, path, pidfile = tool_server
    first = c.ok("prompt", path=path, prompt="hello")["prompt_id"]
    session = c.finished(first)["session_id"]
    running = c.ok("prompt", path=path, prompt="tool-sleep:600")["prompt_id"]
    c.wait_event(uses_a_tool(running))
    tools = read_pids(pidfile)
    project_id = c.ok("project.get", path=path)["project"]["id"]
    server.stop(signal.SIGKILL)
    os.remove(os.path.join(server.data, "projects", project_id, "metadata.json"))
    server.start()
    assert "Rebuilt the lost metadata" in server.drain_log()
    c = server.connect()
    project = c.ok("project.get", path=path)["project"]
    assert project["session_id"] == session
    state, events = replay(c, path)
    assert statuses(events) == {first: ["completed"], running: ["interrupted"]}
    gone, living = psutil.wait_procs([psutil.Process(p) for p in alive(tools)], timeout=15)
    assert not living


@pytest.mark.integration
def test_delete_and_create_again_starts_a_new_epoch(tool_server):
    """A since from the old epoch replays the new history from its start."""
    server, c, path, pidfile = tool_server
    c.finished(c.ok("prompt", path=path, prompt="hello")["prompt_id"])
    old = c.ok("project.get", path=path)["project"]
    assert old["last_seq"] > 3
    c.ok("project.delete", path=path)
    new = c.ok("project.create", path=path)["project"]
    assert new["epoch"] != old["epoch"] and new["last_seq"] == 0
    c.ok("subscribe", path=path)
    c.finished(c.ok("prompt", path=path, prompt="again")["prompt_id"])
    c2 = server.connect()
    state = c2.ok("subscribe", path=path, since=3, epoch=old["epoch"])
    assert state["epoch"] == new["epoch"]
    c2.wait_event(lambda m: m.get("seq") == state["last_seq"])
    events = [e for e in c2.events if e.get("type") == "event"]
    assert [e["seq"] for e in events] == list(range(1, state["last_seq"] + 1))
    assert "hello" not in json.dumps(events)


def fill(directory):
    """Write a file into C{directory} until its filesystem is full."""
    ballast = os.path.join(directory, "ballast")
    chunk = b"\0" * 65536
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError:
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return ballast
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs, unmounted after the test; skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield str(mount)
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


@pytest.mark.integration
def test_a_real_full_disk_fails_the_prompt_refuses_new_ones_and_recovers(tmp_path, small_disk):
    """ENOSPC on a real filesystem: failed prompt, refused prompt, then back to work."""
    server = Server(tmp_path)
    server.data = os.path.join(small_disk, "data")
    server.args[server.args.index("--data") + 1] = server.data
    try:
        server.start()
        c = server.connect()
        path = server.project_dir("app")
        c.ok("project.create", path=path)
        c.ok("subscribe", path=path)
        first = c.ok("prompt", path=path, prompt="hello")["prompt_id"]
        assert c.finished(first)["status"] == "completed"
        # Its big reply cannot fit in what the full disk has left.
        doomed = c.ok("prompt", path=path, prompt="permission:Bash huge:300000")["prompt_id"]
        request = c.wait_event(lambda m: m.get("event") == "permission.request")
        ballast = fill(small_disk)
        c.ok("permission.respond", path=path, request_id=request["request_id"],
             behavior="allow")
        server.wait_log(r"Cannot store events of .*No space left on device")
        refused = c.request("prompt", path=path, prompt="refused")
        assert refused["error"] == {
            "code": "internal",
            "message": "cannot store events: [Errno 28] No space left on device",
        }
        # Reading works on a full disk.
        assert c.ok("history", path=path, limit=3)["events"]
        os.remove(ballast)
        after = c.ok("prompt", path=path, prompt="after")["prompt_id"]
        failed = c.finished(doomed)
        assert failed["status"] == "failed"
        assert failed["error"] == "cannot store events: [Errno 28] No space left on device"
        assert c.finished(after)["status"] == "completed"
        seqs = [e["seq"] for e in c.events if e.get("type") == "event"]
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
        c.close()
        server.stop_cleanly()
        assert "works again" in "".join(server.log)
        server.start()
        state, events = replay(server.connect(), path)
        assert statuses(events) == {
            first: ["completed"], doomed: ["failed"], after: ["completed"]}
    finally:
        server.kill()


class UnreadableProjectTests(SynchronousTestCase):
    def test_an_unreadable_history_skips_that_project_only(self):
        """An I/O error loading one project leaves the server up with the others."""
        base = tempfile.mkdtemp(prefix="claudews-unreadable-")
        self.addCleanup(shutil.rmtree, base, True)
        for name in ("a", "b"):
            os.makedirs(os.path.join(base, "work", name))
        settings = Settings(data=os.path.join(base, "data"),
                            project_roots=(os.path.join(base, "work"),), fsync="none")
        registry = Registry(settings, ProcessReactor())
        registry.startService()
        a = registry.create(os.path.join(base, "work", "a"))
        registry.create(os.path.join(base, "work", "b"))
        for project in registry.list():
            project.history.close()
        real = History.__init__

        def failing(history, directory, **kwargs):
            if directory.startswith(a.directory):
                raise OSError(5, "Input/output error")
            real(history, directory, **kwargs)

        self.patch(History, "__init__", failing)
        again = Registry(settings, ProcessReactor())
        again.startService()
        self.assertEqual([p.path for p in again.list()], [os.path.join(base, "work", "b")])
        for project in again.list():
            project.history.close()
