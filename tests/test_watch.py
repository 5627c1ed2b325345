"""
Tests for L{claudews.watch} and the server-wide feed the registry feeds
it: a watcher sees every project created, changed (status, queue, pending
permission requests, session) and deleted, as PROTOCOL.md's v1.1 says.

The projects run on the fake process reactor of L{tests.test_project}:
the tests speak for the CLI.
"""

import json
import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from claudews.config import Settings
from claudews.permissions import PermissionAnswer
from claudews.registry import Registry
from claudews.watch import Watchers, change_frame
from tests.test_project import ProcessReactor, Subscriber


class WatchersTests(SynchronousTestCase):
    def test_a_change_reaches_each_watcher_and_each_extra_target_once(self):
        """A connection that both watches and is named in also gets one frame."""
        watchers = Watchers()
        both, only_watching, only_subscribed = Subscriber(), Subscriber(), Subscriber()
        watchers.add(both)
        watchers.add(only_watching)
        watchers.send("deleted", {"path": "/w/app"}, also=[both, only_subscribed])
        frame = change_frame("deleted", {"path": "/w/app"})
        self.assertEqual(both.lines, [frame])
        self.assertEqual(only_watching.lines, [frame])
        self.assertEqual(only_subscribed.lines, [frame])

    def test_an_unwatched_connection_hears_nothing_more(self):
        """remove() ends the feed for that connection only."""
        watchers = Watchers()
        gone, stays = Subscriber(), Subscriber()
        watchers.add(gone)
        watchers.add(stays)
        watchers.remove(gone)
        watchers.send("created", {"path": "/w/app"})
        self.assertEqual((gone.lines, len(stays.lines)), ([], 1))

    def test_the_frame_has_no_seq(self):
        """Feed frames are not events: type project, a change and the object."""
        frame = json.loads(change_frame("updated", {"path": "/w/app", "queue": 1}))
        self.assertEqual(
            frame, {"type": "project", "change": "updated", "project": {"path": "/w/app", "queue": 1}}
        )


class FeedTests(SynchronousTestCase):
    def setUp(self):
        base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-watch-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.root = os.path.join(base, "projects")
        for name in ("app", "lib"):
            os.makedirs(os.path.join(self.root, name))
        settings = Settings(
            data=os.path.join(base, "data"),
            project_roots=(self.root,),
            claude_bin="claude",
            fsync="none",
        )
        self.reactor = ProcessReactor()
        self.registry = Registry(settings, self.reactor)
        self.registry.startService()
        self.addCleanup(self.stop)
        self.watcher = Subscriber()

    def stop(self):
        stopped = self.registry.stopService()
        for cli in self.reactor.spawned:
            if not cli.ended:
                cli.exit(0)
        self.successResultOf(stopped)

    def path(self, name):
        return os.path.join(self.root, name)

    def frames(self):
        """What the watcher got since the last call, decoded."""
        got = [json.loads(line) for line in self.watcher.lines]
        self.watcher.lines = []
        return got

    def changes(self):
        return [(f["change"], f["project"]["status"], f["project"]["queue"],
                 f["project"]["pending_permissions"]) for f in self.frames()]

    def test_watch_gives_the_current_projects_then_creations(self):
        """The list first, then a created frame with the new project."""
        self.registry.create(self.path("app"))
        listed = self.registry.watch(self.watcher)
        self.assertEqual([p.path for p in listed], [self.path("app")])
        lib = self.registry.create(self.path("lib"))
        [frame] = self.frames()
        self.assertEqual((frame["change"], frame["project"]), ("created", lib.describe()))

    def test_a_prompt_shows_as_queued_then_running_then_idle(self):
        """Status and queue changes each make one updated frame, not one per event."""
        app = self.registry.create(self.path("app"))
        self.registry.watch(self.watcher)
        app.submit("hello", {}, ())
        self.assertEqual(self.changes(), [("updated", "idle", 1, 0)])
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        self.assertEqual(self.changes(), [("updated", "running", 0, 0)])
        cli.init("S-1")
        cli.assistant("S-1")
        # The session became known: that is a change too.
        [session] = self.frames()
        self.assertEqual(session["project"]["session_id"], "S-1")
        cli.result("S-1")
        self.assertEqual(self.changes(), [("updated", "idle", 0, 0)])

    def test_pending_permission_requests_are_counted(self):
        """A request waiting for an answer shows; its answer takes it away."""
        app = self.registry.create(self.path("app"))
        app.submit("hello", {}, ())
        self.reactor.advance(0)
        [cli] = self.reactor.spawned
        cli.init("S-1")
        self.registry.watch(self.watcher)
        cli.ask_permission("req-1")
        self.assertEqual(self.changes(), [("updated", "running", 0, 1)])
        app.respond_permission(PermissionAnswer("req-1", "allow"))
        self.assertEqual(self.changes(), [("updated", "running", 0, 0)])

    def test_deletion_reaches_watchers_and_the_projects_subscribers(self):
        """A subscriber that does not watch still learns its project is gone."""
        app = self.registry.create(self.path("app"))
        subscriber = Subscriber()
        app.subscribe(subscriber, None)
        self.registry.watch(self.watcher)
        self.successResultOf(self.registry.delete(app))
        [frame] = self.frames()
        self.assertEqual((frame["change"], frame["project"]["path"]), ("deleted", self.path("app")))
        self.assertEqual([json.loads(line)["change"] for line in subscriber.lines], ["deleted"])

    def test_after_unwatch_nothing_comes(self):
        """unwatch ends the feed."""
        self.registry.watch(self.watcher)
        self.registry.unwatch(self.watcher)
        self.registry.create(self.path("app"))
        self.assertEqual(self.frames(), [])
