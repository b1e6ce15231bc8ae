"""A deploy's report as people read it: one block per node.

The one formatter of deploy results, for ``corral deploy``, the dashboard's
deploy dialog and the ``plan`` text of the API's reply.  It reads a node's
result in its JSON shape (`master.deployer.NodeDeploy` as builtins: a
mapping with ``node``, ``to_send``, ``unchanged``, ``sent``, ``bytes``,
``seconds``, ``error``), so the command line needs nothing but this module::

    n1: sent 2 (30K) in 0.15s, unchanged 0 (0B)
      sent       bin/hello          16K   0.00s  3.3M/s
      sent       lib/libgreet.so    15K   0.00s  15M/s

and for a dry run (which logs in to each node's sshd, writing nothing)::

    n1: would send 2 (30K), unchanged 0 (0B)
      send       bin/hello          16K
      send       lib/libgreet.so    15K
      ssh        me@10.0.0.1:22: logged in, nothing written

Standard library only.
"""

from __future__ import annotations

from corral.master.text import human_bytes

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    NodeResult = Mapping[str, Any]  # a type alias, for mypy only


def _seconds(s: float) -> str:
    return f"{s:.2f}s"


def _rate(n: int, s: float) -> str:
    return f"{human_bytes(n / s)}/s" if s > 0 and n else "-"


def _files(r: NodeResult, key: str) -> list[Mapping[str, Any]]:
    return list(r.get(key) or [])


def _total(files: Sequence[Mapping[str, Any]]) -> int:
    return sum(int(f["bytes"]) for f in files)


def _width(*groups: Sequence[Mapping[str, Any]]) -> int:
    return max((len(f["path"]) for group in groups for f in group), default=0)


def sent_report(r: NodeResult) -> str:
    """After a deploy: the node's summary line, then each file sent and unchanged."""
    sent, unchanged = _files(r, "sent"), _files(r, "unchanged")
    width = _width(sent, unchanged)
    lines = [
        f"{r['node']}: sent {len(sent)} ({human_bytes(r.get('bytes', 0))}) "
        f"in {_seconds(float(r.get('seconds', 0.0)))}, "
        f"unchanged {len(unchanged)} ({human_bytes(_total(unchanged))})"
    ]
    for f in sent:
        lines.append(
            f"  sent       {f['path']:<{width}}  {human_bytes(f['bytes']):>5}  "
            f"{_seconds(f['seconds']):>6}  {_rate(f['bytes'], f['seconds'])}"
        )
    lines += [f"  unchanged  {f['path']:<{width}}  {human_bytes(f['bytes']):>5}" for f in unchanged]
    return "\n".join(lines)


def plan_report(r: NodeResult) -> str:
    """A dry run: what would be sent to the node and what is already there."""
    send, unchanged = _files(r, "to_send"), _files(r, "unchanged")
    width = _width(send, unchanged)
    lines = [
        f"{r['node']}: would send {len(send)} ({human_bytes(_total(send))}), "
        f"unchanged {len(unchanged)} ({human_bytes(_total(unchanged))})"
    ]
    for label, group in (("send", send), ("unchanged", unchanged)):
        lines += [
            f"  {label:<9}  {f['path']:<{width}}  {human_bytes(f['bytes']):>5}" for f in group
        ]
    if r.get("ssh"):
        lines.append(f"  ssh        {r['ssh']}: logged in, nothing written")
    return "\n".join(lines)


def node_report(r: NodeResult, dry_run: bool) -> str:
    """One node's block: its plan (dry run) or what was sent; its error if it failed."""
    if r.get("error"):
        return str(r["error"])
    return plan_report(r) if dry_run else sent_report(r)


# The command line's words for what to do, and the deploy dialog's for the same.
_DIALOG_WORDS = (
    ("rerun with --trust-host-key", "tick Trust host keys"),
    ("--force deploys it anyway", "tick Force to deploy it anyway"),
    ("use --force", "tick Force"),
    ("--trust-host-key", "Trust host keys"),
    ("--force", "Force"),
)


def for_dialog(text: str) -> str:
    """A deploy message in the dialog's words: "tick Trust host keys", not "--trust-host-key"."""
    for cli, dialog in _DIALOG_WORDS:
        text = text.replace(cli, dialog)
    return text


def plan_text(results: Sequence[NodeResult]) -> str:
    """Every node's plan, one block after another (the API reply's ``plan``)."""
    return "\n".join(plan_report(r) for r in results if not r.get("error"))
