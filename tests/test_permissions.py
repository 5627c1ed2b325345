"""
Tests for L{claudews.permissions}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews.errors import RequestError
from claudews.permissions import PermissionAnswer, PermissionBroker


def can_use_tool(tool="Bash", command="ls", **extra):
    request = {"subtype": "can_use_tool", "tool_name": tool, "input": {"command": command}}
    request.update(extra)
    return request


class Recorder:
    """
    Collects published events and CLI answers.
    """

    def __init__(self):
        self.events = []
        self.answers = {}

    def publish(self, event):
        self.events.append((event.kind, dict(event.fields)))

    def answer_for(self, request_id):
        def answer(response):
            self.answers.setdefault(request_id, []).append(response)

        return answer

    def resolved(self):
        return [f for kind, f in self.events if kind == "permission.resolved"]


class BrokerTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.rec = Recorder()
        self.broker = PermissionBroker(self.rec.publish, timeout=120.0, reactor=self.clock)

    def ask(self, request_id, prompt_id="p-1", **kw):
        self.broker.request(
            prompt_id, request_id, can_use_tool(**kw), self.rec.answer_for(request_id)
        )


class RequestTests(BrokerTestCase):
    def test_request_publishes_fields_without_subtype(self):
        """permission.request carries prompt, request, tool, input and the CLI's other fields."""
        self.ask("r1", tool="Write", command="x", permission_suggestions=[{"a": 1}], tool_use_id="t9")
        self.assertEqual(
            self.rec.events,
            [
                (
                    "permission.request",
                    {
                        "prompt_id": "p-1",
                        "request_id": "r1",
                        "tool_name": "Write",
                        "input": {"command": "x"},
                        "permission_suggestions": [{"a": 1}],
                        "tool_use_id": "t9",
                    },
                )
            ],
        )
        self.assertEqual(self.rec.answers, {})

    def test_cli_fields_cannot_override_ours(self):
        """A CLI field named request_id or prompt_id does not replace ours."""
        request = can_use_tool()
        request.update(request_id="evil", prompt_id="other")
        self.broker.request("p-1", "r1", request, self.rec.answer_for("r1"))
        fields = self.rec.events[0][1]
        self.assertEqual((fields["request_id"], fields["prompt_id"]), ("r1", "p-1"))

    def test_pending_lists_requests_in_arrival_order(self):
        """pending() returns the request event fields, oldest first."""
        self.ask("r2", command="b")
        self.ask("r1", command="a", prompt_id="p-2")
        self.ask("r3", command="c")
        pending = self.broker.pending()
        self.assertEqual([p["request_id"] for p in pending], ["r2", "r1", "r3"])
        self.assertEqual(pending[0], self.rec.events[0][1])
        self.broker.respond(PermissionAnswer("r1", "deny"))
        self.assertEqual([p["request_id"] for p in self.broker.pending()], ["r2", "r3"])

    def test_pending_returns_copies(self):
        """Mutating a pending() entry does not change the broker's record."""
        self.ask("r1")
        self.broker.pending()[0]["tool_name"] = "changed"
        self.assertEqual(self.broker.pending()[0]["tool_name"], "Bash")

    def test_duplicate_request_id_is_denied_and_first_kept(self):
        """A second request with a pending id is denied at once; the first still waits."""
        self.ask("r1")
        second = []
        self.broker.request("p-1", "r1", can_use_tool(command="rm"), second.append)
        self.assertEqual(len(second), 1)
        self.assertEqual(second[0]["behavior"], "deny")
        self.assertIn("Duplicate", second[0]["message"])
        self.assertEqual(len(self.broker.pending()), 1)
        self.assertEqual(self.broker.pending()[0]["input"], {"command": "ls"})
        self.broker.respond(PermissionAnswer("r1", "allow"))
        self.assertEqual(self.rec.answers["r1"][0]["updatedInput"], {"command": "ls"})

    def test_request_id_reusable_after_resolution(self):
        """Once answered, the same request id may be asked again."""
        self.ask("r1")
        self.broker.respond(PermissionAnswer("r1", "deny"))
        self.ask("r1")
        self.assertEqual(len(self.broker.pending()), 1)

    def test_synchronous_answer_from_publish_works(self):
        """A client answering from inside the fan-out finds the request."""
        answers = []

        def publish(event):
            if event.kind == "permission.request":
                broker.respond(PermissionAnswer(event.fields["request_id"], "allow"))

        broker = PermissionBroker(publish, timeout=120.0, reactor=self.clock)
        broker.request("p", "r1", can_use_tool(), answers.append)
        self.assertEqual(answers, [{"behavior": "allow", "updatedInput": {"command": "ls"}}])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RespondTests(BrokerTestCase):
    def test_allow_without_updated_input_sends_original_input(self):
        """allow answers the CLI with the tool's own input."""
        self.ask("r1", command="make")
        self.broker.respond(PermissionAnswer("r1", "allow"))
        self.assertEqual(
            self.rec.answers["r1"], [{"behavior": "allow", "updatedInput": {"command": "make"}}]
        )
        self.assertEqual(
            self.rec.resolved(), [{"request_id": "r1", "behavior": "allow", "by": "client"}]
        )
        self.assertEqual(self.broker.pending(), [])

    def test_allow_with_updated_input_sends_it(self):
        """allow with updated_input answers with the client's input instead."""
        self.ask("r1", command="rm -rf /")
        self.broker.respond(PermissionAnswer("r1", "allow", updated_input={"command": "ls"}))
        self.assertEqual(
            self.rec.answers["r1"], [{"behavior": "allow", "updatedInput": {"command": "ls"}}]
        )

    def test_allow_always_passes_the_rules_to_the_cli(self):
        """updated_permissions (one of the CLI's suggestions) goes back as updatedPermissions."""
        rule = {"type": "addRules", "rules": [{"toolName": "Write"}], "behavior": "allow",
                "destination": "session"}
        self.ask("r1", command="make")
        self.broker.respond(PermissionAnswer("r1", "allow", updated_permissions=[rule]))
        self.assertEqual(
            self.rec.answers["r1"],
            [{"behavior": "allow", "updatedInput": {"command": "make"}, "updatedPermissions": [rule]}],
        )

    def test_rules_go_with_an_allow_only_and_must_be_objects(self):
        """A deny with rules, or rules that are not objects, is a bad request; the request stays."""
        self.ask("r1")
        for behavior, rules in (("deny", []), ("allow", {"a": 1}), ("allow", ["Write"])):
            e = self.assertRaises(
                RequestError,
                self.broker.respond,
                PermissionAnswer("r1", behavior, updated_permissions=rules),
            )
            self.assertEqual(e.code, "bad_request")
        self.assertEqual(len(self.broker.pending()), 1)

    def test_deny_default_message(self):
        """deny without a message says a claudews client denied it."""
        self.ask("r1")
        self.broker.respond(PermissionAnswer("r1", "deny"))
        self.assertEqual(
            self.rec.answers["r1"],
            [{"behavior": "deny", "message": "Denied by a claudews client"}],
        )
        self.assertEqual(
            self.rec.resolved(), [{"request_id": "r1", "behavior": "deny", "by": "client"}]
        )

    def test_deny_with_message(self):
        """deny passes the client's message to the CLI."""
        self.ask("r1")
        self.broker.respond(PermissionAnswer("r1", "deny", message="use make instead"))
        self.assertEqual(
            self.rec.answers["r1"], [{"behavior": "deny", "message": "use make instead"}]
        )

    def test_first_answer_wins_second_not_found(self):
        """The second answer to a request gets not_found and changes nothing."""
        self.ask("r1")
        self.broker.respond(PermissionAnswer("r1", "allow"))
        with self.assertRaises(RequestError) as ctx:
            self.broker.respond(PermissionAnswer("r1", "deny"))
        self.assertEqual(ctx.exception.code, "not_found")
        self.assertEqual(len(self.rec.answers["r1"]), 1)
        self.assertEqual(self.rec.answers["r1"][0]["behavior"], "allow")
        self.assertEqual(len(self.rec.resolved()), 1)

    def test_unknown_request_not_found(self):
        """Answering a request that never existed gets not_found."""
        with self.assertRaises(RequestError) as ctx:
            self.broker.respond(PermissionAnswer("nope", "allow"))
        self.assertEqual(ctx.exception.code, "not_found")

    def test_bad_behavior_is_bad_request(self):
        """behavior other than allow/deny is refused and the request stays pending."""
        self.ask("r1")
        for behavior in ("ALLOW", "ask", None):
            with self.assertRaises(RequestError) as ctx:
                self.broker.respond(PermissionAnswer("r1", behavior))
            self.assertEqual(ctx.exception.code, "bad_request")
        self.assertEqual(len(self.broker.pending()), 1)
        self.assertEqual(self.rec.answers, {})

    def test_non_dict_updated_input_is_bad_request(self):
        """updated_input must be an object."""
        self.ask("r1")
        with self.assertRaises(RequestError) as ctx:
            self.broker.respond(PermissionAnswer("r1", "allow", updated_input=["ls"]))
        self.assertEqual(ctx.exception.code, "bad_request")
        self.assertEqual(len(self.broker.pending()), 1)

    def test_non_string_message_or_id_is_bad_request(self):
        """A non-string message or request_id is refused as bad_request."""
        self.ask("r1")
        for args in (("r1", "deny", 5), (["r1"], "deny")):
            with self.assertRaises(RequestError) as ctx:
                self.broker.respond(PermissionAnswer(*args))
            self.assertEqual(ctx.exception.code, "bad_request")

    def test_respond_cancels_timer(self):
        """An answered request is not denied later by its timer."""
        self.ask("r1")
        self.broker.respond(PermissionAnswer("r1", "allow"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(len(self.rec.answers["r1"]), 1)

    def test_answer_raising_does_not_break_respond(self):
        """If the CLI is gone, respond still resolves the request and publishes."""

        def broken(response):
            raise OSError("stdin closed")

        self.broker.request("p-1", "r1", can_use_tool(), broken)
        self.broker.respond(PermissionAnswer("r1", "allow"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.broker.pending(), [])
        self.assertEqual(
            self.rec.resolved(), [{"request_id": "r1", "behavior": "allow", "by": "client"}]
        )
        with self.assertRaises(RequestError):
            self.broker.respond(PermissionAnswer("r1", "allow"))


class TimeoutTests(BrokerTestCase):
    def test_timeout_denies_at_configured_time(self):
        """An unanswered request is denied exactly `timeout` seconds after it arrived."""
        self.ask("r1")
        self.clock.advance(119.999)
        self.assertEqual(len(self.broker.pending()), 1)
        self.assertEqual(self.rec.answers, {})
        self.clock.advance(0.002)
        self.assertEqual(
            self.rec.answers["r1"],
            [
                {
                    "behavior": "deny",
                    "message": "No claudews client answered the permission request"
                    " within 120 seconds",
                }
            ],
        )
        self.assertEqual(
            self.rec.resolved(), [{"request_id": "r1", "behavior": "deny", "by": "timeout"}]
        )
        self.assertEqual(self.broker.pending(), [])
        with self.assertRaises(RequestError) as ctx:
            self.broker.respond(PermissionAnswer("r1", "allow"))
        self.assertEqual(ctx.exception.code, "not_found")

    def test_timeouts_are_per_request(self):
        """Each request has its own deadline from its own arrival."""
        broker = PermissionBroker(self.rec.publish, timeout=2.5, reactor=self.clock)
        broker.request("p", "r1", can_use_tool(), self.rec.answer_for("r1"))
        self.clock.advance(1)
        broker.request("p", "r2", can_use_tool(), self.rec.answer_for("r2"))
        self.clock.advance(1.5)
        self.assertEqual([p["request_id"] for p in broker.pending()], ["r2"])
        self.assertIn("within 2.5 seconds", self.rec.answers["r1"][0]["message"])
        self.clock.advance(1)
        self.assertEqual(broker.pending(), [])

    def test_timeout_with_raising_answer_still_resolves(self):
        """A dead CLI at timeout is logged; the request is resolved all the same."""

        def broken(response):
            raise OSError("stdin closed")

        self.broker.request("p-1", "r1", can_use_tool(), broken)
        self.clock.advance(120)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.rec.resolved()[0]["by"], "timeout")


class CancelForgetTests(BrokerTestCase):
    def test_cancel_denies_only_that_prompts_requests(self):
        """cancel(prompt_id) denies that prompt's requests and leaves the others pending."""
        self.ask("r1", prompt_id="p-1")
        self.ask("r2", prompt_id="p-2")
        self.ask("r3", prompt_id="p-1")
        self.broker.cancel("p-1")
        cancelled = {"behavior": "deny", "message": "The prompt was cancelled"}
        self.assertEqual(self.rec.answers, {"r1": [cancelled], "r3": [cancelled]})
        self.assertEqual(
            self.rec.resolved(),
            [
                {"request_id": "r1", "behavior": "deny", "by": "cancel"},
                {"request_id": "r3", "behavior": "deny", "by": "cancel"},
            ],
        )
        self.assertEqual([p["request_id"] for p in self.broker.pending()], ["r2"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_cancel_all(self):
        """cancel() without a prompt denies everything pending."""
        self.ask("r1", prompt_id="p-1")
        self.ask("r2", prompt_id="p-2")
        self.broker.cancel()
        self.assertEqual(sorted(self.rec.answers), ["r1", "r2"])
        self.assertEqual(self.broker.pending(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_forget_drops_without_answering(self):
        """forget() resolves requests for clients but sends nothing to the dead CLI."""
        self.ask("r1", prompt_id="p-1")
        self.ask("r2", prompt_id="p-2")
        self.broker.forget("p-1")
        self.assertEqual(self.rec.answers, {})
        self.assertEqual(
            self.rec.resolved(), [{"request_id": "r1", "behavior": "deny", "by": "cancel"}]
        )
        self.assertEqual([p["request_id"] for p in self.broker.pending()], ["r2"])
        self.broker.forget()
        self.assertEqual(self.broker.pending(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(self.rec.answers, {})
        with self.assertRaises(RequestError):
            self.broker.respond(PermissionAnswer("r2", "allow"))
