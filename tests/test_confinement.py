"""
Tests for L{claudews.confinement}: a project's directory is checked again
before each CLI start. The unit tests use real temporary directories; the
integration tests run a real twistd with the fake CLI behind a wrapper
that records every CLI start (its working directory and environment).

Also here, since they need the same wrapper: the CLI's environment holds
none of the server's settings, and the data tree is 0700/0600.
"""

import json
import os
import shutil
import stat
import sys
import tempfile

import pytest
from twisted.trial.unittest import SynchronousTestCase

from claudews import paths
from claudews.confinement import Confinement
from claudews.errors import RequestError
from claudews.proctree import MARKER_ENV
from tests.harness import FAKE_CLAUDE, Server, submit


class ConfinementTests(SynchronousTestCase):
    """
    L{Confinement} keeps what was recorded and says what went wrong.
    """

    def setUp(self):
        top = os.path.realpath(tempfile.mkdtemp(prefix="claudews-confinement-"))
        self.addCleanup(shutil.rmtree, top, True)
        self.root = os.path.join(top, "root")
        self.outside = os.path.join(top, "outside")
        self.path = os.path.join(self.root, "p2")
        for d in (self.path, self.outside):
            os.makedirs(d)

    def swap(self):
        os.rmdir(self.path)
        os.symlink(self.outside, self.path)

    def test_reads_the_identity_recorded_in_metadata(self):
        """device and inode from metadata.json; missing or not integers, none."""
        device, inode = paths.identity(self.path)
        known = Confinement.of(self.path, (self.root,), {"device": device, "inode": inode})
        self.assertEqual(known.known, (device, inode))
        self.assertEqual(known.fields(), {"device": device, "inode": inode})
        for meta in ({}, {"device": "1", "inode": 2}, {"device": 1}):
            self.assertIsNone(Confinement.of(self.path, None, meta).known)
            self.assertEqual(Confinement.of(self.path, None, meta).fields(), {})

    def test_an_older_project_gets_its_identity_at_the_first_check_that_passes(self):
        """Not recorded at create: recorded once the path still checks out."""
        confinement = Confinement(self.path, (self.root,), None)
        confinement.check()
        self.assertEqual(confinement.known, paths.identity(self.path))
        self.assertIsNone(confinement.problem)

    def test_an_older_project_whose_path_was_swapped_records_nothing(self):
        """A swap before the first check: refused, no identity taken from outside."""
        confinement = Confinement(self.path, (self.root,), None)
        self.swap()
        self.assertFalse(confinement.checked())
        self.assertIsNone(confinement.known)

    def test_a_failed_check_is_the_problem_until_one_passes(self):
        """problem holds the refusal's text, and is cleared when the directory is back."""
        confinement = Confinement(self.path, (self.root,), paths.identity(self.path))
        os.rename(self.path, self.path + ".away")
        e = self.assertRaises(RequestError, confinement.check)
        self.assertEqual(e.code, "path_invalid")
        self.assertEqual(confinement.problem, e.message)
        os.rename(self.path + ".away", self.path)
        self.assertTrue(confinement.checked())
        self.assertIsNone(confinement.problem)


# -- a real server --------------------------------------------------------

WRAPPER = """\
#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}}) + "\\n")
os.execv(sys.executable, [sys.executable, {fake!r}, *sys.argv[1:]])
"""


def recording_cli(tmp_path):
    """A CLI that records each start in C{starts.jsonl}, then is the fake one."""
    log = str(tmp_path / "starts.jsonl")
    path = tmp_path / "claude"
    path.write_text(WRAPPER.format(python=sys.executable, log=log, fake=FAKE_CLAUDE))
    path.chmod(0o755)
    return str(path), log


def starts(log):
    """The CLI starts C{log} recorded (not the server's C{--version} probes)."""
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [s for s in map(json.loads, f) if "-p" in s["argv"]]


@pytest.fixture
def confined(tmp_path, make_server):
    """A server with the recording CLI, a project p2 and a directory outside the roots."""
    bin, log = recording_cli(tmp_path)
    server = make_server(claude_bin=bin)
    client = server.connect()
    path = server.project_dir("p2")
    client.ok("project.create", path=path)
    client.ok("subscribe", path=path)
    outside = tmp_path / "outside"
    outside.mkdir()
    return server, client, path, str(outside), log


def swap_for_symlink(path, target):
    """Issue 13's trick: remove ROOT/p2, put a symlink out of the roots in its place."""
    os.rmdir(path)
    os.symlink(target, path)


@pytest.mark.integration
def test_a_symlink_swapped_in_after_create_runs_no_cli(confined):
    """The prompt fails with path_invalid, no CLI starts, and project.get says why."""
    server, client, path, outside, log = confined
    swap_for_symlink(path, outside)
    prompt_id = submit(client, path, "permission:Write")
    finished = client.finished(prompt_id)
    assert finished["status"] == "failed"
    assert finished["error"].startswith("path_invalid: "), finished
    assert outside in finished["error"]
    assert client.of(prompt_id, "prompt.started") == []
    assert client.of(prompt_id, "claude") == []
    assert starts(log) == []
    assert os.listdir(outside) == []
    project = client.ok("project.get", path=path)["project"]
    assert project["problem"] == finished["error"][len("path_invalid: "):]
    assert project["status"] == "idle"


@pytest.mark.integration
def test_a_swap_under_a_live_cli_ends_it_and_a_resume_start_is_refused(confined):
    """The idle CLI gets no prompt there and is ended; nothing starts again."""
    server, client, path, outside, log = confined
    first = submit(client, path, "hello")
    assert client.finished(first)["status"] == "completed"
    [start] = starts(log)
    assert start["cwd"] == path
    swap_for_symlink(path, outside)
    second = submit(client, path, "again")
    assert client.finished(second)["error"].startswith("path_invalid: ")
    # The project still has its session: a later start would be a --resume.
    third = submit(client, path, "and again")
    assert client.finished(third)["error"].startswith("path_invalid: ")
    assert len(starts(log)) == 1
    assert client.ok("project.get", path=path)["project"]["session_id"] is not None
    assert os.listdir(outside) == []


@pytest.mark.integration
def test_the_project_works_again_once_its_directory_is_back(confined):
    """Undoing the swap clears the problem; the next prompt runs."""
    server, client, path, outside, log = confined
    os.rename(path, path + ".kept")
    os.symlink(outside, path)
    assert client.finished(submit(client, path, "no"))["status"] == "failed"
    os.unlink(path)
    os.rename(path + ".kept", path)
    assert client.finished(submit(client, path, "yes"))["status"] == "completed"
    assert client.ok("project.get", path=path)["project"]["problem"] is None


@pytest.mark.integration
def test_a_swap_while_the_server_was_down_shows_at_start(confined):
    """A restarted server says at once what is wrong with the project."""
    server, client, path, outside, log = confined
    client.close()
    server.stop_cleanly()
    swap_for_symlink(path, outside)
    server.start()
    client = server.connect()
    project = client.ok("project.get", path=path)["project"]
    assert "symlink" in project["problem"]


@pytest.mark.integration
def test_the_cli_environment_holds_no_server_setting(tmp_path, make_server):
    """Token from CLAUDEWS_TOKEN, settings from CLAUDEWS_*: none reaches the CLI."""
    bin, log = recording_cli(tmp_path)
    secret = "env-token-0123456789abcdef"
    server = Server(
        tmp_path,
        claude_bin=bin,
        token=None,
        env={"CLAUDEWS_TOKEN": secret, "CLAUDEWS_MAX_RUNNING": "3"},
    )
    server.token = secret
    server.start()
    try:
        client = server.connect()
        path = server.project_dir("app")
        client.ok("project.create", path=path)
        client.ok("subscribe", path=path)
        assert client.finished(submit(client, path, "hello"))["status"] == "completed"
        [start] = starts(log)
    finally:
        server.kill()
    env = start["env"]
    assert [k for k in env if k.startswith("CLAUDEWS_")] == [MARKER_ENV]
    assert secret not in json.dumps(env)


def modes(top):
    """Every directory and file under C{top}: (relative path, mode, is a directory)."""
    found = []
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.stat(path)  # latest.jsonl: its target's mode
            found.append((os.path.relpath(path, top), stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode)))
    return found


@pytest.mark.integration
def test_the_data_tree_is_the_owners_alone_after_a_real_rotation(tmp_path, make_server):
    """logs/, every *.jsonl (rotated ones too), latest.jsonl's target, metadata.json."""
    old_umask = os.umask(0o022)
    try:
        server = make_server(env={"CLAUDEWS_HISTORY_ROTATE_BYTES": "4096"})
    finally:
        os.umask(old_umask)
    client = server.connect()
    path = server.project_dir("app")
    client.ok("project.create", path=path)
    client.ok("subscribe", path=path)
    for _ in range(3):
        assert client.finished(submit(client, path, "huge:5000"))["status"] == "completed"
    projects = os.path.join(server.data, "projects")
    found = modes(projects)
    names = [name for name, _, _ in found]
    assert sum(name.endswith(".jsonl") and "messages_" in name for name in names) >= 3, names
    assert any(name.endswith("latest.jsonl") for name in names)
    assert any(name.endswith("metadata.json") for name in names)
    assert stat.S_IMODE(os.stat(projects).st_mode) == 0o700
    for name, mode, is_dir in found:
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at C{tmp_path/data}, where mounting is permitted."""
    import subprocess

    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(data)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % (mounted.stderr.decode().strip(),))
    yield str(data)
    subprocess.run(["umount", "-l", str(data)], check=True)


def fill(directory):
    """Fill the filesystem of C{directory}; the file that did it."""
    filler = os.path.join(directory, "filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == 28, e
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return filler


@pytest.mark.integration
def test_create_on_a_full_disk_leaves_nothing_and_says_why(small_disk, make_server):
    """storage_error with the OS's words, no project, no directory, no traceback; then it works."""
    server = make_server()
    client = server.connect()
    path = server.project_dir("app")
    filler = fill(small_disk)
    reply = client.request("project.create", path=path)
    assert not reply["ok"]
    assert reply["error"]["code"] == "storage_error", reply
    assert "No space left on device" in reply["error"]["message"]
    assert client.ok("project.list")["projects"] == []
    assert os.listdir(os.path.join(small_disk, "projects")) == []
    os.unlink(filler)
    assert client.ok("project.create", path=path)["project"]["path"] == path
    server.stop_cleanly()
    log = "".join(server.log)
    assert "Could not create" in log
    assert "#error]" not in log and "#critical]" not in log, log[-3000:]
