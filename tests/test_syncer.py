"""
Tests for claudews.syncer: fsyncs in threads, back on the reactor thread.
"""

import errno
import os
import tempfile
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor

from claudews import syncer
from claudews.syncer import InlineSyncer, Syncer, sync_now


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _file(directory):
    fd, path = tempfile.mkstemp(dir=directory)
    os.write(fd, b"data\n")
    return fd, path


@pytest_twisted.inlineCallbacks
def test_fsyncs_run_in_another_thread_and_fire_on_the_reactors(tmp_path, monkeypatch):
    """The fsync runs off the reactor thread; the Deferred fires back on it; the fds are closed."""
    threads = []
    real = os.fsync

    def fsync(fd):
        threads.append(threading.current_thread())
        real(fd)

    monkeypatch.setattr(syncer.os, "fsync", fsync)
    before = _open_fds()
    fd, _ = _file(str(tmp_path))
    s = Syncer(reactor)
    try:
        yield s.sync([os.dup(fd)], str(tmp_path))
        assert threading.current_thread() is threading.main_thread()
        assert threads and all(t is not threading.main_thread() for t in threads)
        # The file's duplicate and the directory's descriptor are closed.
        os.close(fd)
        assert _open_fds() == before
    finally:
        s.stop()


@pytest_twisted.inlineCallbacks
def test_a_failed_fsync_fails_the_deferred(tmp_path, monkeypatch):
    """An fsync error reaches the caller, and every descriptor is closed anyway."""

    def fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(syncer.os, "fsync", fsync)
    before = _open_fds()
    fds = [_file(str(tmp_path))[0] for _ in range(2)]
    s = Syncer(reactor)
    try:
        with pytest.raises(OSError) as caught:
            yield s.sync(fds, None)
        assert caught.value.errno == errno.EIO
        assert _open_fds() == before
    finally:
        s.stop()


def test_inline_syncer_syncs_at_once(tmp_path):
    """The inline syncer's Deferred has fired when sync returns."""
    fd, _ = _file(str(tmp_path))
    done = InlineSyncer().sync([fd], str(tmp_path))
    assert done.called
    with pytest.raises(OSError):
        os.fstat(fd)


def test_sync_now_closes_every_fd_when_the_first_fails(tmp_path, monkeypatch):
    """One failure does not leak the descriptors after it."""
    calls = []

    def fsync(fd):
        calls.append(fd)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(syncer.os, "fsync", fsync)
    fds = [_file(str(tmp_path))[0] for _ in range(3)]
    with pytest.raises(OSError):
        sync_now(fds, None)
    assert calls == fds
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_directory_removed_meanwhile_is_not_an_error(tmp_path):
    """A deleted project's directory is gone by the time its fsync runs: nothing to do."""
    fd, _ = _file(str(tmp_path))
    sync_now([fd], str(tmp_path / "gone"))
    with pytest.raises(OSError):
        os.fstat(fd)
