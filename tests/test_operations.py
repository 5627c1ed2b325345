"""
The server as an operator runs it: one owner per data directory, failing
fast with one line, configuration from the environment, private logs,
JSON logs and the daemon's life with its pid file. Real twistd processes.
"""

import json
import os
import signal
import socket
import stat
import subprocess
import sys

import psutil
import pytest

from tests.harness import FAKE_CLAUDE, ROOT, TWISTD, Client, Server
from tests.test_packaging import clean_env, poll, read

pytestmark = pytest.mark.integration


def twistd(tmp_path, *args, env=None, timeout=60):
    """Run twistd to its end; its exit status and all it printed."""
    done = subprocess.run(
        [sys.executable, "-c", TWISTD, *args],
        env=clean_env(PYTHONPATH=ROOT, HOME=str(tmp_path), **(env or {})),
        cwd=str(tmp_path), timeout=timeout, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return done.returncode, done.stdout


def claudews_args(tmp_path, *extra):
    root = tmp_path / "projects"
    root.mkdir(exist_ok=True)
    return ["claudews", "--data", str(tmp_path / "data"), "--claude-bin", FAKE_CLAUDE,
            "--project-root", str(root), *extra]


# -- one owner per data directory


def test_a_second_server_on_the_same_data_directory_refuses_to_start(tmp_path, make_server):
    """Two real servers, one data directory: the second exits 1 naming the first's pid."""
    first = make_server()
    code, out = twistd(tmp_path, "-n", "--pidfile=", *claudews_args(tmp_path, "--listen", "tcp:0:interface=127.0.0.1"))
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert "in use by process %d" % (first.process.pid,) in lines[0], out
    # The first one is untouched.
    c = first.connect()
    assert c.ok("server.info")["protocol"] == 1
    c.close()


def test_after_sigkill_the_lock_is_taken_over(tmp_path, make_server):
    """A server killed with SIGKILL leaves no stale lock: the next one starts."""
    server = make_server()
    dead = server.process.pid
    server.kill()
    assert not psutil.pid_exists(dead) or psutil.Process(dead).status() == psutil.STATUS_ZOMBIE
    server.start()
    with open(os.path.join(server.data, "claudews.lock")) as f:
        assert f.read().strip() == str(server.process.pid)
    c = server.connect()
    assert c.ok("server.info")["protocol"] == 1
    c.close()
    server.stop_cleanly()


# -- fail fast


def test_a_busy_port_exits_non_zero_with_one_line(tmp_path):
    """Listening on a port in use ends twistd with status 1 and one line."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        code, out = twistd(tmp_path, "-n", "--pidfile=", *claudews_args(
            tmp_path, "--listen", "tcp:%d:interface=127.0.0.1" % (port,)))
    finally:
        busy.close()
    assert code == 1, out
    assert out.strip().splitlines() == [
        "claudews: cannot listen on tcp:%d:interface=127.0.0.1: Couldn't listen on"
        " 127.0.0.1:%d: [Errno 98] Address already in use." % (port, port)
    ], out


@pytest.mark.parametrize("args, env, words", [
    (["--max-running", "two"], {}, "claudews: --max-running: must be an integer number, not 'two'"),
    ([], {"CLAUDEWS_MAX_RUNNING": "0"}, "claudews: CLAUDEWS_MAX_RUNNING: must be at least 1, not 0"),
    (["--config", "missing.toml"], {}, "claudews: cannot read config file missing.toml"),
])
def test_a_bad_setting_is_one_line_without_usage(tmp_path, args, env, words):
    """A bad value or an unreadable file: status 1, one line, no usage text."""
    code, out = twistd(tmp_path, "-n", "--pidfile=", *claudews_args(tmp_path, *args), env=env)
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(words), out
    assert "Usage:" not in out


def test_an_unknown_flag_still_shows_the_usage(tmp_path):
    """An unknown flag is a usage error: the usage text, then the line."""
    code, out = twistd(tmp_path, "-n", "claudews", "--no-such-flag")
    assert code == 1, out
    assert "Usage:" in out and "--listen=" in out
    assert "no-such-flag" in out.strip().splitlines()[-1]


def test_an_unusable_data_directory_is_one_line(tmp_path):
    """A data path that is a file: status 1, one line naming it."""
    (tmp_path / "data").write_text("")
    code, out = twistd(tmp_path, "-n", "--pidfile=", *claudews_args(tmp_path))
    assert code == 1, out
    [line] = out.strip().splitlines()
    assert line.startswith("claudews: cannot use the data directory %s" % (tmp_path / "data",)), out


def test_version_is_claudews_version(tmp_path):
    """twistd -n claudews --version prints claudews' version."""
    from claudews import __version__

    code, out = twistd(tmp_path, "-n", "claudews", "--version")
    assert code == 0, out
    assert out.startswith("claudews %s (Twisted " % (__version__,)), out


# -- the environment


def test_the_environment_configures_the_server(tmp_path, make_server):
    """CLAUDEWS_MAX_RUNNING=8 reaches server.info's limits; a flag still wins over it."""
    server = make_server(env={"CLAUDEWS_MAX_RUNNING": "8", "CLAUDEWS_TIMEOUT": "9"})
    c = server.connect()
    info = c.ok("server.info")
    c.close()
    assert info["limits"]["max_running"] == 8, info
    server.stop_cleanly()
    server.args += ["--max-running", "3"]
    server.start()
    c = server.connect()
    assert c.ok("server.info")["limits"]["max_running"] == 3
    c.close()


# -- logs


def test_a_foreground_log_file_is_private_and_holds_no_token(tmp_path):
    """twistd -n --logfile FILE: FILE is 0600 and its start line names the token file."""
    logfile = tmp_path / "claudews.log"
    process = subprocess.Popen(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=%s" % (logfile,),
         *claudews_args(tmp_path, "--listen", "tcp:0:interface=127.0.0.1")],
        env=clean_env(PYTHONPATH=ROOT, HOME=str(tmp_path)), cwd=str(tmp_path),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        line = poll(lambda: [l for l in read(logfile).splitlines() if "claudews listening" in l])
        token = read(tmp_path / "data" / "auth_token").strip()
        assert len(token) >= 32
        assert "a new token was generated and stored in %s" % (tmp_path / "data" / "auth_token",) in line[0]
        assert token not in read(logfile)
        assert stat.S_IMODE(os.stat(logfile).st_mode) == 0o600
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert token not in read(logfile)


def test_json_logs_through_the_logger_option(tmp_path):
    """--logger claudews.jsonlog.observer: one JSON object per line, the start line's fields in it."""
    server = Server(tmp_path, token=None)
    process = subprocess.Popen(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logger", "claudews.jsonlog.observer",
         "claudews", *server.args],
        env=server.env, cwd=server.tmp, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    events = []
    try:
        for line in process.stdout:
            event = json.loads(line.lstrip("\x1e"))
            events.append(event)
            if "claudews listening" in event.get("log_format", ""):
                break
        assert events[-1]["file"].endswith("auth_token")
        token = read(os.path.join(server.data, "auth_token")).strip()
        # A logger of unknown destination: the new token is not written.
        assert token not in json.dumps(events)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        process.stdout.close()


# -- the daemon


def _start_daemon(tmp_path, pidfile, logfile):
    code, out = twistd(tmp_path, "--pidfile=%s" % (pidfile,), "--logfile=%s" % (logfile,),
                       *claudews_args(tmp_path, "--listen", "tcp:0:interface=127.0.0.1",
                                      "--token", "daemon-token"))
    assert code == 0, out
    pid = int(poll(lambda: read(pidfile).strip()))
    port = int(poll(lambda: __import__("re").search(
        r"listening on ws://[^/]+:(\d+)/ws", read(logfile))).group(1))
    return pid, port


def test_daemon_stop_with_kill_then_stale_pidfile_after_sigkill(tmp_path):
    """Daemon: starts, serves, stops with kill; after a SIGKILL its stale pid file and lock do not stop the next start."""
    pidfile = tmp_path / "claudews.pid"
    pids = []
    try:
        logfile = tmp_path / "first.log"
        pid, port = _start_daemon(tmp_path, pidfile, logfile)
        pids.append(pid)
        assert stat.S_IMODE(os.stat(logfile).st_mode) == 0o600
        c = Client("ws://127.0.0.1:%d/ws?token=daemon-token" % (port,))
        assert c.ok("server.info")["protocol"] == 1
        c.close()
        # A second daemon on the same data directory: refused on the terminal.
        code, out = twistd(tmp_path, "--pidfile=%s" % (tmp_path / "other.pid"),
                           "--logfile=%s" % (tmp_path / "other.log"), *claudews_args(tmp_path))
        assert code == 1 and "in use by process %d" % (pid,) in out, out
        os.kill(pid, signal.SIGTERM)
        psutil.Process(pid).wait(timeout=30)
        assert not pidfile.exists()

        pid, port = _start_daemon(tmp_path, pidfile, tmp_path / "second.log")
        pids.append(pid)
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(timeout=30)
        assert pidfile.exists()     # stale: nobody removed it

        logfile = tmp_path / "third.log"
        pid, port = _start_daemon(tmp_path, pidfile, logfile)
        pids.append(pid)
        assert "Removing stale pidfile" in read(logfile)
        c = Client("ws://127.0.0.1:%d/ws?token=daemon-token" % (port,))
        assert c.ok("server.info")["protocol"] == 1
        c.close()
        os.kill(pid, signal.SIGTERM)
        psutil.Process(pid).wait(timeout=30)
        assert "Traceback" not in read(logfile)
    finally:
        for pid in pids:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


# -- the systemd unit


def test_the_systemd_unit_runs_twistd_in_the_foreground_and_lets_claudews_stop_its_clis():
    """data/claudews.service: twistd -n, restart on failure, TERM to twistd alone, a stop timeout past the kill grace."""
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(ROOT, "data", "claudews.service"))
    service = unit["Service"]
    assert " -n " in service["ExecStart"] and service["ExecStart"].split()[0].endswith("twistd")
    assert "claudews" in service["ExecStart"].split()
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) > 5 * 2
    assert "ProtectHome" not in service and service["ProtectSystem"] != "strict"
    assert unit["Install"]["WantedBy"]
