"""
All projects: create, delete, look up, and their directories under DATA.

Layout::

    DATA/projects/{id}/metadata.json
    DATA/projects/{id}/logs/...        (claudews.history)

C{id} is derived from the canonical path (L{claudews.paths.project_id}); no
text a client sent ever becomes part of a file name.

A server that died leaves metadata that may be behind its history (or
none at all, or a damaged one): at start, such a project's metadata is
settled or rebuilt from its history (L{claudews.recovery}).
"""

import os
import shutil
import time
import uuid
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from claudews import metadata, paths, recovery
from claudews.confinement import Confinement
from claudews.errors import RequestError
from claudews.config import ProjectConfig, Settings
from claudews.events import Event, timestamp
from claudews.history import History
from claudews.project import Project
from claudews.interfaces import Fanout, ProcessReactor, Subscriber, send_each
from claudews.journal import Journal
from claudews.liveprocess import StartGate
from claudews.metrics import Metrics
from claudews.notify import Notifier
from claudews.proctree import SystemTrees
from claudews.supervisor import Supervisor
from claudews.syncer import FileSyncer, InlineSyncer
from claudews.watch import CREATED, DELETED, UPDATED, Watchers


class Registry(service.Service):
    """
    The projects of one server, loaded at start and shut down at stop.
    """

    _log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: ProcessReactor,
        fanout: Fanout = send_each,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        syncer: FileSyncer | None = None,
    ) -> None:
        self._reactor = reactor
        #: Where the histories' fsyncs run: threads in the server
        #: (L{claudews.syncer.Syncer}), at once when omitted (tests).
        self._syncer: FileSyncer = syncer or InlineSyncer()
        #: New CLI processes start one per reactor turn, across projects,
        #: and only so many boot at once (L{StartGate}).
        self._start_gate = StartGate(reactor, settings.max_booting or None)
        #: Projects' metadata.json, fsynced as the histories are: under
        #: C{interval} within C{fsync_interval}, one fsync a project for
        #: all its changes meanwhile.
        self._write_metadata = metadata.Writer(
            settings.fsync, self._syncer, reactor, settings.fsync_interval
        )
        self._settings = settings
        self._config = ProjectConfig.of(settings)
        self._root = os.path.join(settings.data, "projects")
        self.supervisor = Supervisor(settings.max_running, settings.idle_timeout, reactor)
        self._projects: dict[str, Project] = {}
        self._epochs: dict[str, int] = {}
        #: Ending what a dead server left running, started at load.
        self._recoveries: list[defer.Deferred[Any]] = []
        #: Deletions whose process has not ended yet.
        self._deleting: set[defer.Deferred[None]] = set()
        #: How events reach subscribers (the WebSocket fan-out).
        self._fanout = fanout
        self._trees = SystemTrees(reactor)
        #: The connections watching every project (the v1.1 feed).
        self.watchers = Watchers()
        #: Tells notify-url of the events notify-on names.
        self.notifier = Notifier.of(settings, reactor) if notifier is None else notifier
        self.metrics = Metrics(reactor) if metrics is None else metrics
        self.metrics.track_processes(lambda: self.supervisor.live)
        #: Told of every stored event of every project.
        self._observers: tuple[Callable[[str, Event], object], ...] = (
            self.notifier.observe, Journal(reactor).observe, self.metrics.observe,
        )

    # -- service

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        os.chmod(self._root, 0o700)
        for name in sorted(os.listdir(self._root)):
            directory = os.path.join(self._root, name)
            if ".deleted-" in name:
                # A deletion that a stopped server did not finish.
                shutil.rmtree(directory, ignore_errors=True)
                continue
            if not os.path.isdir(directory) or "." in name:
                # Not a project's directory (a set-aside one, see create).
                continue
            try:
                project = self._load(directory, name)
            except OSError as e:
                # One unreadable project must not keep the others down.
                self._log.error("Skipping {dir}: {error}", dir=directory, error=e)
                continue
            if project is not None:
                self._projects[project.path] = project
                self._recoveries.append(project.recover())
        self._log.info("Loaded {n} projects", n=len(self._projects))
        # Ending what a dead server left running may take the kill grace;
        # the server listens meanwhile.

    def _load(self, directory: str, name: str) -> Project | None:
        _tighten(directory)
        meta = metadata.read(directory)
        history = self._history(directory)
        if meta is None:
            meta = self._rebuild(directory, history)
            if meta is None:
                self._log.warn("Skipping {dir}: no metadata and no history", dir=directory)
                history.close()
                return None
        elif not meta.get("clean"):
            meta = self._settle(directory, history, meta)
        path = meta.get("path")
        if not isinstance(path, str) or paths.project_id(path) != name:
            self._log.warn("Skipping {dir}: metadata names another path", dir=directory)
            history.close()
            return None
        epoch = meta.get("epoch")
        if isinstance(epoch, int):
            self._epochs[path] = max(epoch, self._epochs.get(path, 0))
        project = self._project(path, directory, meta, history)
        # Says why in project.get at once; a project from before device and
        # inode were recorded gets them here, when its path still checks out.
        if not project.confinement.checked():
            self._log.warn(
                "{path}: {problem}", path=path, problem=project.confinement.problem
            )
        return project

    def _settle(
        self, directory: str, history: History, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """
        The server that wrote C{meta} died: its metadata, brought up to
        date with its history (L{recovery.settle}).
        """
        settled = recovery.settle(directory, history, meta)
        if settled.done or settled.missed:
            self._log.warn(
                "{dir}: the history shows prompts {done} finished and {missed} open, "
                "which its metadata did not",
                dir=directory,
                done=settled.done,
                missed=settled.missed,
            )
        return settled.meta

    def _rebuild(self, directory: str, history: History) -> dict[str, Any] | None:
        """
        Metadata lost or damaged: rebuilt from the history
        (L{recovery.rebuild}), or C{None} when the history holds nothing.
        """
        meta = recovery.rebuild(directory, history)
        if meta is None:
            return None
        self._log.warn(
            "Rebuilt the lost metadata of {path} ({dir}) from its history: "
            "events {first}..{last}, epoch {epoch}, session {session}, "
            "open prompts {open} (recorded as interrupted), {n} processes left "
            "running to end",
            path=meta["path"],
            dir=directory,
            first=history.first_seq,
            last=history.last_seq,
            epoch=meta["epoch"],
            session=meta["session_id"],
            open=meta["open_prompts"],
            n=len(meta["markers"]),
        )
        return meta

    def _history(self, directory: str) -> History:
        logs = os.path.join(directory, "logs")
        # Made here, 0700: History would make it with the umask's mode.
        os.makedirs(logs, mode=0o700, exist_ok=True)
        return History(
            logs,
            rotate_bytes=self._settings.history_rotate_bytes,
            max_bytes=self._settings.history_max_bytes,
            fsync=self._settings.fsync,
            fsync_interval=self._settings.fsync_interval,
            syncer=self._syncer,
            reactor=self._reactor,
        )

    def _project(
        self, path: str, directory: str, meta: dict[str, Any], history: History
    ) -> Project:
        return Project(
            path=path,
            project_id=paths.project_id(path),
            directory=directory,
            meta=meta,
            history=history,
            supervisor=self.supervisor,
            config=self._config,
            fanout=self._fanout,
            trees=self._trees,
            reactor=self._reactor,
            on_change=self._changed,
            confinement=Confinement.of(path, self._settings.project_roots, meta),
            observe=self._observe,
            write_failed=self.metrics.storage_failed,
            write_metadata=self._write_metadata,
            start_gate=self._start_gate,
        )

    def _observe(self, project: Project, event: Event) -> None:
        for observer in self._observers:
            try:
                observer(project.path, event)
            except Exception:
                # Inside a publish: one observer failing must not stop
                # the others, nor the event.
                self._log.failure("Observing a {kind} event failed", kind=event.kind)

    def _changed(self, project: Project) -> None:
        if self._projects.get(project.path) is project:
            self.watchers.send(UPDATED, project.describe())

    def watch(self, watcher: Subscriber) -> list[Project]:
        """
        From now on tell C{watcher} of every project created, deleted or
        changed; the projects there are now.
        """
        self.watchers.add(watcher)
        return self.list()

    def unwatch(self, watcher: Subscriber) -> None:
        self.watchers.remove(watcher)

    def stopService(self) -> defer.Deferred[None]:
        # From here on create and delete are refused (self.running), and no
        # process slot is granted: nothing new starts while we stop.
        super().stopService()  # type: ignore[no-untyped-call]
        self.supervisor.stop()
        # The prompts interrupted by the stop are not news to send.
        self.notifier.stop()
        projects = list(self._projects.values())
        ends = [p.shutdown() for p in projects]
        ends += self._recoveries + list(self._deleting)
        d = defer.DeferredList(ends, consumeErrors=True)

        def closed(_: object) -> None:
            for p in projects:
                _close(p)

        return d.addCallback(closed)

    # -- requests

    def list(self) -> list[Project]:
        return sorted(self._projects.values(), key=lambda p: p.path)

    def get(self, path: str) -> Project:
        project = self._projects.get(path)
        if project is None:
            # The same directory named another way (a symlink, "..").
            try:
                project = self._projects.get(os.path.realpath(path))
            except (ValueError, OSError):
                pass
        if project is None:
            raise RequestError("project_not_found", "no project at %r" % (path[:200],))
        return project

    def _refuse_when_stopping(self) -> None:
        if not self.running:
            raise RequestError("internal", "the server is shutting down")

    def create(self, path: str) -> Project:
        self._refuse_when_stopping()
        canonical = paths.canonical(path)
        paths.check_allowed(canonical, self._settings.project_roots)
        if canonical in self._projects:
            raise RequestError("project_exists", "%r is a project already" % (canonical,))
        paths.check_not_nested(canonical, self._projects)
        if len(self._projects) >= self._settings.max_projects:
            raise RequestError(
                "too_many_projects",
                "the server has %d projects, its limit" % (self._settings.max_projects,),
            )
        try:
            device, inode = paths.identity(canonical)
        except OSError as e:
            raise RequestError(
                "path_invalid", "cannot open %s: %s" % (paths.quote(canonical), e.strerror)
            ) from None
        meta = {
            "path": canonical,
            "created_at": timestamp(),
            "epoch": self._new_epoch(canonical),
            "device": device,
            "inode": inode,
        }
        project = self._new_project(canonical, meta)
        self._projects[canonical] = project
        self._log.info("Project {path} created", path=canonical)
        self.watchers.send(CREATED, project.describe())
        return project

    def _new_project(self, path: str, meta: dict[str, Any]) -> Project:
        """
        A new project's directory and files, or, when the disk refuses
        them, nothing at all and a C{storage_error} with the OS's words.
        """
        directory = os.path.join(self._root, paths.project_id(path))
        history: History | None = None
        made = False
        try:
            self._set_aside(path, directory)
            os.makedirs(directory, mode=0o700)
            made = True
            history = self._history(directory)
            project = self._project(path, directory, meta, history)
            project.store()
        except OSError as e:
            if history is not None:
                _quietly(history.close)
            if made:
                shutil.rmtree(directory, ignore_errors=True)
            self._log.warn("Could not create {path}: {error}", path=path, error=e)
            raise RequestError(
                "storage_error",
                "cannot store the new project's data: %s" % (e.strerror or e,),
            ) from None
        return project

    def _set_aside(self, path: str, directory: str) -> None:
        """
        Keep the files of a project that could not be loaded at start
        (damaged or unreadable) for the operator.
        """
        if not os.path.lexists(directory):
            return
        aside = "%s.replaced-%d" % (directory, int(time.time()))
        os.rename(directory, aside)
        self._log.warn(
            "Moved the unloadable data of {path} aside to {aside}", path=path, aside=aside
        )

    def _new_epoch(self, path: str) -> int:
        """
        A new history of C{path} gets a new epoch, even within one millisecond.
        """
        epoch = max(int(time.time() * 1000), self._epochs.get(path, 0) + 1)
        self._epochs[path] = epoch
        return epoch

    def delete(self, project: Project) -> defer.Deferred[None]:
        """
        Cancel the project's work, end its process, remove its data.
        """
        if not self.running:
            return defer.fail(RequestError("internal", "the server is shutting down"))
        if self._projects.get(project.path) is not project:
            return defer.fail(RequestError("project_not_found", "no such project"))
        del self._projects[project.path]
        self._log.info("Project {path} deleted", path=project.path)
        self.watchers.send(DELETED, project.describe(), also=project.subscriber_list())
        # Move its data aside now: the same path may be created again
        # before the old process has ended, and it gets the same directory.
        doomed = project.directory + ".deleted-" + uuid.uuid4().hex[:8]
        try:
            os.rename(project.directory, doomed)
            project.moved_to(doomed)
        except OSError as e:
            self._log.error("Could not move {dir} aside: {error}", dir=project.directory, error=e)
        d = project.shutdown("cancelled")

        def remove(_: None) -> None:
            self._deleting.discard(d)
            _close(project)
            shutil.rmtree(project.directory, ignore_errors=True)

        self._deleting.add(d)
        d.addCallback(remove)
        return d


def _quietly(close: Callable[[], object]) -> None:
    try:
        close()
    except OSError:
        pass


def _tighten(directory: str) -> None:
    """
    Make a project's data its owner's alone (0700 directories, 0600
    files), as an older server may have left it; symlinks are left as
    they are (latest.jsonl points at a file made 0600).
    """
    try:
        for top, dirs, files in os.walk(directory):
            os.chmod(top, 0o700)
            for name in files:
                path = os.path.join(top, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o600)
    except OSError as e:
        # Loaded all the same: the data directory above is 0700.
        Registry._log.warn("Could not tighten the modes in {dir}: {error}", dir=directory, error=e)


def _close(project: Project) -> None:
    # One project failing to close (a disk error) must not keep the
    # others open.
    try:
        project.close()
    except Exception:
        Registry._log.failure("Closing {path} failed", path=project.path)
