"""
Tests for L{claudews.clicheck}: whether the configured CLI can be run, and
the line that says how to install it.
"""

import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from claudews.clicheck import INSTALL_COMMAND, cli_problem, search_path


class CLIProblemTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = os.path.realpath(tempfile.mkdtemp(prefix="claudews-clicheck-"))
        self.addCleanup(shutil.rmtree, self.base, True)

    def file(self, name: str, mode: int) -> str:
        path = os.path.join(self.base, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, mode)
        return path

    def test_an_executable_on_path_is_fine(self) -> None:
        """A name found executable on PATH has no problem."""
        self.file("claude", 0o755)
        self.assertIsNone(cli_problem("claude", self.base))

    def test_an_executable_path_is_fine(self) -> None:
        """A path to an executable file has no problem."""
        self.assertIsNone(cli_problem(self.file("claude", 0o755)))

    def test_a_name_not_on_path_names_the_install_command(self) -> None:
        """No such name on PATH: one line saying so and the npm command that installs it."""
        problem = cli_problem("claude", self.base)
        assert problem is not None
        self.assertIn("no claude on PATH", problem)
        self.assertIn(INSTALL_COMMAND, problem)
        self.assertEqual(INSTALL_COMMAND, "npm install -g @anthropic-ai/claude-code")
        self.assertNotIn("\n", problem)

    def test_a_missing_path_is_named(self) -> None:
        """A --claude-bin path that does not exist is named as such."""
        path = os.path.join(self.base, "nothing")
        problem = cli_problem(path)
        assert problem is not None
        self.assertIn(path + " does not exist", problem)

    def test_a_file_that_is_not_executable_is_named(self) -> None:
        """A file without the executable bit is unusable, and the line says so."""
        path = self.file("claude", 0o644)
        problem = cli_problem(path)
        assert problem is not None
        self.assertIn("is not executable", problem)
        self.assertIsNotNone(cli_problem("claude", self.base))

    def test_a_directory_is_named(self) -> None:
        """A directory is not a CLI."""
        problem = cli_problem(self.base)
        assert problem is not None
        self.assertIn("is a directory", problem)


class SearchPathTests(SynchronousTestCase):
    def test_the_configured_path_wins(self) -> None:
        """PATH set for the CLI in the configuration is where it is looked up."""
        self.assertEqual(search_path({"PATH": "/a"}, {"PATH": "/b"}), "/a")

    def test_else_the_servers_path(self) -> None:
        """Without one, the server's own PATH, or the system default."""
        self.assertEqual(search_path({}, {"PATH": "/b"}), "/b")
        self.assertEqual(search_path(None, {}), os.defpath)
