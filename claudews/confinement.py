"""
A project's directory, checked again each time a CLI is to work in it.

Roots are checked at C{project.create}, but a directory can change after:
removed and replaced by a symlink to somewhere outside the roots, or by
another directory of the same name.  Before every CLI start (and before a
live CLI is handed another prompt) the directory must still be what the
project was created with: its canonical path unchanged, still inside a
root, the same device and inode (recorded at create, stored in
metadata.json).  Otherwise nothing runs, and the project says why.
"""

import os
from typing import Any, Sequence

from claudews import paths
from claudews.errors import RequestError


class Confinement:
    """
    @param roots: the project roots, or C{None} for no root rule.
    @param known: the device and inode recorded at create; C{None} for a
        project created before they were, recorded at the first check
        that passes.
    @ivar problem: why the last check failed, or C{None}.
    """

    def __init__(
        self, path: str, roots: Sequence[str] | None, known: paths.Identity | None
    ) -> None:
        self.path = path
        self._roots = None if roots is None else tuple(roots)
        self.known = known
        self.problem: str | None = None

    @classmethod
    def of(cls, path: str, roots: Sequence[str] | None, meta: dict[str, Any]) -> "Confinement":
        """The confinement recorded in a project's metadata."""
        device, inode = meta.get("device"), meta.get("inode")
        known: paths.Identity | None = None
        if isinstance(device, int) and isinstance(inode, int):
            known = (device, inode)
        return cls(path, roots, known)

    def check(self) -> None:
        """
        Refuse a directory that is no longer the project's.

        @raise RequestError: C{path_invalid}, the same text as L{problem}.
        """
        os.close(self.open())

    def open(self) -> int:
        """
        L{check}, keeping the directory open: a descriptor of the checked
        directory, for the CLI to start in (the caller closes it).
        """
        try:
            fd, now = paths.open_confined(self.path, self._roots, self.known)
        except RequestError as e:
            self.problem = e.message
            raise
        self.problem = None
        if self.known is None:
            self.known = now
        return fd

    def checked(self) -> bool:
        """L{check}, for the record: whether it passed."""
        try:
            self.check()
        except RequestError:
            return False
        return True

    def fields(self) -> dict[str, Any]:
        """What metadata.json keeps of it."""
        if self.known is None:
            return {}
        return {"device": self.known[0], "inode": self.known[1]}
