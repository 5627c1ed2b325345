#!/usr/bin/env python3
"""
The floor for bench/perf.py: the least a Twisted and Autobahn server can do
to broadcast a CLI's lines to WebSocket clients, to measure claudews
against.

A bare C{WebSocketServerFactory}: no authentication, no storage, no
request protocol. A client's path names its channel (C{/} by default).
A text message from any client is a workload::

    {"channel": "/p1", "prompt": "lines=1000 rate=50 size=400"}

for which the floor spawns the stand-in CLI (bench/standin_cli.py, or
the C{--standin} executable, with C{reactor.spawnProcess}, the prompt
written on its stdin as the real CLI's C{user} line, as claudews does), splits its stdout into lines, and
for each line calls C{prepareMessage} once and C{sendPreparedMessage} to
every client of the channel. The stand-in's stdin is closed after its
C{result} line, so it exits.

Run by bench/perf.py::

    python bench/floor.py [--port 0] [--standin bench/standin_cli.py]

It prints C{listening on PORT} once it listens.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "standin_cli.py")
BASE_ARGS = ["-p", "--input-format", "stream-json", "--output-format", "stream-json",
             "--verbose", "--permission-prompt-tool", "stdio"]


def build(reactor, standin):
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet import protocol

    class StandIn(protocol.ProcessProtocol):
        def __init__(self, factory, channel, prompt):
            self.factory = factory
            self.channel = channel
            self.prompt = prompt
            self.partial = b""

        def connectionMade(self):
            self.transport.write(json.dumps({
                "type": "user", "message": {"role": "user", "content": self.prompt},
                "parent_tool_use_id": None, "session_id": "",
            }).encode("utf-8") + b"\n")

        def outReceived(self, data):
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                if line:
                    self.factory.broadcast(self.channel, line)
                    if line.startswith(b'{"type":"result"'):
                        self.transport.closeStdin()

        def errReceived(self, data):
            sys.stderr.buffer.write(data)

    class Floor(WebSocketServerProtocol):
        def onConnect(self, request):
            self.channel = request.path or "/"

        def onOpen(self):
            self.factory.channels.setdefault(self.channel, {})[self] = None

        def onMessage(self, payload, isBinary):
            work = json.loads(payload)
            self.factory.run(work.get("channel", "/"), work["prompt"])

        def onClose(self, wasClean, code, reason):
            members = self.factory.channels.get(getattr(self, "channel", None))
            if members is not None:
                members.pop(self, None)

    class FloorFactory(WebSocketServerFactory):
        protocol = Floor

        def __init__(self):
            super().__init__()
            self.channels = {}

        def run(self, channel, prompt):
            # By its path, as claudews runs its CLI: the stand-in's
            # shebang names the interpreter.
            reactor.spawnProcess(
                StandIn(self, channel, prompt), standin, [standin, *BASE_ARGS],
                env=dict(os.environ))

        def broadcast(self, channel, line):
            prepared = self.prepareMessage(line)
            for client in self.channels.get(channel, ()):
                client.sendPreparedMessage(prepared)

    return FloorFactory()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--standin", default=STANDIN)
    args = parser.parse_args()
    from twisted.internet import reactor

    factory = build(reactor, args.standin)
    # The listen backlog is the default, as claudews' endpoint has it.
    port = reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    sys.stdout.write("listening on %d\n" % (port.getHost().port,))
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
