import pytest

from tests.harness import Server


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
