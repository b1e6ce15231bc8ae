"""Framing: a 4-byte big-endian length, then a msgpack body of one `Message`.

Pure functions and a push decoder, no sockets.  The length is checked
against `MAX_FRAME` before a single body byte is looked at.
"""

from __future__ import annotations

import struct

import msgspec

from corral.transport.messages import MAX_FRAME, Message, Request

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class FrameError(Exception):
    """A frame that cannot be accepted; the connection carrying it must close."""


def encode(msg: Message | Request) -> bytes:
    """One complete frame (header and body) for ``msg``."""
    body = _encoder.encode(msg)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte maximum")
    return _HEADER.pack(len(body)) + body


def body_length(header: bytes, limit: int = MAX_FRAME) -> int:
    """The body length announced by ``header``, refused when over ``limit``."""
    if len(header) != HEADER_SIZE:
        raise FrameError(f"truncated header: {len(header)} of {HEADER_SIZE} bytes")
    (n,) = _HEADER.unpack(header)
    if n > limit:
        raise FrameError(f"frame length {n} exceeds the {limit}-byte maximum")
    if n == 0:
        raise FrameError("empty frame")
    return int(n)


def decode_body(body: bytes) -> Message:
    """The message in ``body``; any malformed input raises `FrameError`."""
    try:
        msg: Message = _decoder.decode(body)
        return msg
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise FrameError(f"bad message: {e}") from None


class FrameDecoder:
    """Push decoder: feed bytes as they arrive, take whole messages out."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.limit = limit  # the largest body accepted; may change between feeds
        self._need: int | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return every message now complete, in order."""
        self._buf += data
        out: list[Message] = []
        while True:
            if self._need is None:
                if len(self._buf) < HEADER_SIZE:
                    return out
                self._need = body_length(bytes(self._buf[:HEADER_SIZE]), self.limit)
                del self._buf[:HEADER_SIZE]
            if len(self._buf) < self._need:
                return out
            body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._need = None
            out.append(decode_body(body))

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buf) + (HEADER_SIZE if self._need is not None else 0)
