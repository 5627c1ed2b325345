"""
Tests for claudews.registry: all projects, their directories, and the
order of things when the server stops.
"""

import os
import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import paths
from claudews.config import Settings
from claudews.errors import RequestError
from claudews.registry import Registry


class RegistryTests(SynchronousTestCase):
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
