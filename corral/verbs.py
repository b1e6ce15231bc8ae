"""The client verbs: each turns parsed arguments into API calls and output.

A verb returns its exit status; expected failures raise `CliError` with
the one line to print.  Normal output goes to stdout, per-item failures
(a node where launch failed, a signal not delivered) to stderr, one line
each.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from corral.client import ApiError, Client, CliError, Unreachable
from corral.table import cpu_seconds, duration, human_bytes, render

Verb = Callable[[argparse.Namespace], int]

FOLLOW_DEADLINE = 30.0  # give up following after this long without reaching the master


def _client(args: argparse.Namespace) -> Client:
    return Client.from_args(args.api, args.state_dir)


def _print_json(body: Any) -> None:
    print(json.dumps(body, indent=2))


def _warn(line: str) -> None:
    print(f"corral: {line}", file=sys.stderr)


def _check_target(target: str) -> str:
    node, sep, pid = target.rpartition(":")
    if not sep or not node or not (pid.isascii() and pid.isdigit()):
        raise CliError(f"bad process name {target!r}: expected NODE:PID", 2)
    return target


def _state_text(p: dict[str, Any]) -> str:
    return str(p.get("reason") or p.get("state") or "?")


def _run_time(p: dict[str, Any], now: float) -> float:
    end = p.get("ended_at") or now
    return max(0.0, float(end) - float(p.get("started_at") or end))


# --- nodes --------------------------------------------------------------------
def nodes(args: argparse.Namespace) -> int:
    body = _client(args).get("/v1/nodes")
    if args.json:
        _print_json(body)
        return 0
    now = time.time()
    rows = []
    for n in body.get("nodes", []):
        used = human_bytes(n["mem_used"]) if n.get("mem_used") else "-"  # before the 1st beat
        mem = f"{used}/{human_bytes(n.get('mem_total'))}"
        rows.append(
            (
                n["name"],
                n["state"],
                n.get("hostname", ""),
                n.get("address", ""),
                n.get("cpus", ""),
                f"{float(n.get('cpu_percent', 0.0)):.0f}%",
                mem,
                f"{float(n.get('load1', 0.0)):.2f}",
                f"{n.get('procs_running', 0)}/{n.get('procs_total', 0)}",
                duration(now - float(n.get("last_beat", now))),
            )
        )
    if not rows:
        print("no nodes have joined yet")
        return 0
    headers = ("NODE", "STATE", "HOST", "ADDRESS", "CPUS", "CPU", "MEM", "LOAD", "PROCS", "BEAT")
    print(render(headers, rows, right=("CPUS", "CPU", "MEM", "LOAD", "PROCS", "BEAT")))
    return 0


# --- ps -----------------------------------------------------------------------------
def ps(args: argparse.Namespace) -> int:
    body = _client(args).get("/v1/ps", node=args.node, all="1" if args.all else None)
    if args.json:
        _print_json(body)
        return 0
    procs = sorted(body.get("procs", []), key=lambda p: (p["node"], p.get("started_at", 0)))
    if not procs:
        where = f" on {args.node}" if args.node else ""
        print(f"no {'' if args.all else 'running '}processes{where}")
        return 0
    now = time.time()
    rows = [
        (
            f"{p['node']}:{p['pid']}",
            p.get("app", ""),
            _state_text(p),
            cpu_seconds(float(p.get("cpu_user", 0)) + float(p.get("cpu_sys", 0))),
            human_bytes(p.get("rss")) if p.get("rss") else "-",
            duration(_run_time(p, now)),
            " ".join(p.get("argv", [])),
        )
        for p in procs
    ]
    headers = ("PROC", "APP", "STATE", "CPU", "RSS", "TIME", "COMMAND")
    print(render(headers, rows, right=("CPU", "RSS", "TIME")))
    return 0


# --- launch -------------------------------------------------------------------
def launch(args: argparse.Namespace) -> int:
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        raise CliError("nothing to launch: give a program after --, e.g. -- sleep 30", 2)
    if not args.node and not args.all:
        raise CliError("no node chosen: give --node NAME (repeatable) or --all", 2)
    # One key per invocation: if the reply is lost, asking again with it
    # returns the processes this launch started instead of starting more.
    key = args.key or uuid.uuid4().hex
    body = {
        "argv": program,
        "nodes": args.node or [],
        "all": bool(args.all),
        "app": args.app,
        "key": key,
    }
    client = _client(args)
    try:
        try:
            reply = client.post("/v1/launch", body)
        except Unreachable:
            reply = client.post("/v1/launch", body)  # the same key: at most one launch happens
    except Unreachable as e:
        if not e.connected:
            raise
        # It may have started before the master went away: say how to find out safely.
        raise Unreachable(
            f"{e}; the launch may have started: rerun with --key {key} to get its "
            "processes without starting more"
        ) from None
    errors: dict[str, str] = reply.get("errors") or {}
    if args.json:
        _print_json(reply)
    else:
        for p in reply.get("procs", []):
            print(f"{p['node']}:{p['pid']}")
    for node, message in errors.items():
        _warn(f"launch on {node} failed: {message}")
    return 1 if errors else 0


# --- stop / kill ----------------------------------------------------------------
def _signal(args: argparse.Namespace, signal: str) -> int:
    targets = [_check_target(t) for t in args.targets]
    reply = _client(args).post("/v1/signal", {"targets": targets, "signal": signal})
    results = reply.get("results", [])
    if args.json:
        _print_json(reply)
    failed = 0
    for r in results:
        if r.get("delivered"):
            if not args.json:
                print(f"delivered {signal} to {r['target']}")
        else:
            failed += 1
            message = r.get("message") or f"{signal} not delivered"
            _warn(message if r["target"] in message else f"{r['target']}: {message}")
    return 1 if failed else 0


def stop(args: argparse.Namespace) -> int:
    return _signal(args, "SIGINT")


def kill(args: argparse.Namespace) -> int:
    return _signal(args, "SIGKILL")


# --- logs ---------------------------------------------------------------------------
def _write(data: bytes) -> None:
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def logs(args: argparse.Namespace) -> int:
    target = _check_target(args.target)
    tail: str = args.tail
    every = tail == "all"
    if not every and not (tail.isascii() and tail.isdigit()):
        raise CliError(f"bad --tail {tail!r}: expected a number of lines or 'all'", 2)
    client = _client(args)
    if args.follow:
        return _follow(client, target, None if every else int(tail), 0 if every else None)
    if not every:
        piece = client.get("/v1/logs", target=target, tail=tail)
        _write(base64.b64decode(piece.get("data", "")))
        return 0
    offset = 0
    while True:  # the whole log, a chunk at a time
        piece = client.get("/v1/logs", target=target, offset=offset)
        data = base64.b64decode(piece.get("data", ""))
        _write(data)
        offset = int(piece.get("offset", offset)) + len(data)
        if not data or piece.get("eof"):
            return 0


def _follow(client: Client, target: str, tail: int | None, offset: int | None) -> int:
    """Copy the log stream to stdout until the process has ended and all is read.

    If the connection drops, ask again from the last byte written, so
    nothing is lost or repeated.  While reconnecting, a master that is
    down, restarting, or still waiting for the node to come back is
    retried with backoff for up to `FOLLOW_DEADLINE` seconds.
    """
    nxt = offset  # next byte wanted; None until the first piece tells us
    streamed = False  # once the stream has worked, failures are worth retrying
    failing_since: float | None = None
    pause = 0.1
    while True:
        try:
            pieces = client.stream(
                "/v1/logs",
                target=target,
                tail=tail if nxt is None else None,
                offset=nxt,
                follow="1",
            )
            for piece in pieces:
                streamed, failing_since, pause = True, None, 0.1
                if "error" in piece:
                    raise Unreachable(str(piece["error"]))  # e.g. the node disconnected
                start = int(piece.get("offset", 0))
                data = base64.b64decode(piece.get("data", ""))
                if nxt is not None and start < nxt:
                    data = data[nxt - start :]  # never print a byte twice
                    start = nxt
                if data:
                    _write(data)
                nxt = start + len(data)
                if piece.get("eof"):
                    return 0
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
            raise CliError(f"gave up following {target}: {problem}")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


# --- usage --------------------------------------------------------------------------
def usage(args: argparse.Namespace) -> int:
    body = _client(args).get("/v1/usage", node=args.node)
    if args.json:
        _print_json(body)
        return 0
    node_rows = []
    proc_rows = []
    for n in body.get("nodes", []):
        procs = n.get("procs", [])
        node_rows.append(
            (
                n["node"],
                len(procs),
                cpu_seconds(n.get("children_user")),
                cpu_seconds(n.get("children_sys")),
                human_bytes(n.get("children_max_rss")),
            )
        )
        for p in sorted(procs, key=lambda p: p.get("started_at", 0)):
            proc_rows.append(
                (
                    f"{p['node']}:{p['pid']}",
                    p.get("app", ""),
                    _state_text(p),
                    cpu_seconds(p.get("cpu_user")),
                    cpu_seconds(p.get("cpu_sys")),
                    human_bytes(p.get("rss")) if p.get("rss") else "-",
                    human_bytes(p.get("max_rss")) if p.get("max_rss") else "-",
                    " ".join(p.get("argv", [])),
                )
            )
    if not node_rows:
        print("no connected nodes")
        return 0
    if proc_rows:
        headers = ("PROC", "APP", "STATE", "USER", "SYS", "RSS", "MAX RSS", "COMMAND")
        print(render(headers, proc_rows, right=headers[3:7]))
        print()
    node_headers = ("NODE", "PROCS", "CHILDREN USER", "CHILDREN SYS", "CHILDREN MAX RSS")
    print(render(node_headers, node_rows, right=node_headers[1:]))
    return 0


# --- rm -----------------------------------------------------------------------------
def _summary(items: Iterable[object], limit: int = 4) -> str:
    texts = [str(i) for i in items]
    if len(texts) <= limit:
        return ", ".join(texts)
    return ", ".join(texts[:limit]) + f" and {len(texts) - limit} more"


def rm(args: argparse.Namespace) -> int:
    body = {
        "app": args.app,
        "nodes": args.node or [],
        "all": bool(args.all),
        "force": bool(args.force),
        "logs": bool(args.logs),
    }
    reply = _client(args).post("/v1/rm", body)
    if args.json:
        _print_json(reply)
    failed = 0
    for r in reply.get("results", []):
        node = r.get("node", "?")
        if r.get("error"):
            failed += 1
            _warn(f"rm {args.app} on {node}: {r['error']}")
            continue
        if args.json:
            continue
        removed = r.get("removed") or []
        stopped = r.get("stopped") or []
        what = f"removed {_summary(removed)}" if removed else f"nothing of {args.app} to remove"
        if stopped:
            what += f" (stopped {_summary(f'{node}:{pid}' for pid in stopped)})"
        print(f"{node}: {what}")
    return 1 if failed else 0
