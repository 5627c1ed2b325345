"""
Tests for L{claudews.errors}: the error codes a client can be sent.
"""

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from claudews.errors import CODES, RequestError

PROTOCOL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "protocol.rst"
)


class CodesTests(SynchronousTestCase):
    """
    L{CODES} is the protocol's list of error codes.
    """

    def test_codesAreTheProtocols(self):
        """Every code in the protocol's error table, and no other, is a code."""
        with open(PROTOCOL, encoding="utf-8") as f:
            text = f.read()
        table = text.split("\nError codes\n", 1)[1].split("\n\n\n", 1)[0]
        self.assertEqual(set(re.findall(r"^   \* - ``([a-z_]+)``$", table, re.M)), CODES)


class RequestErrorTests(SynchronousTestCase):
    """
    L{RequestError} carries a code and a message for the client.
    """

    def test_carriesCodeAndMessage(self):
        """The code and the message are kept as given, and read in str()."""
        e = RequestError("path_nested", "/a is inside /")
        self.assertEqual((e.code, e.message), ("path_nested", "/a is inside /"))
        self.assertEqual(str(e), "path_nested: /a is inside /")
        self.assertIsInstance(e, Exception)

    def test_everyCodeAccepted(self):
        """Each protocol code makes an error."""
        for code in CODES:
            self.assertEqual(RequestError(code, "m").code, code)

    def test_unknownCodeRefused(self):
        """A code outside the protocol's list is a bug, refused at once."""
        e = self.assertRaises(ValueError, RequestError, "oops", "m")
        self.assertIn("oops", str(e))
