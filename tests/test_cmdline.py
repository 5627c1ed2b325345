"""
Tests for L{claudews.cmdline}: settings merged from the command line, a
TOML file and the environment, and the errors that name the source at fault.
"""

import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from claudews.cmdline import Options, settings_from
from tests.settingsfiles import SettingsFiles


class PrecedenceTests(SettingsFiles, SynchronousTestCase):
    """
    A flag beats the file, the file beats the environment, which beats the
    default.
    """

    def test_fileOverDefault(self):
        """A file value replaces the default."""
        self.assertEqual(self.load("timeout = 12.5\n").timeout, 12.5)

    def test_flagOverFile(self):
        """A flag replaces the file's value."""
        s = self.load("timeout = 12.5\nmax-running = 2\n", timeout="7")
        self.assertEqual((s.timeout, s.max_running), (7.0, 2))

    def test_tokenPrecedence(self):
        """Token: flag > file > CLAUDEWS_TOKEN."""
        self.environ["CLAUDEWS_TOKEN"] = "from-env"
        self.assertEqual(self.load().token, "from-env")
        self.assertEqual(self.load('token = "from-file"\n').token, "from-file")
        self.assertEqual(
            self.load('token = "from-file"\n', token="from-flag").token, "from-flag"
        )

    def test_emptyEnvTokenIgnored(self):
        """An empty CLAUDEWS_TOKEN is as good as unset."""
        self.environ["CLAUDEWS_TOKEN"] = ""
        self.assertIsNone(self.load().token)

    def test_badEnvTokenNamed(self):
        """A bad token from the environment is reported as such."""
        self.environ["CLAUDEWS_TOKEN"] = "has space"
        self.assertIn("CLAUDEWS_TOKEN", self.assertUsage())

    def test_repeatableFlagReplacesFileList(self):
        """--project-root on the command line replaces the file's list."""
        a, b, c = (self.directory(n) for n in "abc")
        s = self.load('project-root = ["%s", "%s"]\n' % (a, b))
        self.assertEqual(s.project_roots, (a, b))
        s = self.load('project-root = ["%s", "%s"]\n' % (a, b), project_root=[c])
        self.assertEqual(s.project_roots, (c,))

    def test_dashesOrUnderscores(self):
        """File keys may use dashes or underscores, and plural field names."""
        a = self.directory("a")
        s = self.load(
            'max_running = 3\nidle-timeout = 9\nproject_roots = ["%s"]\n' % (a,)
        )
        self.assertEqual((s.max_running, s.idle_timeout, s.project_roots), (3, 9.0, (a,)))

    def test_twoSpellingsOfOneKey(self):
        """Setting a key twice under two spellings is an error."""
        message = self.assertUsage("max_running = 3\nmax-running = 4\n")
        self.assertIn("max_running", message)
        self.assertIn("max-running", message)


class OptionsTests(SettingsFiles, SynchronousTestCase):
    """
    L{Options} parses a command line into C{settings}.
    """

    def parse(self, argv):
        options = Options(environ=self.environ)
        options.parseOptions(argv)
        return options.settings

    def test_flags(self):
        """Every documented flag reaches its setting."""
        a, b, data = self.directory("a"), self.directory("b"), self.directory("d")
        s = self.parse([
            "--listen", "tcp:9000", "--data", data, "--claude-bin", "/opt/claude",
            "--token", "t0k3n", "--no-auth", "--project-root", a,
            "--project-root=" + b, "--allowed-origin", "https://a.example",
            "--allowed-origin", "http://b.example:81", "--allowed-host", "h:1",
            "--timeout", "1.5", "--max-running", "2", "--idle-timeout", "3",
            "--permission-timeout", "4", "--fsync", "every",
        ])
        self.assertEqual(
            (s.listen, s.data, s.claude_bin, s.token, s.no_auth),
            ("tcp:9000", data, "/opt/claude", "t0k3n", True),
        )
        self.assertEqual(s.project_roots, (a, b))
        self.assertEqual(s.allowed_origins, ("https://a.example", "http://b.example:81"))
        self.assertEqual(s.allowed_hosts, ("h:1",))
        self.assertEqual((s.timeout, s.max_running, s.idle_timeout), (1.5, 2, 3.0))
        self.assertEqual((s.permission_timeout, s.fsync), (4.0, "every"))

    def test_configFile(self):
        """--config loads the file; flags still win."""
        path = self.write("timeout = 5\nmax-running = 9\n")
        s = self.parse(["--config", path, "--max-running", "1"])
        self.assertEqual((s.timeout, s.max_running), (5.0, 1))

    def test_absentFlagKeepsFileValue(self):
        """Not passing --no-auth leaves the file's no-auth = true alone."""
        path = self.write("no-auth = true\n")
        self.assertTrue(self.parse(["--config", path]).no_auth)

    def test_badFlagIsUsageError(self):
        """A bad flag value fails parsing with the flag's name."""
        e = self.assertRaises(usage.UsageError, self.parse, ["--max-running", "two"])
        self.assertIn("--max-running", str(e))

    def test_help(self):
        """The help text names the options and the defaults."""
        text = str(Options(environ=self.environ))
        for word in ["--config", "--project-root", "--allowed-origin", "--no-auth",
                     "tcp:8765:interface=127.0.0.1", "CLAUDEWS_TOKEN"]:
            self.assertIn(word, text)


class FileErrorTests(SettingsFiles, SynchronousTestCase):
    """
    Problems with the file are usage errors naming the file and key.
    """

    def test_unknownKey(self):
        """An unknown key is named, with a suggestion."""
        message = self.assertUsage("max-runing = 3\n")
        self.assertIn("'max-runing'", message)
        self.assertIn("max-running", message)

    def test_unknownTable(self):
        """A table that is not a setting is an unknown key."""
        self.assertIn("'server'", self.assertUsage("[server]\nport = 1\n"))

    def test_badToml(self):
        """Text that is not TOML is reported as such."""
        self.assertIn("not valid TOML", self.assertUsage("timeout = = 3\n"))

    def test_notUtf8(self):
        """A file that is not UTF-8 is not valid TOML."""
        path = os.path.join(self.top, "bad.toml")
        with open(path, "wb") as f:
            f.write(b'claude-bin = "\xff"\n')
        e = self.assertRaises(usage.UsageError, settings_from, {}, path, self.environ)
        self.assertIn("not valid TOML", str(e))

    def test_unreadable(self):
        """A missing file, or a directory, cannot be read."""
        for path in [os.path.join(self.top, "nope.toml"), self.top]:
            e = self.assertRaises(usage.UsageError, settings_from, {}, path, self.environ)
            self.assertIn("cannot read config file", str(e))

    def test_wrongTypeNamesKey(self):
        """A value of the wrong type names the file and the key."""
        message = self.assertUsage('timeout = "5"\n')
        self.assertIn("claudews.toml: timeout", message)
        self.assertIn("number", message)
