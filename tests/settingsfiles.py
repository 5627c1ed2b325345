"""
Temporary directories and TOML files for the tests of L{claudews.config}
and L{claudews.cmdline}: a fake home, files to load, settings from them.
"""

import os
import shutil
import tempfile

from twisted.python import usage

from claudews.cmdline import settings_from


class SettingsFiles:
    """
    A mixin for a C{TestCase}: C{self.top}, a temporary tree holding a
    home directory, and C{load} to build settings from a file and flags.
    """

    def setUp(self):
        self.top = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.top)
        self.home = os.path.join(self.top, "home")
        os.mkdir(self.home)
        self.environ = {"HOME": self.home}

    def write(self, text, name="claudews.toml"):
        path = os.path.join(self.top, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def directory(self, name):
        path = os.path.join(self.top, name)
        os.mkdir(path)
        return path

    def load(self, text=None, **flags):
        path = None if text is None else self.write(text)
        return settings_from(flags, path, self.environ)

    def assertUsage(self, text=None, **flags):
        e = self.assertRaises(usage.UsageError, self.load, text, **flags)
        return str(e)
