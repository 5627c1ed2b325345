"""
Tests for L{claudews.datalock}: one owner per data directory.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from claudews.datalock import LOCK_FILE, DataDirectoryLocked, DataLock

#: A child that takes the lock, says so, and waits to be killed.
_HOLDER = (
    "import sys; from claudews.datalock import DataLock;"
    " DataLock.acquire(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
)


class DataLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = tempfile.mkdtemp(prefix="claudews-lock-")
        self.addCleanup(shutil.rmtree, self.data, True)
        self.file = os.path.join(self.data, LOCK_FILE)

    def read(self) -> str:
        with open(self.file) as f:
            return f.read()

    def test_the_holder_records_its_pid_in_a_private_file(self) -> None:
        """The lock file is mode 0600 and names this process."""
        lock = DataLock.acquire(self.data)
        self.addCleanup(lock.release)
        self.assertEqual(self.read().strip(), str(os.getpid()))
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)
        self.assertTrue(lock.held)

    def test_a_second_owner_is_refused_with_the_holders_pid(self) -> None:
        """While one lock is held, a second acquire fails and names the holder."""
        lock = DataLock.acquire(self.data)
        self.addCleanup(lock.release)
        e = self.assertRaises(DataDirectoryLocked, DataLock.acquire, self.data)
        self.assertEqual(e.pid, os.getpid())
        self.assertIn("in use by process %d" % (os.getpid(),), str(e))
        self.assertIn(self.data, str(e))
        # The refusal left the holder's pid in place.
        self.assertEqual(self.read().strip(), str(os.getpid()))

    def test_released_lock_can_be_taken_again(self) -> None:
        """After release the directory is free, and the file says no pid."""
        DataLock.acquire(self.data).release()
        self.assertEqual(self.read(), "")
        lock = DataLock.acquire(self.data)
        self.addCleanup(lock.release)
        self.assertTrue(lock.held)

    def test_releasing_twice_is_harmless(self) -> None:
        """A second release does nothing."""
        lock = DataLock.acquire(self.data)
        lock.release()
        lock.release()
        self.assertFalse(lock.held)

    def test_another_process_holds_it_until_it_is_killed(self) -> None:
        """A live process's lock refuses us; SIGKILL frees it with no stale state."""
        child = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, self.data],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        self.assertEqual(child.stdout.readline().strip(), "held")
        e = self.assertRaises(DataDirectoryLocked, DataLock.acquire, self.data)
        self.assertEqual(e.pid, child.pid)
        child.kill()
        child.wait()
        # The file still names the dead holder; the kernel released the lock.
        self.assertEqual(self.read().strip(), str(child.pid))
        lock = DataLock.acquire(self.data)
        self.addCleanup(lock.release)
        self.assertEqual(self.read().strip(), str(os.getpid()))

    def test_record_pid_rewrites_the_file(self) -> None:
        """After a fork the pid is written again (here: the same one, no leftovers)."""
        lock = DataLock.acquire(self.data)
        self.addCleanup(lock.release)
        with open(self.file, "w") as f:
            f.write("123456789\n")
        lock.record_pid()
        self.assertEqual(self.read(), "%d\n" % (os.getpid(),))

    def test_a_missing_directory_is_an_os_error(self) -> None:
        """acquire does not create the directory; that is the caller's job."""
        self.assertRaises(OSError, DataLock.acquire, os.path.join(self.data, "nope"))
