"""The deploy dialog: file, app, nodes; a progress bar per node, then each node's report.

The dialog runs `run_deploy` (the local file check, in a thread, then
`Deployer.deploy`, the call behind ``POST /v1/deploy`` and ``:deploy``);
the dialog and ``:deploy`` share `ProgressFeed` and `summary`.  The feed keeps
the latest bytes per node from the master's progress callback and hands
them on at most every `PROGRESS_REFRESH` seconds, so a fast transfer to many
nodes repaints a few bars ten times a second, not once per callback.  The
report per node is the one ``corral deploy`` prints (`master.deploy_report`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, Static

from corral.master.control import VerbError
from corral.master.deploy_report import for_dialog, node_report
from corral.master.deployer import DeployResult, NodeDeploy
from corral.master.model import NodeView
from corral.master.text import human_bytes
from corral.tui.widgets.footer import DIALOG_BREAKPOINTS, KeyFooter
from corral.tui.widgets.node_picker import NodePicker, TickBox

PROGRESS_REFRESH = 0.1  # seconds: bars repaint at most 10 times a second

Deployer = Callable[..., Awaitable[DeployResult]]
Progress = dict[str, tuple[int, int]]  # node -> (sent bytes, total bytes)
SshCheck = Callable[[], str]  # why deploys cannot reach sshd here ("" when they can)


@dataclass(frozen=True)
class DeployRequest:
    """What to deploy where: the dialog's fields, or a parsed ``:deploy`` line."""

    file: str
    app: str | None = None
    nodes: tuple[str, ...] = ()
    all_nodes: bool = False
    libs: tuple[str, ...] = ()
    dry_run: bool = False
    trust_host_key: bool = False
    force: bool = False  # deploy it even if it is not a program


async def local_file(req: DeployRequest) -> Path:
    """The file to deploy, checked here in a thread; `VerbError` if it is not a file."""
    if not req.file.strip():
        raise VerbError("give the file to deploy")
    path = Path(req.file).expanduser().absolute()
    if not await asyncio.to_thread(path.is_file):
        raise VerbError(f"no such file here: {req.file}")
    return path


async def run_deploy(
    deployer: Deployer,
    req: DeployRequest,
    progress: Callable[[str, int, int], None],
    path: Path | None = None,
) -> DeployResult:
    """Deploy ``req`` (its file checked first unless ``path`` is the checked file).

    `VerbError` is an error of the whole verb (file, app name, libraries).
    """
    path = path or await local_file(req)
    return await deployer(
        path,
        app=req.app,
        nodes=req.nodes,
        all_nodes=req.all_nodes,
        libs=req.libs,
        dry_run=req.dry_run,
        trust_host_key=req.trust_host_key,
        progress=progress,
        force=req.force,
    )


def node_summary(r: Mapping[str, Any], dry_run: bool) -> str:
    """One node's outcome in a few words (``r`` in its JSON shape)."""
    if r["error"]:
        return f"{r['node']} failed: {r['error']}"
    if dry_run:
        send = sum(f["bytes"] for f in r["to_send"])
        return f"{r['node']} would send {len(r['to_send'])} ({human_bytes(send)})"
    sent, unchanged = len(r["sent"]), len(r["unchanged"])
    return f"{r['node']} sent {sent} ({human_bytes(r['bytes'])}), unchanged {unchanged}"


def summary(result: Mapping[str, Any]) -> str:
    """The whole deploy in one line (``result`` in its JSON shape), for a notification."""
    app, results = result["app"], result["results"]
    what = f"dry run of {app}" if result["dry_run"] else f"deployed {app}"
    if results and all(r["error"] for r in results):
        what = f"{app} not deployed"
    return f"{what}: " + "; ".join(node_summary(r, result["dry_run"]) for r in results)


class ProgressFeed:
    """The master's ``progress(node, sent, total)`` callback, coalesced for a view.

    Every call only records the node's latest numbers; the first call after
    a flush arms one timer on ``owner``, which hands ``flush`` the nodes that
    moved since the last one.  The timer is armed in the context the feed was
    made in, so the feed works even when called from a context where
    Textual's active app is unset (the master itself calls back in the
    deploying task's context).
    """

    def __init__(
        self,
        owner: DOMNode,
        flush: Callable[[Progress], None],
        interval: float = PROGRESS_REFRESH,
    ) -> None:
        self.owner = owner
        self.flush = flush
        self.interval = interval
        self.latest: Progress = {}
        self._moved: Progress = {}
        self._armed = False
        self._context = contextvars.copy_context()

    def __call__(self, node: str, sent: int, total: int) -> None:
        self.latest[node] = self._moved[node] = (sent, total)
        if not self._armed:
            self._armed = True
            self._context.run(self.owner.set_timer, self.interval, self.drain)

    def drain(self) -> None:
        """Hand on what moved now (also at the end, before the report replaces the bars)."""
        self._armed = False
        moved, self._moved = self._moved, {}
        if moved:
            self.flush(moved)


class NodeProgress(Vertical):
    """One node's row: name, bar and bytes; then its report once the deploy ended."""

    def __init__(self, node: str) -> None:
        super().__init__(classes="deploy-node")
        self.node = node

    def compose(self) -> ComposeResult:
        with Horizontal(classes="deploy-row"):
            yield Label(self.node, classes="deploy-name")
            yield ProgressBar(show_eta=False)
            yield Static("asking…", classes="deploy-bytes")
        yield Static("", classes="deploy-report", markup=False)

    def show_progress(self, sent: int, total: int) -> None:
        self.query_one(ProgressBar).update(total=total, progress=sent)
        text = f"{human_bytes(sent)} / {human_bytes(total)}" if total else "nothing to send"
        self.query_one(".deploy-bytes", Static).update(text)

    def show_result(self, r: NodeDeploy, dry_run: bool) -> None:
        bar = self.query_one(ProgressBar)
        if r.error:
            status = "failed"
            bar.update(total=1, progress=0)
        elif dry_run:
            status = "dry run: nothing sent"
            bar.display = False  # nothing moved: a full bar would say otherwise
        else:
            status = f"done in {r.seconds:.2f} s"
            total = r.bytes or 1
            bar.update(total=total, progress=total)
        self.set_class(bool(r.error), "failed")
        self.query_one(".deploy-bytes", Static).update(status)
        report = self.query_one(".deploy-report", Static)
        report.update(for_dialog(node_report(msgspec.to_builtins(r), dry_run)))
        report.display = True


class DeployDialog(ModalScreen[DeployResult | None]):
    """Deploy a file to nodes; stays open with the per-node report until closed."""

    VERTICAL_BREAKPOINTS = DIALOG_BREAKPOINTS

    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="Close the deploy dialog (cancels a deploy)"),
        Binding("ctrl+s", "deploy", "Deploy", tooltip="Deploy (Enter in a field does too)"),
    ]

    DEFAULT_CSS = """
    DeployDialog #deploy-notice { height: auto; color: $warning; text-style: bold; }
    """

    def __init__(
        self,
        nodes: Sequence[NodeView],
        preselect: str | None,
        deployer: Deployer,
        ssh_check: SshCheck | None = None,
        memory: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        # The last file and app given, kept by the caller for the session.
        self.memory = memory if memory is not None else {}
        self.ssh_check = ssh_check  # None: ask the app (`CorralApp.deploy_notice`)
        self.nodes = list(nodes)
        self.preselect = preselect
        self.deployer = deployer
        self.result: DeployResult | None = None
        self.feed = ProgressFeed(self, self._show_progress)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label("Deploy an executable", classes="dialog-title", id="deploy-title")
            yield Static("", id="deploy-notice", markup=False)
            with Vertical(id="deploy-form"):
                yield Label("File (an executable with its libraries, or a script, on this machine)")
                yield Input(
                    self.memory.get("deploy.file", ""),
                    placeholder="path/to/program",
                    id="deploy-file",
                    compact=True,
                )
                yield Label("App (optional, default: the file's name)")
                yield Input(
                    self.memory.get("deploy.app", ""),
                    placeholder="app name",
                    id="deploy-app",
                    compact=True,
                )
                yield NodePicker(self.nodes, self.preselect, id="deploy-nodes")
                yield TickBox(
                    "Dry run: show what would be sent, send nothing", id="deploy-dry", compact=True
                )
                yield TickBox(
                    "Trust host keys: record a node's unknown host key in known_hosts",
                    id="deploy-trust",
                    compact=True,
                )
                yield TickBox(
                    "Force: deploy it even if it is not a program (ELF or #! script)",
                    id="deploy-force",
                    compact=True,
                )
            yield VerticalScroll(id="deploy-run")
            yield Static("", id="deploy-line")
            with Horizontal(classes="buttons"):
                yield Button("Deploy", variant="primary", id="deploy")
                yield Button("Back", id="back")
                yield Button("Close", id="close")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._show_notice()
        self.query_one("#deploy-run").display = False
        self.query_one("#back").display = False
        self.query_one("#deploy-file", Input).focus()

    def _show_notice(self) -> None:
        """What keeps deploys from working here (no sshd), said before the form is filled in."""
        check = self.ssh_check or getattr(self.app, "deploy_notice", None)
        problem = check() if check is not None else ""
        notice = self.query_one("#deploy-notice", Static)
        notice.update(f"Deploy will fail: {problem}" if problem else "")
        notice.display = bool(problem)

    @on(Input.Changed, "#deploy-file")
    def _file_changed(self, event: Input.Changed) -> None:
        name = Path(event.value.strip()).name
        self.query_one("#deploy-app", Input).placeholder = name or "app name"

    # --- form -> run ----------------------------------------------------------
    def request(self) -> DeployRequest:
        """The form as a request (no checks)."""
        picker = self.query_one(NodePicker)
        return DeployRequest(
            file=self.query_one("#deploy-file", Input).value.strip(),
            app=self.query_one("#deploy-app", Input).value.strip() or None,
            nodes=tuple(picker.selected),
            all_nodes=picker.all_nodes,
            dry_run=self.query_one("#deploy-dry", Checkbox).value,
            trust_host_key=self.query_one("#deploy-trust", Checkbox).value,
            force=self.query_one("#deploy-force", Checkbox).value,
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#deploy")
    def action_deploy(self) -> None:
        if self.query_one("#deploy-form").display is False:
            return  # a deploy is running or its report is up
        line = self.query_one("#deploy-line", Static)
        req = self.request()
        self.memory["deploy.file"], self.memory["deploy.app"] = req.file, req.app or ""
        problem = "Give the file to deploy." if not req.file else ""
        if problem := problem or self.query_one(NodePicker).problem():
            line.update(problem)
            return
        line.update("Checking the file…")
        self._deploy(req, self.query_one(NodePicker).expected())

    @work(exclusive=True, group="deploy", exit_on_error=False)
    async def _deploy(self, req: DeployRequest, expected: list[str]) -> None:
        self.feed = ProgressFeed(self, self._show_progress)
        try:
            path = await local_file(req)
            await self._show_run(req, path, expected)
            result = await run_deploy(self.deployer, req, self.feed, path)
        except Exception as e:  # VerbError and anything else: one line, back to the form
            self._show_form()
            self.query_one("#deploy-line", Static).update(
                for_dialog(" ".join(str(e).split()) or type(e).__name__)
            )
            return
        self.feed.drain()
        await self._show_result(result)

    async def _show_run(self, req: DeployRequest, path: Path, nodes: list[str]) -> None:
        """Hide the form; one row per node the deploy is expected to reach."""
        app = req.app or path.name
        how = "Dry run of" if req.dry_run else "Deploying"
        where = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}:"
        self.query_one("#deploy-title", Label).update(f"{how} {app} ({req.file}) to {where}")
        self.query_one("#deploy-form").display = False
        self.query_one("#deploy-line", Static).update("")
        self.query_one("#deploy", Button).display = False
        run = self.query_one("#deploy-run", VerticalScroll)
        await run.remove_children()
        await run.mount_all(NodeProgress(n) for n in nodes)
        run.display = True

    def _row(self, node: str) -> NodeProgress:
        rows = [r for r in self.query(NodeProgress) if r.node == node]
        if rows:
            return rows[0]
        row = NodeProgress(node)  # a node the snapshot did not expect: add it
        self.query_one("#deploy-run").mount(row)
        return row

    def _show_progress(self, moved: Progress) -> None:
        with self.app.batch_update():
            for node, (sent, total) in moved.items():
                self._row(node).show_progress(sent, total)

    async def _show_result(self, result: DeployResult) -> None:
        self.result = result
        for r in result.results:
            self._row(r.node).show_result(r, result.dry_run)
        run = self.query_one("#deploy-run", VerticalScroll)
        for row in list(run.query(NodeProgress)):
            if row.node not in {r.node for r in result.results}:
                await row.remove()
        line = self.query_one("#deploy-line", Static)
        line.set_class(not result.failed, "ok")
        line.update(for_dialog(summary(msgspec.to_builtins(result))))
        self.query_one("#back").display = True
        self.query_one("#close", Button).focus()

    def _show_form(self) -> None:
        self.query_one("#deploy-title", Label).update("Deploy an executable")
        self.query_one("#deploy-run").display = False
        self.query_one("#back").display = False
        self.query_one("#deploy", Button).display = True
        self.query_one("#deploy-form").display = True
        self.query_one("#deploy-line", Static).remove_class("ok")

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self._show_form()
        self.query_one("#deploy-line", Static).update("")
        self.query_one("#deploy-file", Input).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.workers.cancel_group(self, "deploy")
        self.dismiss(self.result)
