"""
Tests for L{claudews.options}: a client's prompt options, checked against
the server's settings, and the CLI flags they become.
"""

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from claudews.config import Settings
from claudews.errors import RequestError
from claudews.options import (
    OPTION_NAMES,
    check_option,
    option_flags,
    positive,
    validate_prompt_options,
)


class PromptOptionsTests(SynchronousTestCase):
    """
    L{validate_prompt_options} checks a client's options and merges defaults.
    """

    def setUp(self):
        self.home = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.home)
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

    def test_everyOptionHasAFlag(self):
        """Each known option, set, becomes its own CLI flag; nothing else does."""
        values = {
            "model": "opus", "permission_mode": "plan", "allowed_tools": ["Read"],
            "disallowed_tools": ["Write"], "append_system_prompt": "Be terse.",
            "max_budget_usd": 3, "effort": "low", "include_partial_messages": True,
        }
        self.assertEqual(sorted(values), sorted(OPTION_NAMES))
        for name in OPTION_NAMES:
            flags = option_flags({name: values[name]})
            self.assertTrue(flags[0].startswith("--"), name)
        self.assertEqual(option_flags({"max_budget_usd": 3}), ["--max-budget-usd", "3"])
        self.assertRaises(ValueError, option_flags, {"shell": "bash"})


class CheckOptionTests(SynchronousTestCase):
    """
    L{check_option} checks one value, whether a client or the operator gave it.
    """

    def test_unknownName(self):
        """A name that is no option is refused, the name bounded in the message."""
        e = self.assertRaises(ValueError, check_option, "x" * 500, "v")
        self.assertLess(len(str(e)), 200)

    def test_toolListsComeBackAsLists(self):
        """A tuple of tools (as Settings stores them) comes back as a list."""
        self.assertEqual(check_option("allowed_tools", ("Read", "Grep")), ["Read", "Grep"])

    def test_positiveKeepsTheNumberAsGiven(self):
        """positive() refuses 0 and below and returns an integer unchanged."""
        self.assertIs(type(positive(3)), int)
        self.assertEqual(positive(0.25), 0.25)
        for bad in (0, -1, True, "1", float("nan")):
            self.assertRaises(ValueError, positive, bad)

