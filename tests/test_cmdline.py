"""
Tests for L{claudews.cmdline}: settings merged from the command line, a
TOML file and the environment, and the errors that name the source at fault.
"""

import io
import os
from contextlib import redirect_stdout

from attrs import fields
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from claudews import __version__
from claudews.cmdline import ENVIRONMENT, Options, settings_from
from claudews.config import Settings
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
        """Token: flag > CLAUDEWS_TOKEN > file (issue 12: the environment outranks the file)."""
        self.assertEqual(self.load('token = "from-file"\n').token, "from-file")
        self.environ["CLAUDEWS_TOKEN"] = "from-env"
        self.assertEqual(self.load().token, "from-env")
        self.assertEqual(self.load('token = "from-file"\n').token, "from-env")
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


class EnvironmentTests(SettingsFiles, SynchronousTestCase):
    """
    Every option is also C{CLAUDEWS_<OPTION>}, between the flags and the file.
    """

    def test_everySettingHasAVariable(self):
        """Each setting has one variable, named after its flag or file key."""
        self.assertEqual(set(ENVIRONMENT.values()), {f.name for f in fields(Settings)})
        self.assertEqual(ENVIRONMENT["CLAUDEWS_MAX_RUNNING"], "max_running")
        self.assertEqual(ENVIRONMENT["CLAUDEWS_PROJECT_ROOT"], "project_roots")
        self.assertEqual(ENVIRONMENT["CLAUDEWS_MAX_MESSAGE_BYTES"], "max_message_bytes")

    def test_variableOverFileUnderFlag(self):
        """CLAUDEWS_MAX_RUNNING beats the file and loses to --max-running."""
        self.environ["CLAUDEWS_MAX_RUNNING"] = "8"
        self.assertEqual(self.load().max_running, 8)
        self.assertEqual(self.load("max-running = 2\n").max_running, 8)
        self.assertEqual(self.load("max-running = 2\n", max_running="3").max_running, 3)

    def test_scalarKinds(self):
        """Numbers, booleans and strings parse as their flags do."""
        self.environ.update(
            CLAUDEWS_TIMEOUT="1.5", CLAUDEWS_NO_AUTH="yes", CLAUDEWS_FSYNC="every",
            CLAUDEWS_LISTEN="tcp:9000", CLAUDEWS_MAX_MESSAGE_BYTES="2048",
        )
        s = self.load()
        self.assertEqual(
            (s.timeout, s.no_auth, s.fsync, s.listen, s.max_message_bytes),
            (1.5, True, "every", "tcp:9000", 2048),
        )

    def test_lists(self):
        """Project roots are separated like PATH, other lists by commas."""
        a, b = self.directory("a"), self.directory("b")
        self.environ.update(
            CLAUDEWS_PROJECT_ROOT=a + os.pathsep + b,
            CLAUDEWS_ALLOWED_HOST="h:1, g",
            CLAUDEWS_ALLOWED_ORIGIN="https://a.example",
        )
        s = self.load('project-root = ["%s"]\n' % (b,))
        self.assertEqual(s.project_roots, (a, b))
        self.assertEqual(s.allowed_hosts, ("h:1", "g"))
        self.assertEqual(s.allowed_origins, ("https://a.example",))
        self.assertEqual(self.load(project_root=[b]).project_roots, (b,))

    def test_table(self):
        """A table is a TOML inline table."""
        self.environ["CLAUDEWS_ENV"] = '{ FOO = "bar" }'
        self.assertEqual(self.load().env, (("FOO", "bar"),))

    def test_badValuesNameTheVariable(self):
        """A value that does not parse, or fails its check, names the variable."""
        for variable, value, words in [
            ("CLAUDEWS_MAX_RUNNING", "two", "must be an integer number, not 'two'"),
            ("CLAUDEWS_MAX_RUNNING", "0", "must be at least 1"),
            ("CLAUDEWS_MAX_BOOTING", "-1", "must be at least 0, not -1"),
            ("CLAUDEWS_NO_AUTH", "maybe", "must be true or false"),
            ("CLAUDEWS_ENV", "FOO=bar", "TOML inline table"),
            ("CLAUDEWS_FSYNC", "sometimes", "sometimes"),
        ]:
            environ = dict(self.environ, **{variable: value})
            e = self.assertRaises(usage.UsageError, settings_from, {}, None, environ)
            self.assertIn(variable + ": ", str(e))
            self.assertIn(words, str(e))

    def test_sameMessageAsTheFlag(self):
        """A variable's error is the flag's, under the variable's name."""
        environ = dict(self.environ, CLAUDEWS_TIMEOUT="-1")
        by_env = str(self.assertRaises(usage.UsageError, settings_from, {}, None, environ))
        by_flag = self.assertUsage(timeout="-1")
        self.assertEqual(
            by_env.replace("CLAUDEWS_TIMEOUT", "X"), by_flag.replace("--timeout", "X")
        )

    def test_emptyOrUnknownVariablesIgnored(self):
        """An empty variable is unset; CLAUDEWS_ names of no option are left alone."""
        self.environ.update(CLAUDEWS_TIMEOUT="", CLAUDEWS_TEST_CLAUDE_BIN="/x")
        self.assertEqual(self.load().timeout, 300.0)

    def test_configFileFromTheEnvironment(self):
        """CLAUDEWS_CONFIG names the file when --config does not."""
        self.environ["CLAUDEWS_CONFIG"] = self.write("timeout = 5\n", "env.toml")
        self.assertEqual(settings_from({}, None, self.environ).timeout, 5.0)
        other = self.write("timeout = 6\n", "flag.toml")
        self.assertEqual(settings_from({}, other, self.environ).timeout, 6.0)


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

    def test_version(self):
        """--version prints claudews' version, not Twisted's, and exits 0."""
        out = io.StringIO()
        with redirect_stdout(out):
            e = self.assertRaises(SystemExit, self.parse, ["--version"])
        self.assertEqual(e.code, 0)
        self.assertTrue(out.getvalue().startswith("claudews " + __version__), out.getvalue())

    def test_help(self):
        """The help text names the options and the defaults."""
        text = str(Options(environ=self.environ))
        for word in ["--config", "--project-root", "--allowed-origin", "--no-auth",
                     "tcp:8765:interface=127.0.0.1", "CLAUDEWS_TOKEN",
                     "CLAUDEWS_MAX_RUNNING"]:
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
