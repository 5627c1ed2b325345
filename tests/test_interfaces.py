"""
Tests for L{claudews.interfaces}: the production classes keep the
contracts their users are typed against.

C{mypy} checks that fully (L{_checks} below is only ever type-checked);
at run time the cheap part is checked: every member a contract names
exists on the class that implements it, so a rename shows up without
C{mypy}.
"""

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from typing import Protocol

import pytest
from twisted.internet.base import DelayedCall as TwistedDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from claudews import interfaces, wsfactory
from claudews.clilistener import CliListener
from claudews.history import History
from claudews.liveprocess import LiveProcess
from claudews.proctree import SystemTrees
from claudews.project import Project
from claudews.runner import Listener
from claudews.supervisor import Supervisor
from claudews.websocket import ServerProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Each contract and the production class that implements it.
IMPLEMENTED = [
    (interfaces.EventStore, History),
    (interfaces.Subscriber, ServerProtocol),
    (interfaces.SlotOwner, Project),
    (interfaces.ProcessSlots, Supervisor),
    (interfaces.DelayedCall, TwistedDelayedCall),
    (interfaces.ReactorTime, Clock),
    (interfaces.ProcessTrees, SystemTrees),
    (interfaces.PromptHost, Project),
    (interfaces.ProcessRoom, LiveProcess),
    (Listener, CliListener),
]


def _checks(
    history: History,
    protocol: ServerProtocol,
    project: Project,
    supervisor: Supervisor,
    clock: Clock,
    trees: SystemTrees,
    live: LiveProcess,
    cli: CliListener,
) -> None:
    """
    Never called: C{mypy} checks that each assignment is allowed, that
    is, that each production class satisfies its contract.
    """
    store: interfaces.EventStore = history
    subscriber: interfaces.Subscriber = protocol
    fanout: interfaces.Fanout = wsfactory.fanout
    owner: interfaces.SlotOwner = project
    slots: interfaces.ProcessSlots = supervisor
    time: interfaces.ReactorTime = clock
    process_trees: interfaces.ProcessTrees = trees
    host: interfaces.PromptHost = project
    room: interfaces.ProcessRoom = live
    listener: Listener = cli
    del store, subscriber, fanout, owner, slots, time, process_trees, host, room, listener


def _members(contract: type) -> set[str]:
    names: set[str] = set()
    for klass in contract.__mro__:
        if klass in (object, Protocol) or klass.__module__ in ("typing", "collections.abc"):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(n for n in vars(klass) if not n.startswith("_"))
    return names


class MembersTests(SynchronousTestCase):
    """
    Every member of a contract exists on its implementation.
    """

    def test_every_contract_names_members(self) -> None:
        """The member lookup finds something in each contract."""
        for contract, _ in IMPLEMENTED:
            self.assertTrue(_members(contract), contract)

    def test_implementations_have_every_member(self) -> None:
        """A member renamed or dropped on either side fails here."""
        for contract, implementation in IMPLEMENTED:
            missing = sorted(m for m in _members(contract) if not hasattr(implementation, m))
            # An attribute (not a method) may be set per instance only.
            missing = [m for m in missing if m not in _instance_attributes(implementation)]
            self.assertEqual(missing, [], "%s lacks members of %s" % (implementation, contract))

    def test_send_each_is_a_fanout(self) -> None:
        """The plain fan-out sends the line to every subscriber."""
        sent: list[bytes] = []

        class Recorder:
            def send_line(self, line: bytes) -> None:
                sent.append(line)

        interfaces.send_each(b"x", [Recorder(), Recorder()])  # type: ignore[list-item]
        self.assertEqual(sent, [b"x", b"x"])


def _instance_attributes(klass: type) -> set[str]:
    source = inspect.getsource(klass)
    return set(re.findall(r"\bself\.(\w+)(?:: [^=]+)? = ", source))


@pytest.mark.integration
def test_mypy_strict_is_clean() -> None:
    """C{mypy --strict claudews/} finds nothing (takes ~20 s)."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "claudews/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.integration
def test_contracts_are_kept_as_mypy_sees_them() -> None:
    """The typed assignments of L{_checks} pass C{mypy --strict}."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            # trial's assertions are untyped.
            "--allow-untyped-calls",
            os.path.join("tests", "test_interfaces.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
