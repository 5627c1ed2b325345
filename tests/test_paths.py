"""
Tests for L{claudews.paths}: canonical project paths, roots and nesting.
"""

import errno
import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from claudews.errors import RequestError
from claudews.paths import (
    canonical,
    check_allowed,
    check_not_nested,
    identity,
    is_inside,
    open_confined,
    open_directory,
    project_id,
)


def _tree(case):
    """
    A fresh canonical temporary directory, removed after the test.
    """
    top = os.path.realpath(tempfile.mkdtemp())
    case.addCleanup(shutil.rmtree, top)
    return top


class CanonicalTests(SynchronousTestCase):
    """
    L{canonical} turns client text into the one spelling of a directory.
    """

    def setUp(self):
        self.top = _tree(self)
        self.dir = os.path.join(self.top, "proj")
        os.mkdir(self.dir)

    def assertInvalid(self, path):
        e = self.assertRaises(RequestError, canonical, path)
        self.assertEqual(e.code, "path_invalid")
        return e

    def test_existingDirectory(self):
        """A canonical directory path comes back unchanged."""
        self.assertEqual(canonical(self.dir), self.dir)

    def test_spellingsOfOneDirectoryAgree(self):
        """Symlinks, '..', '.', doubled and trailing slashes all resolve."""
        link = os.path.join(self.top, "link")
        os.symlink(self.dir, link)
        os.mkdir(os.path.join(self.top, "other"))
        for spelling in [
            link,
            link + "/",
            self.top + "//proj",
            self.top + "/./proj/.",
            self.top + "/other/../proj",
        ]:
            self.assertEqual(canonical(spelling), self.dir, spelling)

    def test_notAString(self):
        """Numbers, null, lists and bytes are refused."""
        for value in [None, 5, ["/tmp"], self.dir.encode()]:
            e = self.assertInvalid(value)
            self.assertIn("string", e.message)

    def test_relative(self):
        """A relative path is refused, even when it would exist."""
        e = self.assertInvalid("proj")
        self.assertIn("absolute", e.message)
        self.assertInvalid("")
        self.assertInvalid("./proj")

    def test_nul(self):
        """A NUL byte is refused before it reaches the filesystem."""
        e = self.assertInvalid(self.dir + "\x00/x")
        self.assertIn("NUL", e.message)

    def test_loneSurrogate(self):
        """Text that is not valid Unicode (a JSON '\\ud800') is refused."""
        self.assertInvalid(self.top + "/\ud800")
        self.assertInvalid(self.top + "/\udcff")

    def test_tooLong(self):
        """A path over 4096 bytes is refused with a short message."""
        e = self.assertInvalid("/" + "a" * 5000)
        self.assertIn("4096", e.message)
        self.assertLess(len(e.message), 300)

    def test_tooLongInBytes(self):
        """The bound counts UTF-8 bytes, not characters."""
        self.assertInvalid("/" + "\u00e9" * 2100)

    def test_missing(self):
        """A directory that does not exist is refused."""
        e = self.assertInvalid(os.path.join(self.top, "nope"))
        self.assertIn("does not exist", e.message)

    def test_file(self):
        """A regular file is not a project directory."""
        path = os.path.join(self.top, "file")
        with open(path, "w"):
            pass
        e = self.assertInvalid(path)
        self.assertIn("not a directory", e.message)

    def test_symlinkToFile(self):
        """A symlink is judged by what it points at."""
        path = os.path.join(self.top, "file")
        with open(path, "w"):
            pass
        os.symlink(path, os.path.join(self.top, "flink"))
        self.assertInvalid(os.path.join(self.top, "flink"))

    def test_danglingSymlink(self):
        """A symlink to nothing is refused."""
        os.symlink(os.path.join(self.top, "gone"), os.path.join(self.top, "d"))
        self.assertInvalid(os.path.join(self.top, "d"))

    def test_symlinkLoop(self):
        """A symlink loop is refused, not followed forever."""
        os.symlink(os.path.join(self.top, "b"), os.path.join(self.top, "a"))
        os.symlink(os.path.join(self.top, "a"), os.path.join(self.top, "b"))
        self.assertInvalid(os.path.join(self.top, "a"))

    def test_resolvesToNonUtf8Name(self):
        """A symlink to a directory whose name is not UTF-8 is refused."""
        os.mkdir(os.path.join(self.top.encode(), b"\xff"))
        os.symlink(
            os.path.join(self.top.encode(), b"\xff"),
            os.path.join(self.top.encode(), b"ok"),
        )
        e = self.assertInvalid(os.path.join(self.top, "ok"))
        self.assertIn("UTF-8", e.message)

    def test_messageQuotesTruncatedPath(self):
        """The message quotes the client's text, cut to a bounded size."""
        path = os.path.join(self.top, "x" * 1000)
        e = self.assertInvalid(path)
        self.assertIn(repr(path[:200]) + "...", e.message)
        self.assertLess(len(e.message), 400)


class CheckAllowedTests(SynchronousTestCase):
    """
    L{check_allowed} keeps projects strictly inside the configured roots.
    """

    def setUp(self):
        self.top = _tree(self)
        self.root = os.path.join(self.top, "root")
        self.outside = os.path.join(self.top, "outside")
        for d in [self.root, self.outside, os.path.join(self.root, "app")]:
            os.mkdir(d)
        self.roots = [self.root]

    def assertNotAllowed(self, path, roots=None):
        e = self.assertRaises(
            RequestError, check_allowed, path, self.roots if roots is None else roots
        )
        self.assertEqual(e.code, "path_not_allowed")
        return e

    def test_insideRoot(self):
        """A directory below a root is allowed, at any depth."""
        check_allowed(os.path.join(self.root, "app"), self.roots)
        check_allowed(os.path.join(self.root, "a", "b", "c"), self.roots)

    def test_insideSecondRoot(self):
        """Any of several roots will do."""
        check_allowed(os.path.join(self.outside, "x"), [self.root, self.outside])

    def test_rootItself(self):
        """A root is too broad to be a project."""
        e = self.assertNotAllowed(self.root)
        self.assertIn("project root itself", e.message)

    def test_slash(self):
        """'/' is never a project, even if it were a root."""
        self.assertNotAllowed("/")
        self.assertNotAllowed("/", ["/"])

    def test_slashRootAllowsBelow(self):
        """A '/' root is compared by components like any other."""
        check_allowed(self.root, ["/"])

    def test_outside(self):
        """A directory outside every root is refused."""
        e = self.assertNotAllowed(self.outside)
        self.assertIn("outside the project roots", e.message)

    def test_noRoots(self):
        """With no roots nothing is allowed."""
        self.assertNotAllowed(os.path.join(self.root, "app"), [])

    def test_siblingWithRootAsPrefix(self):
        """'/x/root-other' is not inside '/x/root'."""
        self.assertNotAllowed(self.root + "-other")
        self.assertNotAllowed(self.root + "x/app")

    def test_symlinkLeadingOut(self):
        """A symlink inside a root that points outside it is refused."""
        link = os.path.join(self.root, "escape")
        os.symlink(self.outside, link)
        self.assertNotAllowed(canonical(link))

    def test_dotDotEscaping(self):
        """'..' cannot climb out of a root."""
        self.assertNotAllowed(canonical(self.root + "/app/../../outside"))
        self.assertNotAllowed(canonical(self.root + "/.."))

    def test_symlinkInsideStaysInside(self):
        """A symlink from outside into a root names the inside directory."""
        link = os.path.join(self.outside, "in")
        os.symlink(os.path.join(self.root, "app"), link)
        check_allowed(canonical(link), self.roots)


class CheckNotNestedTests(SynchronousTestCase):
    """
    L{check_not_nested} keeps project trees apart.
    """

    def assertNested(self, path, existing):
        e = self.assertRaises(RequestError, check_not_nested, path, existing)
        self.assertEqual(e.code, "path_nested")
        return e

    def test_unrelated(self):
        """Disjoint trees are fine."""
        check_not_nested("/w/a", ["/w/b", "/v/a"])
        check_not_nested("/w/a", [])

    def test_inside(self):
        """A path below an existing project is refused, naming it."""
        e = self.assertNested("/w/app/sub", ["/x", "/w/app"])
        self.assertIn("inside", e.message)
        self.assertIn("'/w/app'", e.message)

    def test_deepInside(self):
        """Depth does not matter."""
        self.assertNested("/w/app/a/b/c", ["/w/app"])

    def test_around(self):
        """A path above an existing project is refused, naming it."""
        e = self.assertNested("/w", ["/w/app/sub"])
        self.assertIn("contains", e.message)
        self.assertIn("'/w/app/sub'", e.message)

    def test_equalIgnored(self):
        """The same path is the caller's project_exists case, not nesting."""
        check_not_nested("/w/app", ["/w/app"])

    def test_prefixIsNotNesting(self):
        """'/a/b' and '/a/bc' are siblings, not nested, either way round."""
        check_not_nested("/a/bc", ["/a/b"])
        check_not_nested("/a/b", ["/a/bc"])

    def test_isInside(self):
        """L{is_inside} compares whole components and is strict."""
        self.assertTrue(is_inside("/a/b", "/a"))
        self.assertTrue(is_inside("/a", "/"))
        self.assertFalse(is_inside("/a", "/a"))
        self.assertFalse(is_inside("/ab", "/a"))
        self.assertFalse(is_inside("/", "/"))


class ProjectIdTests(SynchronousTestCase):
    """
    L{project_id} names a project on disk.
    """

    def test_stable(self):
        """The id is a fixed function of the path: changing it would orphan
        every project already on disk."""
        self.assertEqual(project_id("/w/app"), "ece9371bedcbc1139e32f73c")
        self.assertEqual(project_id("/w/app"), project_id("/w/app"))

    def test_hexOnly(self):
        """Whatever the path, the id is 24 lowercase hex digits."""
        for path in ["/w/app", "/w/../etc/passwd", "/t/\u00e9 \u4e2d/..x", "/"]:
            ident = project_id(path)
            self.assertEqual(len(ident), 24)
            self.assertTrue(set(ident) <= set("0123456789abcdef"), ident)

    def test_distinct(self):
        """Different paths get different ids."""
        self.assertNotEqual(project_id("/w/a"), project_id("/w/b"))
        self.assertNotEqual(project_id("/a/bc"), project_id("/a/b"))


def check_confined(path, roots, known):
    """L{open_confined}, closing the directory: its identity."""
    fd, now = open_confined(path, roots, known)
    os.close(fd)
    return now


class ConfinedTests(SynchronousTestCase):
    """
    L{open_confined}: a project's directory, checked again before a CLI
    works in it.
    """

    def setUp(self):
        self.top = _tree(self)
        self.root = os.path.join(self.top, "root")
        self.outside = os.path.join(self.top, "outside")
        self.dir = os.path.join(self.root, "p2")
        for d in (self.dir, self.outside):
            os.makedirs(d)
        self.known = identity(self.dir)

    def assertRefused(self, *words, roots=None, known=None):
        e = self.assertRaises(
            RequestError,
            check_confined,
            self.dir,
            (self.root,) if roots is None else roots,
            self.known if known is None else known,
        )
        self.assertEqual(e.code, "path_invalid")
        for word in words:
            self.assertIn(word, e.message)
        return e

    def swap_for_symlink(self, target):
        os.rmdir(self.dir)
        os.symlink(target, self.dir)

    def test_the_same_directory_passes_and_says_what_it_is(self):
        """Unchanged: its device and inode come back."""
        st = os.stat(self.dir)
        self.assertEqual(check_confined(self.dir, (self.root,), self.known), (st.st_dev, st.st_ino))

    def test_a_symlink_out_of_the_roots_in_its_place_is_refused(self):
        """The swap of issue 13: ROOT/p2 -> a directory outside, named in the message."""
        self.swap_for_symlink(self.outside)
        self.assertRefused("symlink", repr(self.outside))

    def test_a_symlink_to_the_same_directory_is_refused_too(self):
        """No component of the path may become a symlink, wherever it leads."""
        real = os.path.join(self.root, "real")
        os.rename(self.dir, real)
        os.symlink(real, self.dir)
        self.assertRefused("symlink")

    def test_a_parent_that_became_a_symlink_is_refused(self):
        """A swap higher up the path is caught as well."""
        moved = os.path.join(self.top, "moved")
        os.rename(self.root, moved)
        os.symlink(moved, self.root)
        self.assertRefused("symlink")

    def test_another_directory_of_the_same_name_is_refused(self):
        """Moved away and another made in its place: refused with a way out."""
        # (Removed and made again, a directory may get its old inode back.)
        os.rename(self.dir, os.path.join(self.root, "old"))
        os.mkdir(self.dir)
        self.assertRefused("replaced by another directory", "create it again")

    def test_a_removed_directory_is_refused(self):
        """Gone: said so."""
        os.rmdir(self.dir)
        self.assertRefused("no longer exists")

    def test_a_directory_no_longer_inside_the_roots_is_refused(self):
        """Roots configured otherwise since: refused, saying why."""
        self.assertRefused("no longer allowed", "outside the project roots", roots=(self.outside,))

    def test_without_roots_or_a_known_identity_only_the_path_is_checked(self):
        """A project from before identities were recorded: the path decides."""
        self.assertEqual(check_confined(self.dir, None, None), self.known)
        self.swap_for_symlink(self.outside)
        self.assertRaises(RequestError, check_confined, self.dir, None, None)


class OpenDirectoryTests(SynchronousTestCase):
    """
    L{open_directory} reaches a directory without following a symlink.
    """

    def test_opens_the_directory_itself(self):
        """The descriptor names the directory the path names."""
        top = _tree(self)
        fd = open_directory(top)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.assertEqual((st.st_dev, st.st_ino), (os.stat(top).st_dev, os.stat(top).st_ino))

    def test_the_root_opens(self):
        """'/' has no component to walk."""
        os.close(open_directory("/"))

    def test_a_path_that_is_not_canonical_is_refused_before_any_walk(self):
        """Relative paths, '.', '..' and doubled slashes: EINVAL."""
        for path in ("relative", "/a/../b", "/a/./b", "/a//b", "/a/"):
            e = self.assertRaises(OSError, open_directory, path)
            self.assertEqual(e.errno, errno.EINVAL, path)
