"""
docs/scaling.rst, tried: two claudews servers on two loopback ports behind
a real nginx that routes by path prefix (/a/ws and /b/ws), one client
reaching both through it, a WebSocket upgrade each, and a reconnect with
C{since} after one server restarted. Also the README's C{--listen ssl:}
example with a self-signed certificate.

nginx is Debian's package (.ci/run installs it). Where it is missing the
nginx test is skipped, except in CI (C{CI} set), where that is a failure.
"""

import os
import select
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from tests.harness import DEADLINE, Client, Server

pytestmark = pytest.mark.integration

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)

CONFIG = """\
pid {dir}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location /a/ {{ proxy_pass http://127.0.0.1:{a}/; include {dir}/ws.conf; }}
        location /b/ {{ proxy_pass http://127.0.0.1:{b}/; include {dir}/ws.conf; }}
    }}
}}
"""

#: What docs/scaling.rst says every claudews location needs.
WS_CONF = """\
proxy_http_version 1.1;
proxy_set_header Upgrade $http_upgrade;
proxy_set_header Connection $connection_upgrade;
proxy_set_header Host $http_host;
proxy_read_timeout 1h;
proxy_send_timeout 1h;
proxy_buffering off;
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nginx(tmp_path):
    if NGINX is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (apt-get install nginx); CI must run this test")
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does)")
    started = []

    def start(a, b, port):
        directory = tmp_path / "nginx"
        directory.mkdir(exist_ok=True)
        (directory / "ws.conf").write_text(WS_CONF)
        config = directory / "nginx.conf"
        config.write_text(CONFIG.format(dir=directory, port=port, a=a, b=b))
        process = subprocess.Popen(
            [NGINX, "-c", str(config), "-p", str(directory), "-e", "stderr", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        started.append(process)
        # Workers start once the port is bound: wait for nginx to say so.
        deadline = time.monotonic() + DEADLINE
        seen = b""
        while b"start worker process" not in seen:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([process.stderr], [], [], max(0, remaining))
            chunk = os.read(process.stderr.fileno(), 4096) if ready else b""
            assert chunk, "nginx did not start:\n" + seen.decode("utf-8", "replace")
            seen += chunk
        return process

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=DEADLINE)
        process.stderr.close()


def server(tmp_path, name, *args):
    directory = tmp_path / name
    directory.mkdir()
    return Server(directory, *args).start()


def test_two_servers_behind_nginx_answer_one_client_and_resume_after_a_restart(tmp_path, nginx):
    """One client reaches two servers through nginx by path; after A restarts, `since` replays what it missed."""
    port = free_port()
    host = "--allowed-host", "127.0.0.1:%d" % (port,)
    a, b = server(tmp_path, "a", *host), server(tmp_path, "b", *host)
    try:
        nginx(a.port, b.port, port)
        through = {s: "ws://127.0.0.1:%d/%s/ws?token=test-token" % (port, name)
                   for s, name in ((a, "a"), (b, "b"))}
        paths = {a: a.project_dir("app"), b: b.project_dir("app")}
        seen = {}
        for s in (a, b):
            c = Client(through[s])
            c.ok("project.create", path=paths[s])
            c.ok("subscribe", path=paths[s])
            done = c.finished(c.ok("prompt", path=paths[s], prompt="hello")["prompt_id"])
            assert done["status"] == "completed", done
            seen[s] = done["seq"]
            c.close()
        # Each server holds only its own project: the prefix picked the server.
        c = Client(through[a])
        assert [p["path"] for p in c.ok("project.list")["projects"]] == [paths[a]]
        # A prompt on A that the first client, gone, did not see
        # (subscribed first: a prompt may finish before a later subscribe).
        c.ok("subscribe", path=paths[a])
        missed = c.ok("prompt", path=paths[a], prompt="again")["prompt_id"]
        assert c.finished(missed)["status"] == "completed"
        c.close()

        a.args[a.args.index("--listen") + 1] = "tcp:%d:interface=127.0.0.1" % (a.port,)
        a.stop_cleanly()
        assert Client(through[b]).ok("server.info")["protocol"] == 1
        a.start()

        c = Client(through[a])
        c.ok("subscribe", path=paths[a], since=seen[a])
        replayed = c.finished(missed)
        assert replayed["status"] == "completed"
        seqs = [e["seq"] for e in c.events if e.get("type") == "event"]
        assert seqs[0] == seen[a] + 1 and seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        assert all(e["prompt_id"] == missed for e in c.events if e.get("type") == "event")
        c.close()
    finally:
        a.kill()
        b.kill()


def test_the_readmes_ssl_listen_example_serves_wss(tmp_path):
    """`--listen ssl:PORT:privateKey=KEY:certKey=CERT` with a self-signed certificate answers over wss://."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    s = Server(tmp_path, "--listen",
               "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (key, cert))
    s.start()
    try:
        assert any("wss://127.0.0.1:%d/ws" % (s.port,) in line for line in s.log), s.log
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        c = Client("wss://127.0.0.1:%d/ws?token=test-token" % (s.port,),
                   sslopt={"context": context})
        assert c.ok("server.info")["protocol"] == 1
        c.close()
        s.stop_cleanly()
    finally:
        s.kill()
