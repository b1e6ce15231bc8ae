"""asyncio streams whose bytes are read into one reused buffer (`BufferedProtocol`).

``asyncio.open_connection`` and ``start_server`` give a `StreamReaderProtocol`,
a plain `asyncio.Protocol`: the transport makes a new ``bytes`` for every
read.  Over TLS on uvloop that read is ``SSLObject.read(256 KiB)``, and
glibc serves a request that size with mmap, shrinks it with mremap and
unmaps it: per record, a few system calls and a page fault, for a heartbeat
of a hundred bytes.  Measured at 2,000 workers beating at 1 Hz, that was
most of what TLS cost the master (`bench heartbeat`).

`Buffered` puts the same `StreamReaderProtocol` behind a `BufferedProtocol`:
uvloop's TLS layer then decrypts straight into a buffer of ours (and its TCP
transport receives into it), and the reader copies out what arrived.
Everything else (`StreamReader`, `StreamWriter`, flow control) is asyncio's.
"""

from __future__ import annotations

import asyncio
from typing import Any

BUFFER = 64 * 1024  # per connection: one TLS record's worth of plaintext and then some


class Buffered(asyncio.BufferedProtocol):
    """A `StreamReaderProtocol`, fed from a buffer the transport reads into."""

    def __init__(self, inner: asyncio.StreamReaderProtocol, size: int = BUFFER) -> None:
        self.inner = inner
        self._view = memoryview(bytearray(size))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        # The reader copies it into its own buffer at once: the view is free again.
        self.inner.data_received(self._view[:nbytes])  # type: ignore[arg-type]


def stream_pair(
    limit: int = 2**16,
) -> tuple[asyncio.StreamReader, asyncio.StreamReaderProtocol, Buffered]:
    """A reader, its protocol, and the `Buffered` protocol to give the transport."""
    reader = asyncio.StreamReader(limit=limit)
    inner = asyncio.StreamReaderProtocol(reader)
    return reader, inner, Buffered(inner)


async def open_connection(
    host: str, port: int, *, limit: int = 2**16, **kwargs: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` with the reads buffered (`Buffered`); same arguments."""
    loop = asyncio.get_running_loop()
    reader, inner, outer = stream_pair(limit)
    transport, _ = await loop.create_connection(lambda: outer, host, port, **kwargs)
    return reader, asyncio.StreamWriter(transport, inner, reader, loop)
