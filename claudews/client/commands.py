"""
The subcommands' flows, each a coroutine run by Twisted (C{ensureDeferred})
over an open L{Connection}, returning the exit status.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Awaitable, Callable

import attrs
from rich.text import Text

from claudews.client import errors
from claudews.client.connection import Connection
from claudews.client.follow import Follower, View
from claudews.client.once import Once, race
from claudews.client.render import short_id
from claudews.client.terminal import CtrlC

JSON = dict[str, Any]


@attrs.frozen
class Context:
    """What every command gets: the reactor, where output goes, who is there."""

    reactor: Any
    view: View
    interactive: bool


Command = Callable[[Context, Connection, argparse.Namespace], Awaitable[int]]


def project_path(path: str) -> str:
    """Projects are named by absolute path; a relative one is taken from here."""
    return os.path.abspath(os.path.expanduser(path))


def done(ctx: Context, result: JSON, text: str) -> int:
    """A request's result: one JSON line, or one line of text."""
    if ctx.view.json:
        ctx.view.frame(result)
    else:
        ctx.view.console.print(Text(text), markup=False, highlight=False)
    return errors.OK


async def projects(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    result = await conn.request("project.list")
    if ctx.view.json:
        return done(ctx, result, "")
    for project in result.get("projects", []):
        ctx.view.console.print(project_line(project), markup=False, highlight=False)
    if not result.get("projects"):
        ctx.view.note("no projects")
    return errors.OK


def project_line(project: JSON) -> Text:
    """A project and its state on one line."""
    running = project.get("status") == "running"
    line = Text(str(project.get("path")), style="bold")
    line.append("  %s" % (project.get("status"),), style="green" if running else "dim")
    line.append("  queue %s · seq %s · session %s" % (
        project.get("queue"), project.get("last_seq"),
        short_id(project.get("session_id")) if project.get("session_id") else "none"))
    if project.get("pending_permissions"):
        line.append("  %s permission(s) waiting" % (project["pending_permissions"],),
                    style="bold yellow")
    return line


async def create(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    result = await conn.request("project.create", path=project_path(args.path))
    return done(ctx, result, "created %s" % (result.get("project", {}).get("path"),))


async def delete(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    path = project_path(args.path)
    result = await conn.request("project.delete", path=path)
    return done(ctx, result, "deleted %s (the directory itself is untouched)" % (path,))


async def cancel(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    fields: JSON = {"path": project_path(args.path)}
    if args.prompt_id:
        fields["prompt_id"] = args.prompt_id
    result = await conn.request("cancel", **fields)
    return done(ctx, result, "cancelled %s" % (", ".join(result.get("cancelled", [])),))


async def reset(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    path = project_path(args.path)
    result = await conn.request("session.reset", path=path)
    return done(ctx, result, "session reset: the next prompt in %s starts afresh" % (path,))


async def allow(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    result = await conn.request(
        "permission.respond", path=project_path(args.path),
        request_id=args.request_id, behavior="allow")
    return done(ctx, result, "allowed %s" % (args.request_id,))


async def deny(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    fields: JSON = {"path": project_path(args.path), "request_id": args.request_id,
                    "behavior": "deny"}
    if args.message:
        fields["message"] = args.message
    result = await conn.request("permission.respond", **fields)
    return done(ctx, result, "denied %s" % (args.request_id,))


async def history(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    fields: JSON = {"path": project_path(args.path), "limit": args.limit}
    if args.before is not None:
        fields["before"] = args.before
    result = await conn.request("history", **fields)
    for event in result.get("events", []):
        ctx.view.frame(event)
    events = result.get("events") or [{}]
    if result.get("has_more"):
        ctx.view.note("older events: --before %s" % (events[0].get("seq"),))
    return errors.OK


async def status(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    info = await conn.request("server.info")
    listing = await conn.request("project.list")
    if ctx.view.json:
        return done(ctx, {"server": info, "projects": listing.get("projects", [])}, "")
    for line in server_lines(info):
        ctx.view.console.print(line, markup=False, highlight=False)
    for project in listing.get("projects", []):
        ctx.view.console.print(project_line(project), markup=False, highlight=False)
    if not listing.get("projects"):
        ctx.view.note("no projects")
    return errors.OK


def server_lines(info: JSON) -> list[Text]:
    """What C{server.info} says, in a few lines."""
    claude = info.get("claude") or {}
    limits = info.get("limits") or {}
    shown = ("max_running", "max_queue", "timeout", "permission_timeout", "idle_timeout")
    return [
        Text("claudews %s (protocol %s)" % (info.get("version"), info.get("protocol")),
             style="bold"),
        Text("claude: %s %s" % (claude.get("bin"), claude.get("version") or "(version unknown)")),
        Text("limits: " + " · ".join(
            "%s %s" % (key, limits[key]) for key in shown if key in limits), style="dim"),
    ]


async def tail(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    path = project_path(args.path)
    follower = Follower(ctx.reactor, conn, path, ctx.view, ctx.interactive, only_watched=False)
    stopped: Once[None] = Once()
    ctrl_c = CtrlC(ctx.reactor, lambda presses: stopped.fire(None))
    ctrl_c.install()
    try:
        result = await conn.subscribe(path, follower.frame, since=args.since)
        ctx.view.note("following %s (last seq %s); Ctrl-C stops" % (path, result.get("last_seq")))
        follower.subscribed(result, args.since)
        await race(stopped.when(), follower.deleted.when(), conn.lost.when())
    finally:
        ctrl_c.restore()
        follower.stop()
    return errors.OK
