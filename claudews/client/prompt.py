"""
The C{prompt} command: subscribe, send the prompt, show its events as they
come, end with its summary line.

The first Ctrl-C cancels the prompt on the server and waits for it to
finish; a second one leaves it running and exits. Either way the client
says which it did.
"""

from __future__ import annotations

import argparse
from typing import Any

from claudews.client import errors
from claudews.client.commands import Context, project_path
from claudews.client.connection import Connection
from claudews.client.follow import Follower
from claudews.client.once import Once, race
from claudews.client.terminal import CtrlC

JSON = dict[str, Any]


class PromptRun:
    """One prompt sent and followed until it finishes."""

    def __init__(self, ctx: Context, conn: Connection, path: str, text: str) -> None:
        self._ctx = ctx
        self._conn = conn
        self._path = path
        self._text = text
        self._prompt_id: str | None = None
        self._cancelling = False
        self._left: Once[Any] = Once()
        self.follower = Follower(ctx.reactor, conn, path, ctx.view, ctx.interactive,
                                 only_watched=True)

    def pressed(self, presses: int) -> None:
        """Ctrl-C: cancel first, leave running the second time."""
        if presses == 1:
            self._cancel()
        elif not self._left.called:
            self.follower.stop()
            self._left.fire(errors.Interrupted(self._leaving()))

    def _leaving(self) -> str:
        follow = "follow it with: claudews-client tail %s" % (self._path,)
        if self._prompt_id is None:
            return "left the prompt running on the server; " + follow
        return "stopped waiting; %s is left to the server, which was asked to cancel it; %s" % (
            self._prompt_id, follow)

    def _cancel(self) -> None:
        self._cancelling = True
        self.follower.stop()
        self._ctx.view.note(
            "Ctrl-C: cancelling %s on the server (Ctrl-C again: exit without waiting)"
            % (self._prompt_id or "the prompt",), "yellow")
        if self._prompt_id is not None:
            self._send_cancel()

    def _send_cancel(self) -> None:
        d = self._conn.request("cancel", path=self._path, prompt_id=self._prompt_id)
        # not_found: it finished meanwhile; its prompt.finished says how.
        d.addErrback(lambda failure: self._ctx.view.note("cancel: %s" % (failure.value,)))

    async def run(self) -> int:
        result = await race(
            self._conn.subscribe(self._path, self.follower.frame), self._left.when())
        self.follower.subscribed(result, None)
        reply = await race(
            self._conn.request("prompt", path=self._path, prompt=self._text),
            self._left.when(), self._conn.lost.when())
        self._prompt_id = str(reply.get("prompt_id"))
        self.follower.watch(self._prompt_id)
        if self._cancelling:
            self._send_cancel()
        finished = await race(
            self.follower.finished.when(), self._conn.lost.when(), self._left.when())
        return self._outcome(finished)

    def _outcome(self, finished: JSON) -> int:
        status = finished.get("status")
        if self._cancelling and status == "cancelled":
            raise errors.Interrupted("cancelled %s on the server" % (self._prompt_id,))
        if status == "completed":
            return errors.OK
        return errors.PROMPT_NOT_COMPLETED


async def prompt(ctx: Context, conn: Connection, args: argparse.Namespace) -> int:
    run = PromptRun(ctx, conn, project_path(args.path), args.text)
    ctrl_c = CtrlC(ctx.reactor, run.pressed).install()
    try:
        return await run.run()
    finally:
        ctrl_c.restore()
        run.follower.stop()
