"""``corral logs``: a process's log (stdout and stderr), or ``-f`` to follow it.

Wire::

    GET /v1/logs?target=n1:4242&tail=10&offset=K&follow=1
    -> {"offset": 0, "data": "<base64>", "eof": false}            (follow=0)
    -> NDJSON, one such object a line, until "eof": true          (follow=1)

``tail`` is the last N lines; ``offset``, when given, reads the bytes from
there instead.  ``eof`` is true once the process has ended and everything
is read; that piece also carries how it ended: ``"end": {"state": "exited",
"reason": "exited 3", "exit_code": 3, "signal": null}``.  A stream that
breaks mid-way (its node disconnected) ends with ``{"error": "..."}``.

``corral logs -f`` prints that end on stderr (``corral: n1:4242 exited 3``)
and exits with the program's status (128 + the signal's number for a killed
one), as ``kubectl logs -f`` does; a broken stream is resumed from the last
byte printed.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from corral.master.verbs.base import (
    Api,
    ApiError,
    Args,
    CommandError,
    Limits,
    Output,
    Plane,
    Reply,
    Shape,
    Unreachable,
    Verb,
    invalid,
    target,
    warn,
)
from corral.master.verbs.shapes import Text

if TYPE_CHECKING:
    import argparse

    from corral.master.control import LogPiece, Master

MAX_TAIL = 2**31 - 1
FOLLOW_DEADLINE = 30.0  # give up following after this long without reaching the master


class LogsQuery(Shape):
    target: Text = ""
    tail: Annotated[int, Limits(ge=0, le=MAX_TAIL)] = 10
    offset: Annotated[int, Limits(ge=0, le=2**63 - 1)] | None = None
    follow: bool = False


def tail_lines(text: str) -> int | None:
    """An argparse type: ``--tail N`` (None for ``all``)."""
    if text == "all":
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_TAIL:
        raise invalid(f"expected a number of lines (up to {MAX_TAIL}) or 'all', got {text!r}")
    return int(text)


def exit_status(end: dict[str, Any]) -> int:
    """The status a shell gives a program that ended so: its code, or 128 + signal."""
    if end.get("state") == "exited" and isinstance(end.get("exit_code"), int):
        return int(end["exit_code"])
    if end.get("state") == "killed" and end.get("signal"):
        import signal

        try:
            return 128 + int(signal.Signals[str(end["signal"])])
        except KeyError:
            return 1
    return 1  # it ended while nobody could record how


# --- the master's side ----------------------------------------------------------------
def _end(master: Master, target: str) -> dict[str, Any] | None:
    proc = master.cluster.proc(target)
    if proc is None or proc.alive:
        return None
    return {
        "state": proc.state,
        "reason": proc.reason,
        "exit_code": proc.exit_code,
        "signal": proc.signal,
    }


def _piece(master: Master, target: str, piece: LogPiece) -> dict[str, Any]:
    out: dict[str, Any] = {
        "offset": piece.offset,
        "data": base64.b64encode(piece.data).decode(),
        "eof": piece.eof,
    }
    if piece.eof and (end := _end(master, target)) is not None:
        out["end"] = end
    return out


async def _stream(
    master: Master, target: str, first: LogPiece, pieces: AsyncGenerator[LogPiece, None]
) -> AsyncIterator[dict[str, Any]]:
    try:
        yield _piece(master, target, first)
        async for piece in pieces:
            yield _piece(master, target, piece)
    finally:
        await pieces.aclose()


# --- the command line's side ---------------------------------------------------------
def _emit(args: Args, piece: dict[str, Any], data: bytes) -> None:
    """Print ``data``, or with ``--json`` the piece it came in as one JSON line."""
    out = sys.stdout.buffer
    if args.json:
        line = {**piece, "data": base64.b64encode(data).decode()}
        out.write(json.dumps(line).encode() + b"\n")
    else:
        out.write(data)
    out.flush()


def _write(args: Args, piece: dict[str, Any]) -> bytes:
    """Print one whole piece; its bytes."""
    data = base64.b64decode(piece.get("data", ""))
    _emit(args, piece, data)
    return data


class Logs(Verb[LogsQuery]):
    name = "logs"
    summary = "print a process's log (stdout and stderr)"
    description = (
        "With -f, keeps printing as the log grows until the process has ended, then\n"
        "prints how it ended on stderr and exits with the program's exit status\n"
        "(128 + N if signal N killed it); a dropped connection is resumed from the\n"
        "last byte printed."
    )
    examples = "corral logs n1:4242 --tail 100\ncorral logs -f n1:4242"
    json_help = 'print each piece as a JSON line: {"offset", "data" (base64), "eof"}'
    path = "/v1/logs"
    shape = LogsQuery

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("target", metavar="NODE:PID", type=target)
        p.add_argument("-f", "--follow", action="store_true", help="follow until the process ends")
        p.add_argument(
            "--tail",
            metavar="N",
            type=tail_lines,
            default="10",
            help="last N lines, or 'all' (default 10)",
        )

    def request(self, args: Args) -> dict[str, Any]:
        every = args.tail is None
        return {
            "target": args.target,
            "tail": None if every else args.tail,
            "offset": 0 if every else None,
            "follow": bool(args.follow),
        }

    async def call(self, plane: Plane, req: LogsQuery) -> Reply:
        master = plane.master
        if not req.follow:
            return _piece(master, req.target, await master.logs(req.target, req.tail, req.offset))
        pieces = master.follow(req.target, req.tail, req.offset)
        first = await anext(pieces)  # an unknown process still answers with a status
        return _stream(master, req.target, first, pieces)

    def text(self, args: Args, reply: Reply) -> Output:
        data = base64.b64decode(reply.get("data", ""))
        return Output(data.decode(errors="replace").splitlines())

    def run(self, args: Args, api: Api) -> int:
        if args.follow:
            return self._follow(args, api)
        if args.tail is not None:
            _write(args, api.request("GET", self.path, target=args.target, tail=args.tail))
            return 0
        offset = 0
        while True:  # the whole log, a chunk at a time
            piece = api.request("GET", self.path, target=args.target, offset=offset)
            data = _write(args, piece)
            offset = int(piece.get("offset", offset)) + len(data)
            if not data or piece.get("eof"):
                return 0

    def _follow(self, args: Args, api: Api) -> int:
        """Copy the log stream to stdout until the process has ended and all is read.

        If the connection drops, ask again from the last byte written, so
        nothing is lost or repeated.  While reconnecting, a master that is
        down, restarting, or still waiting for the node to come back is
        retried with backoff for up to `FOLLOW_DEADLINE` seconds.
        """
        nxt = None if args.tail is not None else 0  # next byte wanted; None: from the tail
        streamed = False  # once the stream has worked, failures are worth retrying
        failing_since: float | None = None
        pause = 0.1
        while True:
            try:
                for piece in self._pieces(api, args, nxt):
                    streamed, failing_since, pause = True, None, 0.1
                    if "error" in piece:
                        raise Unreachable(str(piece["error"]))  # e.g. the node disconnected
                    nxt = self._resume(args, piece, nxt)
                    if piece.get("eof"):
                        return self._ended(args.target, piece.get("end"))
                problem = "the log stream ended early"
            except ApiError as e:
                if not streamed or e.http_status == 401:
                    raise
                problem = str(e)  # a restarted master may not know the node yet
            except Unreachable as e:
                if not streamed:
                    raise
                problem = str(e)
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
            elif now - failing_since > FOLLOW_DEADLINE:
                raise CommandError(f"gave up following {args.target}: {problem}")
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _pieces(self, api: Api, args: Args, nxt: int | None) -> Any:
        tail = args.tail if nxt is None else None
        return api.stream(self.path, target=args.target, tail=tail, offset=nxt, follow="1")

    @staticmethod
    def _resume(args: Args, piece: dict[str, Any], nxt: int | None) -> int:
        """Print what of ``piece`` is new; the next byte wanted."""
        start = int(piece.get("offset", 0))
        data = base64.b64decode(piece.get("data", ""))
        if nxt is not None and start < nxt:
            data = data[nxt - start :]  # never print a byte twice
            start = nxt
        if data or args.json:
            _emit(args, {**piece, "offset": start}, data)
        return start + len(data)

    @staticmethod
    def _ended(key: str, end: dict[str, Any] | None) -> int:
        """Say how the followed process ended; its exit status."""
        if end is None:
            return 0
        warn(f"{key} {end.get('reason') or end.get('state')}")
        return exit_status(end)


VERB = Logs()
