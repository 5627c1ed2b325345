"""
Tests for L{claudews.clisession}: what the CLI's messages say about its
conversation and about how a prompt ended.
"""

from twisted.trial.unittest import SynchronousTestCase

from claudews import clisession
from claudews.events import COMPLETED, FAILED

UUID = "0b6c8f4e-2a8d-4c1e-9f3a-5d7e6b1a2c3d"
LOST = "No conversation found with session ID: " + UUID


class ValidSessionTests(SynchronousTestCase):
    """
    L{clisession.valid_session}: what may follow C{--resume}.
    """

    def test_a_uuid_is_valid(self) -> None:
        """The CLI's session ids are UUIDs."""
        self.assertTrue(clisession.valid_session(UUID))

    def test_an_option_is_refused(self) -> None:
        """A value that would read as a flag never becomes an argument."""
        self.assertFalse(clisession.valid_session("--dangerously-skip-permissions"))
        self.assertFalse(clisession.valid_session("-x"))

    def test_too_long_is_refused(self) -> None:
        """128 characters at most."""
        self.assertTrue(clisession.valid_session("a" * 128))
        self.assertFalse(clisession.valid_session("a" * 129))

    def test_empty_and_non_strings_are_refused(self) -> None:
        """Nothing, or not a string, is no session."""
        for value in ["", None, 42, ["a"]]:
            self.assertFalse(clisession.valid_session(value), value)

    def test_other_characters_are_refused(self) -> None:
        """Spaces, slashes and newlines are not in the CLI's ids."""
        for value in ["a b", "a/b", "a\n", "../x"]:
            self.assertFalse(clisession.valid_session(value), value)


class LostSessionTests(SynchronousTestCase):
    """
    L{clisession.lost_session}.
    """

    def test_result_text_says_it_is_lost(self) -> None:
        """The CLI's "No conversation found" in the result text."""
        self.assertTrue(clisession.lost_session({"type": "result", "result": LOST}))

    def test_errors_list_says_it_is_lost(self) -> None:
        """The same words in the errors list count too."""
        self.assertTrue(clisession.lost_session({"type": "result", "errors": ["x", LOST]}))

    def test_other_errors_do_not(self) -> None:
        """Another failure, or no text at all, is no lost session."""
        self.assertFalse(clisession.lost_session({"result": "rate limited", "errors": [3]}))
        self.assertFalse(clisession.lost_session({}))


class SessionNamedTests(SynchronousTestCase):
    """
    L{clisession.session_named}.
    """

    def test_init_names_it(self) -> None:
        """system/init names the conversation."""
        message = {"type": "system", "subtype": "init", "session_id": UUID}
        self.assertEqual(clisession.session_named(message), UUID)

    def test_other_system_subtypes_do_not(self) -> None:
        """Other system messages carry a session id that is not authoritative."""
        message = {"type": "system", "subtype": "compact_boundary", "session_id": UUID}
        self.assertIsNone(clisession.session_named(message))

    def test_a_result_names_it(self) -> None:
        """A result names the conversation it belongs to."""
        message = {"type": "result", "subtype": "success", "session_id": UUID}
        self.assertEqual(clisession.session_named(message), UUID)

    def test_a_lost_session_result_does_not(self) -> None:
        """A result saying the conversation was not found names the lost one."""
        message = {"type": "result", "is_error": True, "result": LOST, "session_id": UUID}
        self.assertIsNone(clisession.session_named(message))

    def test_other_messages_and_bad_ids_do_not(self) -> None:
        """Assistant messages, and ids that could not be resumed, name nothing."""
        self.assertIsNone(clisession.session_named({"type": "assistant", "session_id": UUID}))
        self.assertIsNone(
            clisession.session_named({"type": "system", "subtype": "init", "session_id": "--x"})
        )


class MarkerPrefixTests(SynchronousTestCase):
    """
    L{clisession.marker_prefix}.
    """

    def test_derived_from_the_directory(self) -> None:
        """The same directory, the same prefix; another, another."""
        a = clisession.marker_prefix("/data/projects/a")
        self.assertEqual(a, clisession.marker_prefix("/data/projects/a"))
        self.assertNotEqual(a, clisession.marker_prefix("/data/projects/b"))
        self.assertRegex(a, r"^cw[0-9a-f]{16}-$")


class OutcomeTests(SynchronousTestCase):
    """
    L{clisession.outcome}: reading a C{result}.
    """

    def test_success_completes_with_its_figures(self) -> None:
        """A success result completes, with the running cost, time and turns."""
        result = {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "total_cost_usd": 1,
            "duration_ms": 1200,
            "num_turns": 3,
        }
        self.assertEqual(
            clisession.outcome(result),
            clisession.Outcome(COMPLETED, cost_total=1.0, duration_ms=1200, num_turns=3),
        )

    def test_is_error_fails_with_the_result_text(self) -> None:
        """A success subtype flagged is_error fails, with its text as the error."""
        result = {"subtype": "success", "is_error": True, "result": "API error"}
        self.assertEqual(clisession.outcome(result), clisession.Outcome(FAILED, "API error"))

    def test_errors_list_when_there_is_no_text(self) -> None:
        """Without a result text, the errors list is the error."""
        result = {"subtype": "error_during_execution", "is_error": True, "errors": ["a", 2]}
        self.assertEqual(clisession.outcome(result).error, "a; 2")

    def test_the_subtype_when_there_is_nothing_else(self) -> None:
        """With neither text nor errors, the subtype says what went wrong."""
        self.assertEqual(clisession.outcome({"subtype": "error_max_turns"}).error, "error_max_turns")

    def test_resume_failure_is_flagged(self) -> None:
        """A failure that is the CLI's "No conversation found" says so."""
        outcome = clisession.outcome({"subtype": "error", "is_error": True, "errors": [LOST]})
        self.assertEqual(outcome.status, FAILED)
        self.assertTrue(outcome.resume_failed)
        self.assertFalse(clisession.outcome({"subtype": "error", "result": "x"}).resume_failed)

    def test_figures_of_a_failure_are_kept(self) -> None:
        """A failed result still reports its cost; a non-number cost is none."""
        failed = clisession.outcome({"subtype": "error", "total_cost_usd": 0.5, "num_turns": 1})
        self.assertEqual((failed.cost_total, failed.num_turns), (0.5, 1))
        odd = clisession.outcome({"subtype": "success", "total_cost_usd": "1"})
        self.assertIsNone(odd.cost_total)


class ExitErrorTests(SynchronousTestCase):
    """
    L{clisession.exit_error}.
    """

    def test_a_signal_is_named(self) -> None:
        """Killed by a signal: the signal, not the code."""
        self.assertEqual(
            clisession.exit_error(None, 9, ""),
            "the CLI exited with signal 9 before finishing the prompt",
        )

    def test_an_exit_code_is_named(self) -> None:
        """Exited on its own: the code."""
        self.assertEqual(
            clisession.exit_error(1, None, ""),
            "the CLI exited with code 1 before finishing the prompt",
        )

    def test_the_last_line_of_stderr_is_added(self) -> None:
        """The stderr tail's last line says why, cut to 500 characters."""
        error = clisession.exit_error(2, None, "noise\nfatal: " + "x" * 600)
        self.assertTrue(
            error.startswith("the CLI exited with code 2 before finishing the prompt: fatal: ")
        )
        self.assertNotIn("noise", error)
        self.assertEqual(len(error.split(": ", 1)[1]), 500)
