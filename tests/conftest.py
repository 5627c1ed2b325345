import os
import signal

import pytest

from tests.harness import Server, alive, read_pids


@pytest.fixture
def make_server(tmp_path):
    """
    Start servers (real twistd processes) that are killed after the test,
    whatever happens in it.
    """
    servers = []

    def make(*args, **kwargs):
        server = Server(tmp_path, *args, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def tool_server(tmp_path, make_server):
    """
    A server whose fake CLI records its tool pids, and a client subscribed
    to its project: (server, client, path, pidfile).
    """
    pidfile = str(tmp_path / "pids")
    server = make_server(env={"FAKE_CLAUDE_PIDFILE": pidfile})
    client = server.connect()
    path = server.project_dir("app")
    client.ok("project.create", path=path)
    client.ok("subscribe", path=path)
    yield server, client, path, pidfile
    # A test that failed before its server ended its tools (or that killed
    # the server) leaves them running: end them here, whatever happened.
    server.kill()
    for pid in alive(read_pids(pidfile)):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
