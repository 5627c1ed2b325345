"""
Tests for claudews.registry: all projects, their directories, and the
order of things when the server stops.
"""

import errno
import os
import shutil
import stat
import tempfile

import attrs
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from claudews import events, metadata, paths
from claudews.config import Settings
from claudews.errors import RequestError
from claudews.jsonlfile import JsonlFile
from claudews.notify import Notifier
from claudews.registry import Registry
from tests.logcapture import LogCapture
from tests.test_notify import FakePost

ORIGINAL_WRITE = metadata.write


class RegistryTestCase(SynchronousTestCase):
    def setUp(self):
        base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-registry-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.root = os.path.join(base, "projects")
        for name in ("app", "lib"):
            os.makedirs(os.path.join(self.root, name))
        self.data = os.path.join(base, "data")
        self.settings = Settings(
            data=self.data,
            project_roots=(self.root,),
            claude_bin=os.path.join(base, "no-claude-here"),
            fsync="none",
        )
        self.clock = Clock()

    def start(self):
        registry = Registry(self.settings, self.clock)
        registry.startService()
        return registry

    def path(self, name):
        return os.path.join(self.root, name)


class RegistryTests(RegistryTestCase):
    def test_create_and_delete_are_refused_while_the_server_stops(self):
        """Nothing new starts during shutdown: create and delete say so."""
        registry = self.start()
        app = registry.create(self.path("app"))
        stopped = registry.stopService()
        e = self.assertRaises(RequestError, registry.create, self.path("lib"))
        self.assertEqual((e.code, e.message), ("internal", "the server is shutting down"))
        failure = self.failureResultOf(registry.delete(app), RequestError)
        self.assertEqual(failure.value.code, "internal")
        self.successResultOf(stopped)
        self.assertEqual([p.path for p in registry.list()], [self.path("app")])

    def test_create_keeps_the_files_of_a_project_that_could_not_be_loaded(self):
        """Data left in the project's directory is moved aside, not deleted."""
        directory = os.path.join(self.data, "projects", paths.project_id(self.path("app")))
        os.makedirs(directory)
        with open(os.path.join(directory, "metadata.json"), "w") as f:
            f.write('{"path": "/somewhere/else"}')
        registry = self.start()
        self.assertEqual(registry.list(), [])
        project = registry.create(self.path("app"))
        self.assertEqual(project.last_seq, 0)
        [aside] = [
            name
            for name in os.listdir(os.path.join(self.data, "projects"))
            if ".replaced-" in name
        ]
        with open(os.path.join(self.data, "projects", aside, "metadata.json")) as f:
            self.assertIn("/somewhere/else", f.read())
        self.successResultOf(registry.stopService())
        # The set-aside directory is not taken for a project at the next start.
        again = self.start()
        self.assertEqual([p.path for p in again.list()], [self.path("app")])
        self.successResultOf(again.stopService())

    def test_one_project_failing_to_close_does_not_keep_the_others_open(self):
        """A close that raises is logged; the other projects are closed."""
        registry = self.start()
        app = registry.create(self.path("app"))
        lib = registry.create(self.path("lib"))
        closed = []

        def broken():
            raise OSError(5, "Input/output error")

        app.close = broken
        original = lib.close
        lib.close = lambda: (closed.append("lib"), original())
        self.successResultOf(registry.stopService())
        self.assertEqual(closed, ["lib"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class CreateFailureTests(RegistryTestCase):
    """
    A create the disk refuses leaves nothing behind.
    """

    def projects_dir(self):
        return os.path.join(self.data, "projects")

    def refuse(self, target, name):
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(target, name, full)

    def assertNothingLeft(self, registry, e):
        self.assertEqual(e.code, "storage_error")
        self.assertIn("No space left on device", e.message)
        self.assertEqual(registry.list(), [])
        self.assertEqual(os.listdir(self.projects_dir()), [])
        self.assertEqual(self.logs.lines("Traceback"), [])
        self.assertEqual(
            [e for e in self.logs.events if e["log_level"] in (LogLevel.error, LogLevel.critical)],
            [],
        )

    def setUp(self):
        super().setUp()
        self.logs = LogCapture(self)

    def test_metadata_that_cannot_be_written_leaves_no_directory(self):
        """storage_error with the OS's message, no project, no directory, no error logged."""
        registry = self.start()
        self.refuse(metadata, "write")
        e = self.assertRaises(RequestError, registry.create, self.path("app"))
        self.assertNothingLeft(registry, e)
        # The disk has room again: the same path can be created.
        self.patch(metadata, "write", ORIGINAL_WRITE)
        registry.create(self.path("app"))
        self.successResultOf(registry.stopService())

    def test_a_history_that_cannot_be_opened_leaves_no_directory(self):
        """The first history file refused: the same."""
        registry = self.start()
        self.refuse(JsonlFile, "_openFile")
        e = self.assertRaises(RequestError, registry.create, self.path("app"))
        self.assertNothingLeft(registry, e)

    def test_watchers_hear_of_no_project_that_failed(self):
        """No 'created' frame for a create that failed."""
        registry = self.start()
        sent = []
        registry.watchers.send = lambda *args, **kwargs: sent.append(args)
        self.refuse(metadata, "write")
        self.assertRaises(RequestError, registry.create, self.path("app"))
        self.assertEqual(sent, [])


class DataModeTests(RegistryTestCase):
    """
    The data tree is its owner's alone, whatever the umask.
    """

    def test_a_new_projects_tree_is_0700_and_0600(self):
        """projects/, the project's directory, logs/, metadata.json, the history file."""
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        registry = self.start()
        project = registry.create(self.path("app"))
        self.assertTreeModes(os.path.join(self.data, "projects"), project.directory)
        self.successResultOf(registry.stopService())

    def test_an_older_servers_lax_tree_is_tightened_at_load(self):
        """0755 directories and 0644 files an earlier version left become 0700/0600."""
        registry = self.start()
        project = registry.create(self.path("app"))
        self.successResultOf(registry.stopService())
        for top, dirs, files in os.walk(project.directory):
            os.chmod(top, 0o755)
            for name in files:
                if not os.path.islink(os.path.join(top, name)):
                    os.chmod(os.path.join(top, name), 0o644)
        again = self.start()
        self.assertTreeModes(os.path.join(self.data, "projects"), project.directory)
        self.successResultOf(again.stopService())

    def assertTreeModes(self, projects, directory):
        self.assertEqual(stat.S_IMODE(os.stat(projects).st_mode), 0o700)
        seen = []
        for top, dirs, files in os.walk(directory):
            self.assertEqual(stat.S_IMODE(os.stat(top).st_mode), 0o700, top)
            for name in files:
                seen.append(name)
                mode = stat.S_IMODE(os.stat(os.path.join(top, name)).st_mode)
                self.assertEqual(mode, 0o600, name)
        self.assertIn("metadata.json", seen)
        self.assertTrue(any(name.startswith("messages_") for name in seen), seen)


class ConfinementTests(RegistryTestCase):
    """
    Device and inode are recorded at create and checked at load.
    """

    def test_create_records_the_directorys_device_and_inode(self):
        """metadata.json holds them from the start."""
        registry = self.start()
        project = registry.create(self.path("app"))
        st = os.stat(self.path("app"))
        meta = metadata.read(project.directory)
        self.assertEqual((meta["device"], meta["inode"]), (st.st_dev, st.st_ino))
        self.assertIsNone(project.describe()["problem"])
        self.successResultOf(registry.stopService())

    def test_a_project_swapped_while_the_server_was_down_says_so_at_load(self):
        """Loaded, with its problem; logged as a warning."""
        registry = self.start()
        registry.create(self.path("app"))
        self.successResultOf(registry.stopService())
        outside = os.path.join(os.path.dirname(self.root), "outside")
        os.mkdir(outside)
        os.rename(self.path("app"), self.path("app.away"))
        os.symlink(outside, self.path("app"))
        again = self.start()
        [project] = again.list()
        self.assertIn("symlink", project.describe()["problem"])
        self.successResultOf(again.stopService())

    def test_an_older_project_gets_its_identity_at_load(self):
        """Metadata without device/inode: recorded when the path still checks out."""
        registry = self.start()
        project = registry.create(self.path("app"))
        self.successResultOf(registry.stopService())
        meta = metadata.read(project.directory)
        del meta["device"], meta["inode"]
        metadata.write(project.directory, meta)
        again = self.start()
        meta = metadata.read(project.directory)
        self.assertEqual(meta["inode"], os.stat(self.path("app")).st_ino)
        self.successResultOf(again.stopService())


class NotifyWiringTests(RegistryTestCase):
    """The registry tells its Notifier of every project's stored events."""

    def notifying(self):
        self.post = FakePost()
        notifier = Notifier(
            ("http://127.0.0.1:9/hook",),
            ("permission.request",),
            self.clock,
            self.post,
        )
        registry = Registry(self.settings, self.clock, notifier=notifier)
        registry.startService()
        return registry

    def test_a_projects_permission_request_is_notified_with_its_path(self):
        """A stored event of a created project reaches the notifier."""
        registry = self.notifying()
        app = registry.create(self.path("app"))
        app.publish(events.permission_request("p-1", "r-1", {"tool_name": "Write"}))
        self.clock.advance(0)
        [(url, body, headers, _)] = self.post.calls
        self.assertEqual((body["project"], body["tool"]), (app.path, "Write"))
        self.assertEqual(headers["Priority"], "high")

    def test_stop_cancels_the_notifications_under_way(self):
        """stopService stops the notifier: the send is cancelled, nothing waits."""
        registry = self.notifying()
        app = registry.create(self.path("app"))
        app.publish(events.permission_request("p-1", "r-1", {"tool_name": "Write"}))
        self.clock.advance(0)
        self.successResultOf(registry.stopService())
        self.assertEqual(self.post.cancelled, ["http://127.0.0.1:9/hook"])
        self.assertEqual(registry.notifier.pending, 0)

    def test_max_booting_sets_the_start_gate(self):
        """max-booting bounds the CLIs loading at once; 0 leaves one CPU to the server."""
        registry = Registry(attrs.evolve(self.settings, max_booting=3), self.clock)
        self.assertEqual(registry._start_gate._most, 3)
        registry = Registry(self.settings, self.clock)
        self.assertEqual(registry._start_gate._most, max(1, len(os.sched_getaffinity(0)) - 1))

    def test_the_settings_urls_make_the_notifier(self):
        """notify-url and notify-on from the settings; nothing sent before an event."""
        settings = attrs.evolve(
            self.settings, notify_url=("https://ntfy.example/t",), notify_on=("prompt.finished",)
        )
        registry = Registry(settings, self.clock)
        self.assertEqual(registry.notifier._urls, ("https://ntfy.example/t",))
        self.assertEqual(registry.notifier._kinds, frozenset({"prompt.finished"}))
        self.assertEqual(self.clock.getDelayedCalls(), [])
