"""``corral deploy FILE``: copy an executable and the libraries it needs to nodes.

A verb module of its own: `add_parser` adds ``deploy`` to the CLI's
subparsers, `run` performs it against the master's ``POST /v1/deploy``.
FILE and every ``--lib`` are sent as absolute paths: the master reads them
(it runs on the operator's machine).

Output, per node: the files sent with bytes and time, then the files that
were already identical there; with ``--dry-run``, the plan.  A node that
failed is one line on stderr, and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from corral.client import Client
from corral.table import human_bytes

SUMMARY = "copy an executable and the non-system libraries it needs to nodes"
DESCRIPTION = """\
Reads the file's ELF dependencies (never by running it), resolves them as the
loader would, and leaves out the system's own libraries (libc, libm, ...).
Each node is asked for the sha256 of its copies; only files that differ are
sent, over SFTP to the node's sshd, each under a temporary name and then
renamed into place. Unknown SSH host keys are refused unless --trust-host-key
(or trust_unknown_host_keys in the master's config.toml); a changed key is
always refused. The app's programs then run by name, with its lib/ on
LD_LIBRARY_PATH."""
EXAMPLES = """\
corral deploy ./build/server --all
corral deploy ./build/server --app web --node n1 --node n2 --lib ./plugins/libx.so
corral deploy ./build/server --all --dry-run"""

DEPLOY_TIMEOUT = 6 * 3600.0  # the master answers once every node is done


def add_parser(
    subparsers: argparse._SubParsersAction[Any], common_parents: Sequence[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    """Add ``deploy`` to ``subparsers``; ``common_parents`` carry --api/--state-dir."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "deploy",
        help=SUMMARY,
        description=f"{SUMMARY}\n\n{DESCRIPTION}",
        epilog="example:\n" + "\n".join(f"  {line}" for line in EXAMPLES.splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(common_parents),
    )
    p.add_argument("file", metavar="FILE", help="the executable (or script) to deploy")
    p.add_argument("--app", metavar="APP", help="the app to deploy into (default: FILE's name)")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--node", metavar="NAME", action="append", help="a node (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every alive node")
    p.add_argument(
        "--lib", metavar="PATH", action="append", default=[], help="one more file for lib/"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be sent; send nothing")
    p.add_argument(
        "--trust-host-key", action="store_true", help="record unknown SSH host keys (not changed)"
    )
    if not any("--json" in parent._option_string_actions for parent in common_parents):
        p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def _seconds(s: float) -> str:
    return f"{s:.2f}s"


def _rate(n: int, s: float) -> str:
    return f"{human_bytes(n / s)}/s" if s > 0 and n else "-"


def format_node(r: dict[str, Any]) -> str:
    """One node's report: a summary line, then each file sent and unchanged."""
    sent: list[dict[str, Any]] = r.get("sent") or []
    unchanged: list[dict[str, Any]] = r.get("unchanged") or []
    same = sum(int(f["bytes"]) for f in unchanged)
    head = (
        f"{r['node']}: sent {len(sent)} ({human_bytes(r.get('bytes', 0))}) "
        f"in {_seconds(float(r.get('seconds', 0.0)))}, "
        f"unchanged {len(unchanged)} ({human_bytes(same)})"
    )
    width = max((len(f["path"]) for f in [*sent, *unchanged]), default=0)
    lines = [head]
    for f in sent:
        lines.append(
            f"  sent       {f['path']:<{width}}  {human_bytes(f['bytes']):>7}  "
            f"{_seconds(f['seconds']):>6}  {_rate(f['bytes'], f['seconds'])}"
        )
    lines += [f"  unchanged  {f['path']:<{width}}  {human_bytes(f['bytes']):>7}" for f in unchanged]
    return "\n".join(lines)


def format_plan(r: dict[str, Any]) -> str:
    """One node's ``--dry-run`` plan: what would be sent and what is already there."""
    send: list[dict[str, Any]] = r.get("to_send") or []
    unchanged: list[dict[str, Any]] = r.get("unchanged") or []
    width = max((len(f["path"]) for f in [*send, *unchanged]), default=0)
    lines = [
        f"{r['node']}: would send {len(send)} ({human_bytes(sum(f['bytes'] for f in send))}), "
        f"unchanged {len(unchanged)} ({human_bytes(sum(f['bytes'] for f in unchanged))})"
    ]
    for label, group in (("send", send), ("unchanged", unchanged)):
        lines += [
            f"  {label:<9}  {f['path']:<{width}}  {human_bytes(f['bytes']):>7}" for f in group
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Deploy as ``args`` say; 0 if every node succeeded, 1 if any failed."""
    body = {
        "file": os.path.abspath(os.path.expanduser(args.file)),
        "app": args.app,
        "nodes": args.node or [],
        "all": bool(args.all),
        "libs": [os.path.abspath(os.path.expanduser(p)) for p in args.lib or []],
        "dry_run": bool(args.dry_run),
        "trust_host_key": bool(args.trust_host_key),
    }
    client = Client.from_args(args.api, args.state_dir)
    client.timeout = DEPLOY_TIMEOUT
    reply: dict[str, Any] = client.post("/v1/deploy", body)
    results: list[dict[str, Any]] = reply.get("results") or []
    app = reply.get("app") or args.app or os.path.basename(args.file)
    if getattr(args, "json", False):
        print(json.dumps(reply, indent=2))
    else:
        for r in results:
            if not r.get("error"):
                print(format_plan(r) if args.dry_run else format_node(r))
    failed = 0
    for r in results:
        if r.get("error"):
            failed += 1
            print(f"corral: deploy {app} to {r.get('node', '?')}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
