"""
A WebSocket client over a plain socket, for what no library would send:
handshakes of any shape, frames of any shape, and a receive window of the
test's choosing. Shared by tests/test_fuzz.py and tests/test_hardening.py.
"""

import select
import socket
import time
from collections import deque

from tests import wsmemory
from tests.harness import DEADLINE


class Raw:
    """
    One connection to C{server}; the handshake is sent at once, its
    answer read by L{status}.
    """

    def __init__(self, server, token=None, origin=None, receive_buffer=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connecting, so the window is small from the start:
            # what the client does not read stays on the server.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(("127.0.0.1", server.port))
        self.port = self.sock.getsockname()[1]
        self.buffer = b""
        #: Every frame read so far.
        self.frames = []
        #: Frames decoded but not read yet: those that came with the one
        #: a L{read_until} stopped at.
        self._decoded = deque()
        self.sock.sendall(wsmemory.handshake_request(
            token=server.token if token is None else token,
            host="127.0.0.1:%d" % (server.port,),
            origin=origin,
        ))

    def status(self):
        """Wait for the handshake's answer: its HTTP status."""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, self.buffer
            self.buffer += chunk
        status, self.buffer = wsmemory.parse_status(self.buffer)
        return status

    def send(self, data):
        """Send what the server still reads; False once it no longer does."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            return False

    def read_until(self, done, timeout=DEADLINE):
        """
        Read frames until C{done(frame)}, a close frame or the end of the
        connection; the frame that ended it, or None.
        """
        deadline = time.monotonic() + timeout
        while True:
            frames, self.buffer = wsmemory.decode_frames(self.buffer)
            self._decoded.extend(frames)
            while self._decoded:
                frame = self._decoded.popleft()
                self.frames.append(frame)
                if frame.opcode == wsmemory.CLOSE or done(frame):
                    return frame
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no answer in %s s: %r" % (timeout, self.frames[-3:])
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = self.sock.recv(4 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk

    def close_frame(self):
        """The server's close frame (data frames on the way skipped), or None."""
        frame = self.read_until(lambda frame: False)
        return frame if frame is not None and frame.opcode == wsmemory.CLOSE else None

    def close(self):
        self.sock.close()
