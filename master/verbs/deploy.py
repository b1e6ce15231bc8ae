"""``corral deploy FILE``: copy an executable and the libraries it needs to nodes.

Wire::

    POST /v1/deploy {"file": "/abs/build/server", "app": null, "nodes": ["n1"],
                     "all": false, "libs": ["/abs/plugins/libx.so"], "dry_run": false,
                     "trust_host_key": false, "force": false,
                     "ld_library_path": "/abs/build/lib"}
    -> {"app", "file", "dry_run", "libraries": [path], "system": [soname],
        "plan": "<text>",
        "results": [{"node", "to_send": [{"path", "bytes"}], "unchanged": [...],
                     "sent": [{"path", "bytes", "seconds"}], "bytes", "seconds",
                     "error"}]}

``file`` and ``libs`` are absolute paths on the master's machine (the CLI
runs beside it).  ``ld_library_path`` is the caller's ``LD_LIBRARY_PATH``
(absolute entries), which resolves the libraries as the loader would for
the caller; without it the master's own is used.  A file that is neither an
ELF executable nor a ``#!`` script is refused unless ``force``.  A node that
failed has its one-line ``error``; errors in the input fail the whole
request (400, 404 for a missing file or an unknown node) before anything
is sent.
"""

from __future__ import annotations

import os

from corral.master.deploy_report import node_report
from corral.master.verbs.base import Api, Args, Output, Plane, Reply, Shape, Verb, node_choice

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from corral.master.verbs.shapes import FilePath, FilePaths, Names, SearchPath, Text

DEPLOY_TIMEOUT = 6 * 3600.0  # the master answers once every node is done


class DeployRequest(Shape):
    file: FilePath
    app: Text | None = None
    nodes: Names = []
    all: bool = False
    libs: FilePaths = []
    dry_run: bool = False
    trust_host_key: bool = False
    force: bool = False
    ld_library_path: SearchPath | None = None


def absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def caller_library_path() -> str:
    """This process's ``LD_LIBRARY_PATH``, each entry made absolute (the master's cwd differs)."""
    entries = os.environ.get("LD_LIBRARY_PATH", "").replace(";", ":").split(":")
    return ":".join(os.path.abspath(e) if "$" not in e else e for e in entries if e)


class Deploy(Verb[DeployRequest]):
    name = "deploy"
    summary = "copy an executable and the non-system libraries it needs to nodes"
    description = """\
Reads the file's ELF dependencies (never by running it), resolves them as the
loader would (with your LD_LIBRARY_PATH), and leaves out the system's own
libraries (libc, libm, ...). Each node is asked for the sha256 of its copies;
only files that differ are sent, over SFTP to the node's sshd, each under a
temporary name and then renamed into place. Unknown SSH host keys are refused
unless --trust-host-key (or trust_unknown_host_keys in the master's
config.toml); a changed key is always refused. A file that is neither an ELF
executable nor a #! script is refused unless --force. The app's programs then
run by name, with its lib/ on LD_LIBRARY_PATH."""
    examples = """\
corral deploy ./build/server --all
corral deploy ./build/server --app web --node n1 --node n2 --lib ./plugins/libx.so
LD_LIBRARY_PATH=./build/lib corral deploy ./build/server --all --dry-run"""
    json_help = "print the results as JSON"
    method = "POST"
    path = "/v1/deploy"
    shape = DeployRequest

    def declare(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("file", metavar="FILE", help="the executable (or script) to deploy")
        p.add_argument("--app", metavar="APP", help="the app to deploy into (default: FILE's name)")
        node_choice(p)
        p.add_argument(
            "--lib", metavar="PATH", action="append", default=[], help="one more file for lib/"
        )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would be sent and log in to each node's sshd; send nothing",
        )
        p.add_argument(
            "--trust-host-key",
            action="store_true",
            help="record unknown SSH host keys (not changed)",
        )
        p.add_argument(
            "--force", action="store_true", help="deploy FILE even if it is not a program"
        )

    def request(self, args: Args) -> dict[str, Any]:
        return {
            "file": absolute(args.file),
            "app": args.app,
            "nodes": args.node or [],
            "all": bool(args.all),
            "libs": [absolute(p) for p in args.lib or []],
            "dry_run": bool(args.dry_run),
            "trust_host_key": bool(args.trust_host_key),
            "force": bool(args.force),
            "ld_library_path": caller_library_path(),
        }

    async def call(self, plane: Plane, req: DeployRequest) -> Reply:
        return await plane.deployer.deploy(
            req.file,
            app=req.app or None,
            nodes=req.nodes,
            all_nodes=req.all,
            libs=req.libs,
            dry_run=req.dry_run,
            trust_host_key=req.trust_host_key,
            force=req.force,
            ld_library_path=req.ld_library_path,
            progress=plane.progress,
        )

    def text(self, args: Args, reply: Reply) -> Output:
        app = reply.get("app") or args.app or os.path.basename(args.file)
        out, err = [], []
        for r in reply.get("results") or []:
            if r.get("error"):
                err.append(f"deploy {app} to {r.get('node', '?')}: {r['error']}")
            else:
                out.append(node_report(r, bool(reply.get("dry_run"))))
        return Output(out, err, 1 if err else 0)

    def run(self, args: Args, api: Api) -> int:
        api.timeout = DEPLOY_TIMEOUT
        return super().run(args, api)


VERB = Deploy()
