"""
Tests for L{claudews.config}: settings from defaults, a TOML file, the
environment and the command line; prompt options and their CLI flags.
"""

import os
import re
import shutil
import tempfile

from attrs import fields
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from claudews.config import Options, Settings, settings_from
from claudews.options import OPTION_NAMES, option_flags, validate_prompt_options
from claudews.errors import RequestError

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "data",
    "claudews.example.toml",
)


class _TempDirMixin:
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


class DefaultsTests(_TempDirMixin, SynchronousTestCase):
    """
    Without a file or flags every setting has its documented default.
    """

    def test_documentedDefaults(self):
        """The defaults are the ones the operator documentation promises."""
        s = self.load()
        self.assertEqual(s.listen, "tcp:8765:interface=127.0.0.1")
        self.assertEqual(s.data, os.path.abspath("data"))
        self.assertEqual(s.claude_bin, "claude")
        self.assertIsNone(s.token)
        self.assertFalse(s.no_auth)
        self.assertEqual(s.project_roots, (self.home,))
        self.assertEqual((s.allowed_origins, s.allowed_hosts), ((), ()))
        self.assertEqual((s.timeout, s.max_running), (300.0, 4))
        self.assertEqual((s.idle_timeout, s.permission_timeout), (600.0, 120.0))
        self.assertEqual(s.kill_grace, 5.0)
        self.assertEqual(s.max_line_bytes, 256 * 1024 * 1024)
        self.assertEqual(s.max_message_bytes, 1024 * 1024)
        self.assertEqual(s.max_prompt_bytes, 256 * 1024)
        self.assertEqual((s.max_queue, s.max_projects), (64, 256))
        self.assertEqual(s.send_backlog_bytes, 4 * 1024 * 1024)
        self.assertEqual(s.send_backlog_grace, 10.0)
        self.assertEqual(s.send_backlog_cap, 64 * 1024 * 1024)
        self.assertEqual((s.ping_interval, s.ping_timeout), (30.0, 30.0))
        self.assertEqual((s.max_connections, s.max_connections_per_address), (256, 32))
        self.assertEqual((s.request_rate, s.request_burst), (100.0, 200))
        self.assertEqual(
            (s.max_failed_handshakes, s.failed_handshake_window, s.failed_handshake_block),
            (10, 60.0, 60.0),
        )
        self.assertEqual(s.history_rotate_bytes, 64 * 1024 * 1024)
        self.assertEqual(s.history_max_bytes, 1024 * 1024 * 1024)
        self.assertEqual(s.fsync, "batch")
        self.assertEqual(set(s.client_options), set(OPTION_NAMES))
        self.assertEqual(s.prompt_defaults, ())
        self.assertEqual(s.permission_modes, ("default", "acceptEdits", "plan"))
        self.assertEqual(s.env, ())

    def test_defaultRootIsHomeCanonicalized(self):
        """The default root is HOME with its symlinks resolved."""
        link = os.path.join(self.top, "homelink")
        os.symlink(self.home, link)
        self.environ["HOME"] = link
        self.assertEqual(self.load().project_roots, (self.home,))

    def test_missingHome(self):
        """A default root that does not exist is a usage error saying so."""
        self.environ["HOME"] = os.path.join(self.top, "gone")
        self.assertIn("home directory", self.assertUsage())

    def test_frozenAndHashable(self):
        """Settings cannot be changed once built, and can be hashed."""
        s = self.load('[prompt-defaults]\nallowed_tools = ["Read"]\n')
        self.assertRaises(AttributeError, setattr, s, "timeout", 1.0)
        self.assertEqual(hash(s), hash(self.load('[prompt-defaults]\nallowed_tools = ["Read"]\n')))

    def test_directConstructionChecks(self):
        """Building Settings directly runs the same checks, naming the field."""
        e = self.assertRaises(ValueError, Settings, max_running=0)
        self.assertIn("max_running", str(e))


class PrecedenceTests(_TempDirMixin, SynchronousTestCase):
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


class OptionsTests(_TempDirMixin, SynchronousTestCase):
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


class FileErrorTests(_TempDirMixin, SynchronousTestCase):
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


class ValueTests(_TempDirMixin, SynchronousTestCase):
    """
    Each setting refuses values that cannot work.
    """

    def test_nonPositiveDurations(self):
        """Durations must be greater than zero, from a file or a flag."""
        self.assertIn("timeout", self.assertUsage("timeout = -1\n"))
        self.assertIn("--timeout", self.assertUsage(timeout="0"))
        self.assertIn("ping-timeout", self.assertUsage("ping-timeout = 0.0\n"))

    def test_nonFiniteNumbers(self):
        """nan and inf are not durations."""
        self.assertIn("finite", self.assertUsage("timeout = inf\n"))
        self.assertIn("finite", self.assertUsage(idle_timeout="nan"))
        self.assertIn("finite", self.assertUsage("timeout = 1%s\n" % ("0" * 400,)))

    def test_maxRunningZero(self):
        """At least one CLI must be allowed to run."""
        self.assertIn("at least 1", self.assertUsage("max-running = 0\n"))
        self.assertIn("--max-running", self.assertUsage(max_running="0"))

    def test_boolIsNotANumber(self):
        """true is not 1 here."""
        self.assertIn("integer", self.assertUsage("max-running = true\n"))
        self.assertIn("number", self.assertUsage("timeout = true\n"))

    def test_connectionAndRequestLimits(self):
        """The connection, request-rate and handshake limits must be positive."""
        for key in ("max-connections", "max-connections-per-address", "request-burst",
                    "max-failed-handshakes"):
            self.assertIn(key, self.assertUsage("%s = 0\n" % (key,)))
            self.assertIn("integer", self.assertUsage("%s = 2.5\n" % (key,)))
        for key in ("request-rate", "failed-handshake-window", "failed-handshake-block"):
            self.assertIn(key, self.assertUsage("%s = 0\n" % (key,)))
            self.assertIn("finite", self.assertUsage("%s = inf\n" % (key,)))
        s = self.load(
            "max-connections = 8\nmax-connections-per-address = 2\nrequest-rate = 0.5\n"
            "request-burst = 3\nmax-failed-handshakes = 4\nfailed-handshake-window = 5\n"
            "failed-handshake-block = 600\n"
        )
        self.assertEqual(
            (s.max_connections, s.max_connections_per_address, s.request_rate,
             s.request_burst, s.max_failed_handshakes, s.failed_handshake_window,
             s.failed_handshake_block),
            (8, 2, 0.5, 3, 4, 5.0, 600.0),
        )

    def test_floatIsNotAnInteger(self):
        """A size must be a whole number."""
        self.assertIn("integer", self.assertUsage("max-queue = 1.5\n"))

    def test_fsync(self):
        """fsync is one of every, batch, none."""
        self.assertIn("every, batch, none", self.assertUsage('fsync = "always"\n'))
        self.assertEqual(self.load('fsync = "none"\n').fsync, "none")

    def test_fsync_choices_are_the_historys_own(self):
        """The fsync setting accepts exactly what History accepts: one list, in history."""
        from claudews import config, history

        self.assertIs(config.FSYNC_POLICIES, history.FSYNC_POLICIES)
        self.assertFalse(hasattr(config, "FSYNC_MODES"))
        for policy in history.FSYNC_POLICIES:
            self.assertEqual(self.load('fsync = "%s"\n' % (policy,)).fsync, policy)

    def test_listen(self):
        """An endpoint string Twisted cannot parse is refused."""
        self.assertIn("--listen", self.assertUsage(listen="nosuch:1"))
        self.assertIn("--listen", self.assertUsage(listen="tcp:port"))
        self.assertEqual(self.load(listen="unix:/tmp/x.sock").listen, "unix:/tmp/x.sock")

    def test_dataMadeAbsolute(self):
        """A relative data directory is made absolute at load time."""
        self.assertEqual(self.load(data="var/cw").data, os.path.abspath("var/cw"))

    def test_origins(self):
        """Origins are scheme://host[:port], normalized as browsers send them."""
        s = self.load(allowed_origin=["HTTPS://Example.COM:443", "http://h:8080",
                                      "http://[::1]:80", "http://127.0.0.1"])
        self.assertEqual(
            s.allowed_origins,
            ("https://example.com", "http://h:8080", "http://[::1]", "http://127.0.0.1"),
        )
        for bad in ["example.com", "ftp://a.example", "https://a.example/",
                    "https://a.example/path", "https://a.example:99999", "null",
                    "https://user@a.example", "https://"]:
            self.assertIn("origin", self.assertUsage(allowed_origin=[bad]), bad)

    def test_originsMustBeAList(self):
        """A single string where a list belongs is refused in the file."""
        self.assertIn("list of strings", self.assertUsage('allowed-origin = "https://a"\n'))

    def test_hosts(self):
        """Host values are host[:port], lowercased."""
        self.assertEqual(self.load(allowed_host=["Proxy.Example:8443"]).allowed_hosts,
                         ("proxy.example:8443",))
        for bad in ["a b", "h/x", "h:", "", "h:0"]:
            self.assertIn("Host", self.assertUsage(allowed_host=[bad]), bad)

    def test_nonexistentRoot(self):
        """A project root must be an existing directory."""
        message = self.assertUsage(project_root=[os.path.join(self.top, "gone")])
        self.assertIn("--project-root", message)
        self.assertIn("not an existing directory", message)
        self.write("", "afile")
        self.assertUsage(project_root=[os.path.join(self.top, "afile")])

    def test_slashRoot(self):
        """'/' is too broad a root."""
        self.assertIn("'/'", self.assertUsage(project_root=["/"]))

    def test_rootsCanonicalizedAndDeduplicated(self):
        """Roots are resolved through symlinks, and repeats collapse."""
        a = self.directory("a")
        os.symlink(a, os.path.join(self.top, "alink"))
        s = self.load(project_root=[a + "/", os.path.join(self.top, "alink")])
        self.assertEqual(s.project_roots, (a,))

    def test_token(self):
        """A token must be visible ASCII, safe in an Authorization header."""
        for bad in ["", "a b", "\u00e9t\u00e9", "a\\tb"]:
            self.assertIn("token", self.assertUsage('token = "%s"\n' % (bad,)))
        self.assertEqual(self.load('token = "Zm9v+/=_-~!"\n').token, "Zm9v+/=_-~!")

    def test_backlogCapBelowBound(self):
        """The hard cap cannot be below the soft bound."""
        self.assertIn("send_backlog_cap",
                      self.assertUsage("send-backlog-bytes = 10\nsend-backlog-cap = 5\n"))

    def test_historyMaxBelowRotate(self):
        """The history total cannot be below one file's size."""
        self.assertIn("history_max_bytes", self.assertUsage(
            "history-rotate-bytes = 10\nhistory-max-bytes = 5\n"))

    def test_clientOptions(self):
        """client-options names known options, once each."""
        s = self.load('client-options = ["model"]\n')
        self.assertEqual(s.client_options, ("model",))
        self.assertIn("client-options", self.assertUsage('client-options = ["shell"]\n'))
        self.assertIn("repeat", self.assertUsage('client-options = ["model", "model"]\n'))

    def test_permissionModes(self):
        """permission-modes names valid modes; bypassPermissions may be listed."""
        s = self.load('permission-modes = ["plan", "bypassPermissions"]\n')
        self.assertEqual(s.permission_modes, ("plan", "bypassPermissions"))
        self.assertIn("permission-modes", self.assertUsage('permission-modes = ["yolo"]\n'))

    def test_promptDefaults(self):
        """prompt-defaults is checked like client options, stored as pairs."""
        s = self.load('[prompt-defaults]\nmodel = "opus"\nallowed_tools = ["Read"]\n')
        self.assertEqual(s.prompt_defaults, (("allowed_tools", ("Read",)), ("model", "opus")))
        self.assertIn("unknown option", self.assertUsage('[prompt-defaults]\nshell = "x"\n'))
        self.assertIn("max_budget_usd",
                      self.assertUsage("[prompt-defaults]\nmax_budget_usd = -1\n"))
        self.assertIn("'-'", self.assertUsage('[prompt-defaults]\nmodel = "-x"\n'))

    def test_promptDefaultModeMustBeListed(self):
        """A default permission mode must be one clients may use too."""
        self.assertIn("permission_modes", self.assertUsage(
            '[prompt-defaults]\npermission_mode = "bypassPermissions"\n'))
        s = self.load('permission-modes = ["bypassPermissions"]\n'
                      '[prompt-defaults]\npermission_mode = "bypassPermissions"\n')
        self.assertEqual(s.prompt_defaults, (("permission_mode", "bypassPermissions"),))

    def test_env(self):
        """env is a table of strings, stored as sorted pairs."""
        s = self.load('[env]\nZ = "1"\nA_B = "x y"\n')
        self.assertEqual(s.env, (("A_B", "x y"), ("Z", "1")))
        self.assertEqual(dict(s.env)["Z"], "1")
        self.assertIn("env", self.assertUsage("[env]\nN = 1\n"))
        self.assertIn("env", self.assertUsage('[env]\n"A=B" = "1"\n'))
        self.assertIn("table", self.assertUsage('env = "A=1"\n'))

    def test_unknownFlag(self):
        """settings_from refuses a flag that is no setting."""
        self.assertIn("--bogus", self.assertUsage(bogus="1"))


class ExampleFileTests(_TempDirMixin, SynchronousTestCase):
    """
    data/claudews.example.toml documents every key and changes nothing.
    """

    def test_loadsToDefaults(self):
        """Loading the example gives exactly the default settings."""
        self.assertEqual(
            settings_from({}, EXAMPLE, self.environ), Settings(project_roots=(self.home,))
        )

    def test_mentionsEveryKey(self):
        """Every setting appears in the example, set or commented out."""
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        keys = set(re.findall(r"^(?:# )?\[?([a-z][a-z-]*)\]?(?: =|$)", text, re.M))
        aliases = {"project-root": "project-roots", "allowed-origin": "allowed-origins",
                   "allowed-host": "allowed-hosts"}
        keys = {aliases.get(k, k) for k in keys}
        for f in fields(Settings):
            self.assertIn(f.name.replace("_", "-"), keys)


class PromptOptionsTests(_TempDirMixin, SynchronousTestCase):
    """
    L{validate_prompt_options} checks a client's options and merges defaults.
    """

    def setUp(self):
        super().setUp()
        self.settings = Settings(project_roots=(self.home,))

    def assertBad(self, options, settings=None):
        e = self.assertRaises(
            RequestError, validate_prompt_options, options, settings or self.settings
        )
        self.assertEqual(e.code, "bad_request")
        return e.message

    def test_allOptions(self):
        """Every option with a good value comes back as given."""
        options = {
            "model": "claude-sonnet-4-5", "permission_mode": "plan",
            "allowed_tools": ["Read", "Bash(git diff:*)"], "disallowed_tools": ["Write"],
            "append_system_prompt": "Be terse.\nNo emoji.", "max_budget_usd": 0.5,
            "effort": "xhigh", "include_partial_messages": True,
        }
        self.assertEqual(validate_prompt_options(options, self.settings), options)

    def test_absentOrEmpty(self):
        """No options, or {}, gives the defaults."""
        self.assertEqual(validate_prompt_options(None, self.settings), {})
        self.assertEqual(validate_prompt_options({}, self.settings), {})

    def test_notAnObject(self):
        """options must be a JSON object."""
        for value in [[], "model", 3, True]:
            self.assertIn("JSON object", self.assertBad(value))

    def test_unknownOption(self):
        """An option the server does not know is refused, named."""
        self.assertIn("'shell'", self.assertBad({"shell": "bash"}))

    def test_optionNotAllowed(self):
        """An option outside client_options is refused with a clear reason."""
        settings = Settings(project_roots=(self.home,), client_options=("effort",))
        self.assertEqual(self.assertBad({"model": "opus"}, settings),
                         "option model is not allowed by this server")

    def test_bypassPermissionsRefusedByDefault(self):
        """bypassPermissions needs the operator to list it."""
        self.assertIn("not allowed", self.assertBad({"permission_mode": "bypassPermissions"}))
        settings = Settings(project_roots=(self.home,),
                            permission_modes=("default", "bypassPermissions"))
        self.assertEqual(
            validate_prompt_options({"permission_mode": "bypassPermissions"}, settings),
            {"permission_mode": "bypassPermissions"},
        )

    def test_invalidPermissionMode(self):
        """An unknown mode is refused even if a list would allow it."""
        self.assertBad({"permission_mode": "yolo"})
        self.assertBad({"permission_mode": "dontAsk"})

    def test_leadingDash(self):
        """No string value may look like a CLI option."""
        for options in [{"model": "--dangerously-skip-permissions"},
                        {"append_system_prompt": "-p"},
                        {"allowed_tools": ["Read", "--help"]},
                        {"disallowed_tools": ["-x"]}]:
            self.assertIn("'-'", self.assertBad(options), options)

    def test_wrongTypes(self):
        """Each option has one JSON type; bool is not a number."""
        for options in [
            {"max_budget_usd": True}, {"max_budget_usd": "5"}, {"max_budget_usd": None},
            {"include_partial_messages": 1}, {"include_partial_messages": "true"},
            {"model": 5}, {"model": None}, {"append_system_prompt": ["x"]},
            {"allowed_tools": "Read"}, {"allowed_tools": [1]}, {"effort": 3},
        ]:
            self.assertBad(options)

    def test_badNumbers(self):
        """The budget is a positive, finite number."""
        for value in [0, -1, float("nan"), float("inf"), 10**400]:
            self.assertBad({"max_budget_usd": value})
        self.assertEqual(
            validate_prompt_options({"max_budget_usd": 3}, self.settings),
            {"max_budget_usd": 3},
        )

    def test_badStrings(self):
        """Strings are bounded, non-empty, without NUL; words without spaces."""
        for options in [
            {"model": ""}, {"model": "a b"}, {"model": "a\nb"}, {"model": "x" * 300},
            {"model": "a\x00"}, {"append_system_prompt": "a\x00b"},
            {"append_system_prompt": "x" * 70000}, {"append_system_prompt": "\ud800"},
            {"effort": "extreme"},
        ]:
            self.assertBad(options)

    def test_badTools(self):
        """Tool specs are printable one-liners without commas."""
        for tool in ["", "   ", "Bash\n", "a\x00", "Bash(a,b)", "x" * 600]:
            self.assertBad({"allowed_tools": [tool]})
        self.assertBad({"allowed_tools": ["Read"] * 101})

    def test_defaultsMerged(self):
        """Defaults apply unless the client sets the same option."""
        settings = Settings(
            project_roots=(self.home,),
            prompt_defaults={"model": "sonnet", "allowed_tools": ["Read"]},
        )
        self.assertEqual(
            validate_prompt_options({"model": "opus"}, settings),
            {"model": "opus", "allowed_tools": ["Read"]},
        )

    def test_defaultsNotShared(self):
        """Changing one result's tool list does not change the next."""
        settings = Settings(project_roots=(self.home,),
                            prompt_defaults={"allowed_tools": ["Read"]})
        validate_prompt_options({}, settings)["allowed_tools"].append("Write")
        self.assertEqual(validate_prompt_options({}, settings), {"allowed_tools": ["Read"]})

    def test_defaultsApplyEvenIfNotClientSettable(self):
        """The operator's defaults hold for options clients may not set."""
        settings = Settings(project_roots=(self.home,), client_options=(),
                            prompt_defaults={"effort": "low"})
        self.assertEqual(validate_prompt_options({}, settings), {"effort": "low"})


class OptionFlagsTests(SynchronousTestCase):
    """
    L{option_flags} maps validated options to CLI flags.
    """

    def test_everyOption(self):
        """Each option gives its flag, in option-name order."""
        self.assertEqual(
            option_flags({
                "model": "opus", "permission_mode": "plan",
                "allowed_tools": ["Read", "Bash(git diff:*)"],
                "disallowed_tools": ["Write"], "append_system_prompt": "Be terse.",
                "max_budget_usd": 2.5, "effort": "high", "include_partial_messages": True,
            }),
            [
                "--allowedTools", "Read,Bash(git diff:*)",
                "--append-system-prompt", "Be terse.",
                "--disallowedTools", "Write",
                "--effort", "high",
                "--include-partial-messages",
                "--max-budget-usd", "2.5",
                "--model", "opus",
                "--permission-mode", "plan",
            ],
        )

    def test_orderIndependent(self):
        """Equal option sets give equal flag lists, whatever the key order."""
        a = {"model": "opus", "effort": "low", "max_budget_usd": 1}
        b = {"max_budget_usd": 1, "effort": "low", "model": "opus"}
        self.assertEqual(option_flags(a), option_flags(b))

    def test_offAndEmpty(self):
        """A false flag option and empty tool lists give no flags."""
        self.assertEqual(
            option_flags({"include_partial_messages": False, "allowed_tools": [],
                          "disallowed_tools": []}),
            [],
        )

    def test_empty(self):
        """No options, no flags."""
        self.assertEqual(option_flags({}), [])
