"""
Tests for L{claudews.config}: each setting's default, and the values each
refuses, whichever source gives them.
"""

import os
import re

from attrs import fields
from twisted.trial.unittest import SynchronousTestCase

from claudews.cmdline import settings_from
from claudews.config import Settings
from claudews.options import OPTION_NAMES
from tests.settingsfiles import SettingsFiles

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "data",
    "claudews.example.toml",
)


class DefaultsTests(SettingsFiles, SynchronousTestCase):
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
        self.assertEqual((s.request_rate, s.request_burst), (500.0, 1000))
        self.assertEqual(
            (s.max_failed_handshakes, s.failed_handshake_window, s.failed_handshake_block),
            (10, 60.0, 60.0),
        )
        self.assertEqual(s.history_rotate_bytes, 64 * 1024 * 1024)
        self.assertEqual(s.history_max_bytes, 1024 * 1024 * 1024)
        self.assertEqual(s.failed_handshake_delay, 5.0)
        self.assertEqual(s.max_message_frames, 128)
        self.assertEqual(s.history_page_bytes, 8 * 1024 * 1024)
        self.assertEqual(s.fsync, "interval")
        self.assertEqual(s.fsync_interval, 1.0)
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


class ValueTests(SettingsFiles, SynchronousTestCase):
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

    def test_hardeningSettings(self):
        """The wrong-token delay, frames per message and page bytes are checked and set."""
        self.assertIn("failed-handshake-delay", self.assertUsage("failed-handshake-delay = 0\n"))
        self.assertIn("max-message-frames", self.assertUsage("max-message-frames = 0\n"))
        self.assertIn("integer", self.assertUsage("history-page-bytes = 1.5\n"))
        s = self.load(
            "failed-handshake-delay = 2.5\nmax-message-frames = 16\nhistory-page-bytes = 4096\n"
        )
        self.assertEqual(
            (s.failed_handshake_delay, s.max_message_frames, s.history_page_bytes),
            (2.5, 16, 4096),
        )

    def test_floatIsNotAnInteger(self):
        """A size must be a whole number."""
        self.assertIn("integer", self.assertUsage("max-queue = 1.5\n"))

    def test_fsync(self):
        """fsync is one of every, interval, none."""
        self.assertIn("every, interval, none", self.assertUsage('fsync = "always"\n'))
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

    def test_clientOptionsDefaultInProtocolOrder(self):
        """By default clients may set every option, listed in the protocol's order."""
        self.assertEqual(self.load().client_options, (
            "model", "permission_mode", "allowed_tools", "disallowed_tools",
            "append_system_prompt", "max_budget_usd", "effort",
            "include_partial_messages",
        ))

    def test_unknownPromptDefaultListsTheKnownSorted(self):
        """An unknown prompt default is named, with every known option sorted."""
        self.assertIn(
            "unknown option 'shell' (known: allowed_tools, append_system_prompt,"
            " disallowed_tools, effort, include_partial_messages, max_budget_usd,"
            " model, permission_mode)",
            self.assertUsage('[prompt-defaults]\nshell = "x"\n'),
        )

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


class ExampleFileTests(SettingsFiles, SynchronousTestCase):
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


class NotifyTests(SettingsFiles, SynchronousTestCase):
    """
    notify-url and notify-on (issue 12): http(s) URLs only, known events only.
    """

    def test_defaults(self):
        """No URL; permission requests and finished prompts."""
        s = self.load()
        self.assertEqual(s.notify_url, ())
        self.assertEqual(s.notify_on, ("permission.request", "prompt.finished"))

    def test_urls_from_the_file_and_the_environment(self):
        """A TOML list, or CLAUDEWS_NOTIFY_URL separated by commas (which wins)."""
        s = self.load('notify-url = ["https://ntfy.sh/t", "http://127.0.0.1:8080/hook"]\n')
        self.assertEqual(s.notify_url, ("https://ntfy.sh/t", "http://127.0.0.1:8080/hook"))
        self.environ["CLAUDEWS_NOTIFY_URL"] = "https://a.example/x, http://b.example/y"
        self.environ["CLAUDEWS_NOTIFY_ON"] = "prompt.finished"
        s = self.load('notify-url = ["https://ntfy.sh/t"]\n')
        self.assertEqual(s.notify_url, ("https://a.example/x", "http://b.example/y"))
        self.assertEqual(s.notify_on, ("prompt.finished",))

    def test_only_http_urls(self):
        """Another scheme, no host, spaces or a bad port: one clear error."""
        for url in ("ftp://h/x", "file:///etc/passwd", "https:///x", "http://h/a b",
                    "http://h:99999/", "ntfy.sh/topic"):
            message = self.assertUsage('notify-url = ["%s"]\n' % (url,))
            self.assertIn("notify-url", message)
            self.assertIn("URL", message)
        self.environ["CLAUDEWS_NOTIFY_URL"] = "gopher://h/"
        self.assertEqual(
            self.assertUsage(),
            "CLAUDEWS_NOTIFY_URL: 'gopher://h/' is not an http:// or https:// URL",
        )

    def test_only_known_events(self):
        """notify-on names event kinds, each once."""
        self.assertIn("must be one of", self.assertUsage('notify-on = ["prompt.done"]\n'))
        self.assertIn("repeat", self.assertUsage(
            'notify-on = ["prompt.finished", "prompt.finished"]\n'
        ))
        self.assertEqual(self.load("notify-on = []\n").notify_on, ())
