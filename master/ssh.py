"""What deploy and fetch share to reach nodes over SSH from worker threads.

`target` says where and as whom to reach a node's sshd; `thread_progress`
turns a callback meant for the event loop into one an SFTP thread may call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable

from corral.master.config import SshConfig
from corral.master.model import NodeView
from corral.transport import sftp

# An upload with no write for this many stall timeouts is taken for dead: a
# send in progress writes all the time, and a stalled one gives up after one.
DEAD_UPLOAD_STALLS = 2


def dead_upload_idle(ssh: SshConfig) -> float:
    """Seconds without a write after which a node may remove an upload (see
    ``PrepareApp.idle``, ``BundleHave.idle``): whoever left it is gone."""
    return DEAD_UPLOAD_STALLS * ssh.stall_timeout


def target(view: NodeView, ssh: SshConfig, trust: bool) -> sftp.SshTarget:
    """Where and as whom to reach ``view``'s sshd; `sftp.PushError` if it advertises none."""
    if not view.ssh_host:
        raise sftp.PushError(f"node {view.name} advertises no SSH host (worker --ssh-host)")
    return sftp.SshTarget(
        host=view.ssh_host,
        port=ssh.port or view.ssh_port,
        user=ssh.user,
        key_filename=ssh.key,
        known_hosts=ssh.known_hosts,
        trust_unknown=trust,
        stall=ssh.stall_timeout,
        keep_open=ssh.keep_open,
    )


def on_loop(fn: Callable[..., object]) -> Callable[..., None]:
    """``fn`` made callable from another thread: each call is run on the running
    loop, in the caller's context, not the thread's (the caller's context
    variables, such as a UI framework's current app, must hold).  A call
    after the loop closed is dropped."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()

    def hop(*args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            loop.call_soon_threadsafe(fn, *args, context=context)

    return hop


def thread_progress(
    report: Callable[[str, int, int], None], name: str, interval: float
) -> sftp.Progress:
    """A ``(done, total)`` callback for an SFTP thread that calls ``report(name, done,
    total)`` on the running loop (`on_loop`), at most every ``interval`` seconds (and
    at the end)."""
    hop = on_loop(report)
    last = 0.0

    def throttled(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < interval:
            return
        last = now
        hop(name, done, total)

    return throttled
