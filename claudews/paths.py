"""
Canonical path rules for projects.

A project is named by a directory path that a client sends as text.  Before
that text is used for anything, L{canonical} turns it into the one absolute,
symlink-free spelling of an existing directory, so that two spellings of the
same directory (a symlink, a C{..}, a doubled slash) are one project and a
symlink cannot smuggle a project out of the configured roots.

The other rules compare canonical paths by whole components, never by raw
string prefix: C{/a/bc} is not inside C{/a/b}.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import Iterable, Sequence

from claudews.errors import RequestError

#: Linux's PATH_MAX, in bytes; longer text cannot name a directory anyway,
#: and refusing it early keeps the filesystem calls cheap.
MAX_PATH_BYTES = 4096

# Error messages quote client text; a bound keeps a hostile path from
# turning every error reply into a 4 KiB echo.
_QUOTE_CHARS = 200


def quote(path: str) -> str:
    """
    Quote C{path} for an error message: C{repr}, truncated.
    """
    if len(path) > _QUOTE_CHARS:
        return repr(path[:_QUOTE_CHARS]) + "..."
    return repr(path)


def _invalid(message: str) -> RequestError:
    return RequestError("path_invalid", message)


def canonical(path: object) -> str:
    """
    Turn a client's path text into the canonical path of a directory.

    @param path: what the client sent (any JSON value).
    @return: the absolute path with every symlink and C{..} resolved.
    @raise RequestError: C{path_invalid} if C{path} is not a string, not
        absolute, contains NUL, is too long, is not UTF-8 text, does not
        exist or is not a directory.
    """
    return _resolved(_checked_text(path))


def _checked_text(path: object) -> str:
    """
    Refuse C{path} text that cannot name a directory, before any
    filesystem call.
    """
    if not isinstance(path, str):
        raise _invalid("path must be a string")
    if not path.startswith("/"):
        raise _invalid("path must be absolute: {}".format(quote(path)))
    if "\x00" in path:
        raise _invalid("path must not contain a NUL character")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        # A JSON "\ud800" escape decodes to a lone surrogate, which names no
        # file and cannot be sent back to any client.
        raise _invalid("path is not valid Unicode text") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _invalid(
            "path is longer than {} bytes: {}".format(MAX_PATH_BYTES, quote(path))
        )
    return path


def _resolved(path: str) -> str:
    """
    The canonical spelling of the directory C{path} names.
    """
    try:
        resolved = os.path.realpath(path, strict=True)
        mode = os.stat(resolved).st_mode
    except OSError as e:
        raise _invalid(
            "path does not exist or cannot be resolved ({}): {}".format(
                e.strerror or type(e).__name__, quote(path)
            )
        ) from None
    if not stat.S_ISDIR(mode):
        raise _invalid("path is not a directory: {}".format(quote(path)))
    try:
        # A symlink can lead to a name that is not UTF-8 on disk; Python
        # hands it back with surrogate escapes that no client could read.
        resolved.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(
            "path resolves to a name that is not UTF-8: {}".format(quote(path))
        ) from None
    return resolved


def is_inside(path: str, ancestor: str) -> bool:
    """
    Is canonical C{path} strictly below canonical C{ancestor}?

    Compares whole components: C{/a/bc} is not inside C{/a/b}, and no path
    is inside itself.
    """
    if path == ancestor:
        return False
    prefix = ancestor if ancestor.endswith("/") else ancestor + "/"
    return path.startswith(prefix)


def check_allowed(path: str, roots: Sequence[str]) -> None:
    """
    Refuse a canonical C{path} that is not strictly inside one of C{roots}.

    A root itself is not a project: it would contain (and so forbid, by the
    nesting rule) every other project under it.

    @param roots: canonical root directories (L{claudews.config.Settings}
        canonicalizes them).
    @raise RequestError: C{path_not_allowed}.
    """
    if path == "/":
        raise RequestError("path_not_allowed", "'/' can never be a project")
    for root in roots:
        if is_inside(path, root):
            return
    if path in roots:
        raise RequestError(
            "path_not_allowed",
            "{} is a project root itself; create projects in directories "
            "under it".format(quote(path)),
        )
    raise RequestError(
        "path_not_allowed",
        "{} is outside the project roots ({})".format(
            quote(path), ", ".join(quote(root) for root in roots) or "none"
        ),
    )


def check_not_nested(path: str, existing: Iterable[str]) -> None:
    """
    Refuse a canonical C{path} inside or around an existing project.

    Two projects in one tree would run two CLIs over the same files and
    give one directory two histories.  An equal path is the caller's
    C{project_exists} case and is ignored here.

    @raise RequestError: C{path_nested}, naming the other project.
    """
    for other in sorted(existing):
        if is_inside(path, other):
            raise RequestError(
                "path_nested",
                "{} is inside the existing project {}".format(
                    quote(path), quote(other)
                ),
            )
        if is_inside(other, path):
            raise RequestError(
                "path_nested",
                "{} contains the existing project {}".format(
                    quote(path), quote(other)
                ),
            )


#: Opens a directory without following a symlink; C{O_PATH} (Linux) needs
#: only search permission, as C{chdir} does.
_DIRECTORY_FLAGS = (
    getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
)


def open_directory(path: str) -> int:
    """
    Open canonical C{path} one component at a time, following no symlink.

    The returned descriptor names the very directory C{path} named at the
    moment of the walk: a component that is a symlink (or not a directory)
    fails with L{OSError} (C{ELOOP} or C{ENOTDIR}), whoever swapped it in.

    @raise OSError: as the walk met it; C{EINVAL} for a path that is not
        canonical (relative, or with C{.} or C{..} components).
    """
    parts = [] if path == "/" else path.split("/")[1:]
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise OSError(errno.EINVAL, "not a canonical path", path)
    fd = os.open("/", _DIRECTORY_FLAGS)
    try:
        for part in parts:
            inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


Identity = tuple[int, int]


def identity(path: str) -> Identity:
    """
    The device and inode of the directory at canonical C{path}, reached
    without following a symlink (L{open_directory}). Raises L{OSError}.
    """
    fd = open_directory(path)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return (st.st_dev, st.st_ino)


def open_confined(
    path: str, roots: Sequence[str] | None, known: Identity | None
) -> tuple[int, Identity]:
    """
    Is the project at canonical C{path} still where it was created: the
    path still canonical (no component became a symlink), still inside
    one of C{roots} (C{None}: no root rule), still the same directory
    (C{known}, unless C{None})? A descriptor of the very directory that
    passed (a process started in it by this descriptor cannot be sent
    elsewhere by a swap after the check), which the caller closes, and its
    identity now.

    @raise RequestError: C{path_invalid}, saying what changed.
    """
    if roots is not None:
        try:
            check_allowed(path, roots)
        except RequestError as e:
            raise _invalid("the project directory is no longer allowed: " + e.message) from None
    try:
        fd = open_directory(path)
    except OSError as e:
        raise _invalid(_gone(path, e)) from None
    st = os.fstat(fd)
    now = (st.st_dev, st.st_ino)
    if known is not None and now != known:
        os.close(fd)
        raise _invalid(
            "the project directory {} was replaced by another directory since "
            "the project was created; delete the project and create it again "
            "to work there".format(quote(path))
        )
    return fd, now


def _gone(path: str, e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "the project directory {} no longer exists".format(quote(path))
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            now = os.path.realpath(path)
        except (OSError, ValueError):
            now = "somewhere else"
        return (
            "the project directory {} is now a symlink or leads through one "
            "(to {}); the CLI is not started outside the project".format(
                quote(path), quote(now)
            )
        )
    return "the project directory {} cannot be opened ({})".format(
        quote(path), e.strerror or type(e).__name__
    )


def project_id(path: str) -> str:
    """
    The on-disk id of the project at canonical C{path}.

    Derived from the path alone, so it is stable across restarts, and made
    of hex digits only, so no client text ever becomes a file name.
    """
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:24]
