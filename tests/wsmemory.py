"""
An in-memory WebSocket client for driving L{claudews.websocket} in tests.

No socket and no reactor: the server protocol is connected to a
L{StringTransport}, the client side is bytes built and parsed here
(RFC 6455 framing, just enough of it), and time is a test clock.
"""

import json
import os
import struct
from base64 import b64encode
from typing import Any
from urllib.parse import quote

from attrs import frozen
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

HOST = "127.0.0.1:8765"
PEER = IPv4Address("TCP", "127.0.0.1", 12345)


def handshake_request(
    path: str = "/ws",
    token: str | None = None,
    host: str | None = HOST,
    origin: str | None = None,
    authorization: str | None = None,
) -> bytes:
    """
    The bytes of a WebSocket opening handshake (an HTTP upgrade request).
    """
    target = path if token is None else "%s?token=%s" % (path, quote(token, safe=""))
    key = b64encode(os.urandom(16)).decode("ascii")
    assert len(key) == 24 and key.endswith("==")
    headers = [
        "GET %s HTTP/1.1" % (target,),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + key,
        "Sec-WebSocket-Version: 13",
    ]
    if host is not None:
        headers.insert(1, "Host: " + host)
    if origin is not None:
        headers.append("Origin: " + origin)
    if authorization is not None:
        headers.append("Authorization: " + authorization)
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii")


def parse_status(data: bytes) -> tuple[int, bytes]:
    """
    The HTTP status code of a handshake response, and the bytes after its
    headers (the first WebSocket frames, if any).
    """
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no complete HTTP response in %r" % (data[:200],))
    status_line = head.split(b"\r\n", 1)[0]
    return int(status_line.split(b" ", 2)[1]), rest


def encode_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """
    One WebSocket frame; client frames must be masked.
    """
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return header + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def text_frame(text: str | bytes) -> bytes:
    return encode_frame(TEXT, text.encode("utf-8") if isinstance(text, str) else text)


def binary_frame(data: bytes) -> bytes:
    return encode_frame(BINARY, data)


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return encode_frame(CLOSE, struct.pack("!H", code) + reason.encode("utf-8"))


def ping_frame(data: bytes = b"") -> bytes:
    return encode_frame(PING, data)


@frozen
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def close_code(self) -> int | None:
        if len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8")


def decode_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """
    Decode every complete server frame in C{data}; also return what is
    left over (an incomplete frame).
    """
    frames = []
    pos = 0
    while len(data) - pos >= 2:
        first, second = data[pos], data[pos + 1]
        length = second & 0x7F
        at = pos + 2
        if length == 126:
            if len(data) - at < 2:
                break
            (length,) = struct.unpack("!H", data[at : at + 2])
            at += 2
        elif length == 127:
            if len(data) - at < 8:
                break
            (length,) = struct.unpack("!Q", data[at : at + 8])
            at += 8
        key = None
        if second & 0x80:
            if len(data) - at < 4:
                break
            key, at = data[at : at + 4], at + 4
        if len(data) - at < length:
            break
        payload = data[at : at + length]
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append(Frame(first & 0x0F, payload, bool(first & 0x80)))
        pos = at + length
    return frames, data[pos:]


class MemoryTransport(StringTransport):
    """
    A L{StringTransport} that, like a real TCP transport, accepts
    C{unregisterProducer} with no producer registered: Autobahn calls it
    whenever it drops a connection.
    """

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class Connection:
    """
    One client connection to C{factory}, over a L{StringTransport}.

    @ivar status: the HTTP status of the handshake response.
    @ivar frames: every server frame received so far, in order.
    """

    def __init__(self, factory: Any, request: bytes | None = None, **request_args: Any) -> None:
        self.factory = factory
        self.transport = MemoryTransport(peerAddress=PEER)
        self.protocol = factory.buildProtocol(PEER)
        self.protocol.makeConnection(self.transport)
        self.frames: list[Frame] = []
        self._read = 0
        self._buffer = b""
        self._seen = 0
        if request is None:
            request = handshake_request(**request_args)
        self.protocol.dataReceived(request)
        self.status, rest = parse_status(self.transport.value())
        self._seen = len(self.transport.value()) - len(rest)
        self.response = self.transport.value()[: self._seen]

    # -- sending

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def send_text(self, text: str | bytes) -> None:
        self.send(text_frame(text))

    def send_json(self, obj: Any) -> None:
        self.send_text(json.dumps(obj))

    def request(self, kind: str, request_id: Any = None, /, **fields: Any) -> dict:
        """
        Send one request and return the reply to it (the last C{result}
        that arrived).
        """
        message = {"type": kind, **fields}
        if request_id is not None:
            message["id"] = request_id
        self.send_json(message)
        results = [m for m in self.messages() if m.get("type") == "result"]
        assert results, "no reply to %.200r" % (message,)
        return results[-1]

    def lose(self) -> None:
        """
        The TCP connection ends.
        """
        self.protocol.connectionLost(Failure(ConnectionDone()))

    # -- receiving

    def _receive(self) -> None:
        value = self.transport.value()
        self._buffer += value[self._seen :]
        self._seen = len(value)
        frames, self._buffer = decode_frames(self._buffer)
        self.frames.extend(frames)

    def new_frames(self) -> list[Frame]:
        """
        The server frames that arrived since the last call.
        """
        self._receive()
        frames = self.frames[self._read :]
        self._read = len(self.frames)
        return frames

    def messages(self) -> list[Any]:
        """
        The new text frames, JSON-decoded.
        """
        return [f.json() for f in self.new_frames() if f.opcode == TEXT]

    def close_frames(self) -> list[Frame]:
        """
        Every close frame received so far.
        """
        self._receive()
        return [f for f in self.frames if f.opcode == CLOSE]
