"""
All projects: create, delete, look up, and their directories under DATA.

Layout::

    DATA/projects/{id}/metadata.json
    DATA/projects/{id}/logs/...        (claudews.history)

C{id} is derived from the canonical path (L{claudews.paths.project_id}); no
text a client sent ever becomes part of a file name.

A server that died leaves metadata that may be behind its history (or
none at all, or a damaged one): at start, the newest events of such a
project's history settle which prompts are still open, and rebuild what
the metadata lost (L{scan_tail}).
"""

import calendar
import json
import os
import shutil
import time
import uuid
from typing import Any, Callable, Iterable

import attrs

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from claudews import metadata, paths, proctree
from claudews.errors import RequestError
from claudews.events import timestamp
from claudews.history import History
from claudews.project import Project, ProjectConfig, lost_session, marker_prefix
from claudews.subscribers import send_each
from claudews.supervisor import Supervisor


#: After the point where the history settles every earlier prompt, at most
#: this many more lines are read looking for prompts the metadata names.
SCAN_BEYOND = 10000


@attrs.define
class Tail:
    """
    What the newest events of a history tell about the state they leave.

    @ivar session_id: the conversation the project was in, if C{session_known}.
    @ivar open_prompts: prompts queued or started whose C{prompt.finished}
        is not stored, oldest first.
    @ivar finished: the prompts whose C{prompt.finished} was seen.
    """

    session_id: str | None = None
    session_known: bool = False
    open_prompts: list[str] = attrs.Factory(list)
    finished: set[str] = attrs.Factory(set)


_KINDS = (b'"event":"prompt.', b'"event":"session.reset"')


def _session_of(event: dict) -> tuple[bool, str | None]:
    """
    Whether C{event} says which conversation the project was in, and which.
    """
    kind = event.get("event")
    if kind == "session.reset":
        return True, None
    if kind in ("prompt.started", "prompt.finished"):
        # Both carry the project's session at that moment.
        session = event.get("session_id")
        return True, session if isinstance(session, str) and session else None
    message = event.get("message")
    if kind != "claude" or not isinstance(message, dict):
        return False, None
    session = message.get("session_id")
    if not isinstance(session, str) or not session:
        return False, None
    if message.get("type") == "system" and message.get("subtype") == "init":
        return True, session
    if message.get("type") == "result" and not lost_session(message):
        return True, session
    return False, None


def scan_tail(history: History, wanted: Iterable[str] = ()) -> Tail:
    """
    Read C{history} backwards as far as it takes to know its open prompts
    and its session, with one line in memory at a time.

    Prompts run in the order they were queued, one at a time, so every
    prompt queued before the newest started one has finished before it
    started: the scan stops at the C{prompt.queued} of the newest started
    prompt, or, while some of the C{wanted} prompts (the metadata's open
    ones) are neither seen queued nor finished, L{SCAN_BEYOND} lines later.
    A history without any started prompt is read to its start.
    """
    tail = Tail()
    unresolved = set(wanted)
    order: dict[str, int] = {}
    newest_started: str | None = None
    settled = False
    beyond = 0
    for line in history.lines_backwards():
        if settled:
            beyond += 1
            if not unresolved or beyond > SCAN_BEYOND:
                break
        # The envelope comes first: its kind is near the start of the line.
        head = line[:8192]
        relevant = any(k in head for k in _KINDS) or (
            not tail.session_known and b'"event":"claude"' in head and b'"session_id"' in line
        )
        if not relevant:
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(event, dict) or type(event.get("seq")) is not int:
            continue
        if not tail.session_known:
            tail.session_known, tail.session_id = _session_of(event)
        kind, prompt_id = event.get("event"), event.get("prompt_id")
        if not isinstance(prompt_id, str):
            continue
        if kind == "prompt.finished":
            tail.finished.add(prompt_id)
            unresolved.discard(prompt_id)
        elif kind in ("prompt.queued", "prompt.started"):
            unresolved.discard(prompt_id)
            if prompt_id not in tail.finished:
                # The queued event, the older, gives the queue order.
                order[prompt_id] = event["seq"]
            if kind == "prompt.started" and newest_started is None:
                newest_started = prompt_id
            elif kind == "prompt.queued" and prompt_id == newest_started:
                settled = True
    tail.open_prompts = sorted(order, key=order.__getitem__)
    return tail


def _left_running(directory: str) -> list[str]:
    """
    The markers of processes that a server which kept its data in
    C{directory} started and left running.
    """
    markers = {proctree.marker_of(p) for p in proctree.find_marked(prefix=marker_prefix(directory))}
    return sorted(m for m in markers if m)


def _millis(ts: Any) -> int | None:
    """
    An event's C{ts} ("2026-11-26T10:27:06.106Z") in ms since the epoch.
    """
    try:
        whole = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
        return whole * 1000 + int(ts[20:23])
    except (TypeError, ValueError):
        return None


def project_config(settings: Any) -> ProjectConfig:
    return ProjectConfig(
        claude_bin=settings.claude_bin,
        timeout=settings.timeout,
        kill_grace=settings.kill_grace,
        max_line_bytes=settings.max_line_bytes,
        max_queue=settings.max_queue,
        permission_timeout=settings.permission_timeout,
        env=dict(settings.env),
    )


class Registry(service.Service):
    """
    The projects of one server, loaded at start and shut down at stop.
    """

    _log = Logger()

    def __init__(self, settings: Any, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._settings = settings
        self._config = project_config(settings)
        self._root = os.path.join(settings.data, "projects")
        self.supervisor = Supervisor(settings.max_running, settings.idle_timeout, reactor)
        self._projects: dict[str, Project] = {}
        self._epochs: dict[str, int] = {}
        #: Set by the WebSocket factory: how events reach subscribers.
        self.fanout: Callable[[bytes, list], None] = send_each

    # -- service

    def startService(self) -> defer.Deferred:
        super().startService()
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        recoveries = []
        for name in sorted(os.listdir(self._root)):
            directory = os.path.join(self._root, name)
            if ".deleted-" in name:
                # A deletion that a stopped server did not finish.
                shutil.rmtree(directory, ignore_errors=True)
                continue
            if not os.path.isdir(directory):
                continue
            try:
                project = self._load(directory, name)
            except OSError as e:
                # One unreadable project must not keep the others down.
                self._log.error("Skipping {dir}: {error}", dir=directory, error=e)
                continue
            if project is not None:
                self._projects[project.path] = project
                recoveries.append(project.recover())
        self._log.info("Loaded {n} projects", n=len(self._projects))
        # Ending what a dead server left running may take the kill grace;
        # the server listens meanwhile.
        return None

    def _load(self, directory: str, name: str) -> Project | None:
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
        return self._project(path, directory, meta, history)

    def _settle(self, directory: str, history: History, meta: dict) -> dict:
        """
        The server that wrote C{meta} died: its metadata may be behind its
        history. A prompt open in it whose C{prompt.finished} is stored is
        not open; one open in the history that it missed is.
        """
        listed = [p for p in meta.get("open_prompts") or () if isinstance(p, str)]
        tail = scan_tail(history, listed)
        done = [p for p in listed if p in tail.finished]
        missed = [p for p in tail.open_prompts if p not in listed]
        if done or missed:
            self._log.warn(
                "{dir}: the history shows prompts {done} finished and {missed} open, "
                "which its metadata did not",
                dir=directory,
                done=done,
                missed=missed,
            )
        markers = list(meta.get("markers") or ())
        markers += [m for m in _left_running(directory) if m not in markers]
        return dict(
            meta,
            open_prompts=[p for p in listed if p not in done] + missed,
            markers=markers,
        )

    def _rebuild(self, directory: str, history: History) -> dict | None:
        """
        Metadata lost or damaged: rebuild it from the history.

        The path comes from the newest event; C{created_at} and the epoch
        from the oldest stored one (its time in ms: stable, and unlike any
        epoch an earlier history of the path had, so clients replay this
        history from its start, which costs a replay and loses nothing);
        the session and the open prompts from the newest events
        (L{scan_tail}); the processes to end from their markers.
        """
        lines, _ = history.page(None, 1)
        reader = history.read_since(0)
        first = next(reader, None)
        reader.close()
        if not lines or first is None:
            return None
        try:
            newest, oldest = json.loads(lines[-1]), json.loads(first[1])
        except ValueError:
            return None
        path = newest.get("path")
        if not isinstance(path, str):
            return None
        tail = scan_tail(history)
        epoch = _millis(oldest.get("ts")) or int(time.time() * 1000)
        meta = {
            "path": path,
            "created_at": oldest.get("ts") or timestamp(),
            "epoch": epoch,
            "session_id": tail.session_id,
            "open_prompts": tail.open_prompts,
            "markers": _left_running(directory),
        }
        self._log.warn(
            "Rebuilt the lost metadata of {path} ({dir}) from its history: "
            "events {first}..{last}, epoch {epoch}, session {session}, "
            "open prompts {open} (recorded as interrupted), {n} processes left "
            "running to end",
            path=path,
            dir=directory,
            first=history.first_seq,
            last=history.last_seq,
            epoch=epoch,
            session=tail.session_id,
            open=tail.open_prompts,
            n=len(meta["markers"]),
        )
        return meta

    def _history(self, directory: str) -> History:
        return History(
            os.path.join(directory, "logs"),
            rotate_bytes=self._settings.history_rotate_bytes,
            max_bytes=self._settings.history_max_bytes,
            fsync=self._settings.fsync,
            reactor=self._reactor,
        )

    def _project(self, path: str, directory: str, meta: dict, history: History) -> Project:
        return Project(
            path=path,
            project_id=paths.project_id(path),
            directory=directory,
            meta=meta,
            history=history,
            supervisor=self.supervisor,
            config=self._config,
            fanout=lambda line, subs: self.fanout(line, subs),
            reactor=self._reactor,
        )

    def stopService(self) -> defer.Deferred:
        super().stopService()
        projects = list(self._projects.values())
        ends = [p.shutdown() for p in projects]
        d = defer.DeferredList(ends, consumeErrors=True)

        def closed(_: Any) -> None:
            for p in projects:
                p.close()
            self.supervisor.stop()

        d.addCallback(closed)
        return d

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

    def create(self, path: str) -> Project:
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
        project_id = paths.project_id(canonical)
        directory = os.path.join(self._root, project_id)
        if os.path.exists(directory):
            # Left over from a project whose deletion did not finish.
            shutil.rmtree(directory)
        os.makedirs(directory, mode=0o700)
        meta = {
            "path": canonical,
            "created_at": timestamp(),
            "epoch": self._new_epoch(canonical),
        }
        metadata.write(directory, meta)
        project = self._project(canonical, directory, meta, self._history(directory))
        project.save()
        self._projects[canonical] = project
        return project

    def _new_epoch(self, path: str) -> int:
        """
        A new history of C{path} gets a new epoch, even within one millisecond.
        """
        epoch = max(int(time.time() * 1000), self._epochs.get(path, 0) + 1)
        self._epochs[path] = epoch
        return epoch

    def delete(self, project: Project) -> defer.Deferred:
        """
        Cancel the project's work, end its process, remove its data.
        """
        if self._projects.get(project.path) is not project:
            return defer.fail(RequestError("project_not_found", "no such project"))
        del self._projects[project.path]
        # Move its data aside now: the same path may be created again
        # before the old process has ended, and it gets the same directory.
        doomed = project.directory + ".deleted-" + uuid.uuid4().hex[:8]
        try:
            os.rename(project.directory, doomed)
            project.directory = doomed
        except OSError as e:
            self._log.error("Could not move {dir} aside: {error}", dir=project.directory, error=e)
        d = project.shutdown("cancelled")

        def remove(_: Any) -> None:
            project.close()
            shutil.rmtree(project.directory, ignore_errors=True)

        d.addCallback(remove)
        return d
