"""A request whose connection fails while it is being sent: one error, nothing logged."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from corral.transport.connection import CallError, Calls, ConnectionClosed
from corral.transport.messages import Status, StatusReply

pytestmark = pytest.mark.timeout(30)


class StalledSend:
    """A connection whose send blocks until the test lets it fail."""

    peer = "127.0.0.1:9"

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.fail = asyncio.Event()

    async def send(self, msg: Any) -> None:
        self.sending.set()
        await self.fail.wait()
        raise ConnectionClosed("peer closed the connection")


async def test_a_call_failed_by_fail_all_during_its_send_raises_once_and_logs_nothing() -> None:
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context))
    calls = Calls(grace=0.0)
    conn = StalledSend()
    call = asyncio.create_task(
        calls.call(conn, lambda rid: Status(id=rid), StatusReply, timeout=5.0)  # type: ignore[arg-type]
    )
    await conn.sending.wait()
    calls.fail_all("node n1 disconnected")  # the link went away mid-send
    conn.fail.set()
    with pytest.raises(CallError, match=r"connection to 127\.0\.0\.1:9 lost"):
        await call
    del call
    gc.collect()
    await asyncio.sleep(0)
    assert [c.get("message") for c in logged] == []
