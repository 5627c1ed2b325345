"""
The server as an operator meets it: installed with pip, run as a twistd
daemon, and started without a token.
"""

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time

import psutil
import pytest
import websocket

from tests.harness import FAKE_CLAUDE, ROOT, TWISTD, Client

pytestmark = pytest.mark.integration


def clean_env(**extra):
    """The environment without anything that points at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLAUDEWS_TOKEN")}
    env.update(extra)
    return env


def poll(check, timeout=15.0, interval=0.02):
    """
    Call C{check} until it returns something true, and return that; fail
    after C{timeout} seconds.  For what only shows in the file system (a
    daemon's pid file and log), which cannot be waited on otherwise.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for %r" % (check,)
        time.sleep(interval)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


# -- pip install


def can_build_offline():
    """
    Whether setuptools here can build a wheel by itself: from 70.1 on it
    can; before that it needs the C{wheel} package.  Otherwise pip builds in
    an isolated environment it fills from the package index.
    """
    try:
        import setuptools
    except ImportError:
        return False
    version = tuple(int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2])
    if version >= (70, 1):
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


def installed_here():
    """Whether the running interpreter has claudews without the checkout."""
    found = subprocess.run(
        [sys.executable, "-c", "import claudews"], env=clean_env(), cwd="/",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return found.returncode == 0


def test_pip_install_makes_the_twistd_plugin_discoverable(tmp_path):
    """After a plain pip install, twistd lists claudews and its options."""
    source = tmp_path / "main-copy"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "data", "__pycache__", "*.egg-info", "build", "dist",
            "dropin.cache", ".pytest_cache", ".hypothesis", "_trial_temp*", ".cli",
            "node_modules",
        ),
    )
    venv = tmp_path / "venv"
    env = clean_env()
    # The running interpreter provides pip and the dependencies; only
    # claudews is new.  When it is itself a virtualenv (CI), the new one's
    # "system" site is the base interpreter's, so its packages are added by
    # a .pth file.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True, env=env, timeout=120,
    )
    python = str(venv / "bin" / "python")
    if sys.prefix != sys.base_prefix:
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True, env=env, stdout=subprocess.PIPE, text=True,
        ).stdout.strip()
        ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
        with open(os.path.join(purelib, "parent.pth"), "w") as f:
            f.write("".join(path + "\n" for path in sorted(ours)))
    install = [python, "-m", "pip", "install", "--no-deps", "--no-cache-dir", str(source)]
    if can_build_offline():
        install.insert(-1, "--no-build-isolation")
    installed = subprocess.run(
        install, env=env, cwd=str(tmp_path), timeout=300,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert installed.returncode == 0, installed.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def twistd(python, *args):
        return subprocess.run(
            [python, "-c", TWISTD, *args], env=env, cwd=str(elsewhere), timeout=60,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    listing = twistd(python, "--help")
    assert listing.returncode == 0, listing.stdout
    assert re.search(r"^\s+claudews\s", listing.stdout, re.M), listing.stdout
    if not installed_here():
        # The plugin came from the install: without it twistd does not know it.
        bare = twistd(sys.executable, "--help")
        assert not re.search(r"^\s+claudews\s", bare.stdout, re.M), bare.stdout
    options = twistd(python, "claudews", "--help")
    assert options.returncode == 0, options.stdout
    assert "--listen=" in options.stdout
    located = subprocess.run(
        [python, "-c", "import claudews; print(claudews.__file__)"],
        env=env, cwd=str(elsewhere), stdout=subprocess.PIPE, text=True, check=True,
    )
    assert located.stdout.startswith(str(venv)), located.stdout


# -- daemon mode


def test_twistd_daemon_writes_a_pidfile_serves_and_stops_cleanly(tmp_path):
    """twistd without -n daemonizes, serves, and ends cleanly on SIGTERM."""
    pidfile = tmp_path / "claudews.pid"
    logfile = tmp_path / "claudews.log"
    root = tmp_path / "projects"
    home = tmp_path / "home"
    for d in (root, home):
        d.mkdir()
    env = clean_env(PYTHONPATH=ROOT, HOME=str(home))
    started = time.monotonic()
    launched = subprocess.run(
        [sys.executable, "-c", TWISTD, "--pidfile=%s" % pidfile, "--logfile=%s" % logfile,
         "claudews", "--listen", "tcp:0:interface=127.0.0.1", "--data", str(tmp_path / "data"),
         "--claude-bin", FAKE_CLAUDE, "--project-root", str(root), "--token", "daemon-token"],
        env=env, cwd=str(tmp_path), timeout=30, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    pid = None
    try:
        assert launched.returncode == 0, launched.stdout
        assert time.monotonic() - started < 15
        pid = int(poll(lambda: read(pidfile).strip()))
        assert psutil.pid_exists(pid)
        line = poll(lambda: re.search(r"listening.*://[^/]+:(\d+)/ws", read(logfile)))
        port = int(line.group(1))

        c = Client("ws://127.0.0.1:%d/ws?token=daemon-token" % (port,))
        path = os.path.realpath(str(root / "app"))
        os.mkdir(path)
        project = c.ok("project.create", path=path)["project"]
        assert project["path"] == path
        c.close()

        os.kill(pid, signal.SIGTERM)
        psutil.Process(pid).wait(timeout=15)
        assert not psutil.pid_exists(pid)
        assert not pidfile.exists()
        log = read(logfile)
        assert "Server Shut Down." in log
        assert "Traceback" not in log, log
    finally:
        if pid is not None and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


# -- the generated token


def test_a_generated_token_is_stored_logged_once_and_required(make_server):
    """Without a configured token one is generated, kept 0600, and enforced."""
    server = make_server(token=None)
    token_file = os.path.join(server.data, "auth_token")
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = read(token_file).strip()
    assert len(token) >= 32
    base = "ws://127.0.0.1:%d/ws" % (server.port,)
    log = "".join(server.log)
    assert "%s?token=%s" % (base, token) in log, log

    by_query = Client(base + "?token=" + token)
    assert by_query.ok("server.info")["protocol"] == 1
    by_query.close()
    by_header = Client(base, header=["Authorization: Bearer " + token])
    assert by_header.ok("server.info")["protocol"] == 1
    by_header.close()

    for url in (base, base + "?token=" + token[:-1] + "x"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            Client(url)
        assert refused.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        Client(base, header=["Authorization: Bearer wrong"])
    assert refused.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        Client(base + "?token=" + token, suppress_origin=False, origin="http://evil.example")
    assert refused.value.status_code == 403

    server.stop_cleanly()
    server.start()
    log = "".join(server.log)
    assert token not in log, log
    assert "auth_token" in log
    again = Client("ws://127.0.0.1:%d/ws?token=%s" % (server.port, token))
    assert again.ok("server.info")["protocol"] == 1
    again.close()
