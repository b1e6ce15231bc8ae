"""The fetch dialog (``f`` on a job): where to, then a progress bar per node, then the result.

It asks for the directory (the current one first, then the last one
given this session); the job's files go into ``DIR/ID/INDEX-NODE/`` as
``corral fetch`` puts them (`master.fetch`).  While it runs, each node's
bar shows the bytes copied (`ProgressFeed` coalesces the callbacks, as
the deploy dialog's do); at the end each replica's line says how many
files came, how much, and where, with its errors, as ``corral fetch``
prints them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static

from corral.master.fetch import FetchProgress, FetchResult
from corral.master.text import human_bytes
from corral.master.verbs.fetch import result_lines
from corral.tui.widgets.deploy import NodeProgress, Progress, ProgressFeed
from corral.tui.widgets.footer import DIALOG_BREAKPOINTS, KeyFooter

RunFetch = Callable[[str, FetchProgress], Awaitable[FetchResult]]  # (to, progress) -> result


def fetch_summary(result: FetchResult) -> str:
    """The whole fetch in one line, for a notification."""
    files = sum(len(r.files) for r in result.replicas)
    failed = sum(1 for r in result.replicas if r.errors)
    text = f"job {result.job} fetched: {files} file{'s' if files != 1 else ''} into {result.dir}"
    if failed:
        text += f"; {failed} replica{'s' if failed != 1 else ''} with errors"
    return text


class FetchDialog(ModalScreen[FetchResult | None]):
    """Fetch one job's logs and outputs; stays open with the result until closed."""

    VERTICAL_BREAKPOINTS = DIALOG_BREAKPOINTS

    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="Close the dialog (stops a fetch under way)"),
        Binding("ctrl+s", "fetch", "Fetch", tooltip="Fetch (Enter in the field does too)"),
    ]

    def __init__(
        self,
        job_id: int,
        name: str,
        run: RunFetch,
        to: str,
        memory: dict[str, str] | None = None,
        nodes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.nodes = list(dict.fromkeys(nodes))  # where the job's started replicas are
        self.job_id = job_id
        self.job_name = name
        self.run = run
        self.to = to
        self.memory = memory if memory is not None else {}
        self.result: FetchResult | None = None
        self.feed = ProgressFeed(self, self._show_progress)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog", classes="dialog"):
            yield Label(
                f"Fetch job {self.job_id} ({self.job_name})",
                classes="dialog-title",
                id="fetch-title",
            )
            yield Label(f"Into the directory (files go to DIR/{self.job_id}/INDEX-NODE/)")
            yield Input(self.to, id="fetch-to", compact=True)
            yield VerticalScroll(id="fetch-run")
            yield Static("", id="fetch-result", markup=False)
            yield Static("", id="fetch-line", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Fetch", variant="primary", id="fetch")
                yield Button("Close", id="close")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#fetch-run").display = False
        self.query_one("#fetch-result").display = False
        self.query_one("#fetch-to", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#fetch")
    def action_fetch(self) -> None:
        to = self.query_one("#fetch-to", Input).value.strip()
        line = self.query_one("#fetch-line", Static)
        if not to:
            line.update("Give the directory to fetch into.")
            return
        self.memory["fetch.to"] = to
        line.remove_class("ok")
        line.update("Fetching…")
        self._fetch(to)

    @work(exclusive=True, group="fetch", exit_on_error=False)
    async def _fetch(self, to: str) -> None:
        self.feed = ProgressFeed(self, self._show_progress)
        run = self.query_one("#fetch-run", VerticalScroll)
        await run.remove_children()
        await run.mount_all(NodeProgress(n) for n in self.nodes)
        run.display = True
        self.query_one("#fetch", Button).disabled = True
        try:
            result = await self.run(to, self.feed)
        except Exception as e:  # VerbError and any other: one line, the form stays
            self.query_one("#fetch-line", Static).update(
                " ".join(str(e).split()) or type(e).__name__
            )
            run.display = bool(run.children)
            return
        finally:
            self.query_one("#fetch", Button).disabled = False
        self.feed.drain()
        self._show_result(result)

    def _row(self, node: str) -> NodeProgress:
        rows = [r for r in self.query(NodeProgress) if r.node == node]
        if rows:
            return rows[0]
        row = NodeProgress(node)  # a node not expected: its row, drawn once mounted
        self.query_one("#fetch-run").mount(row)
        return row

    def _show_progress(self, moved: Progress) -> None:
        with self.app.batch_update():
            for node, (done, total) in moved.items():
                row = self._row(node)
                if row.is_mounted:
                    row.show_progress(done, total)
                else:
                    row.call_after_refresh(row.show_progress, done, total)

    def _show_result(self, result: FetchResult) -> None:
        self.result = result
        for row in self.query(NodeProgress):  # each node done: its bar full
            done = [r for r in result.replicas if r.node == row.node]
            failed = any(r.errors for r in done)
            size = sum(r.bytes for r in done)
            files = sum(len(r.files) for r in done)
            row.query_one(ProgressBar).update(total=size or 1, progress=size or 1)
            status = "failed" if failed else f"{files} file{'s' if files != 1 else ''}"
            row.query_one(".deploy-bytes", Static).update(f"{human_bytes(size)}, {status}")
            row.set_class(failed, "failed")
        out = result_lines(msgspec.to_builtins(result))
        box = self.query_one("#fetch-result", Static)
        box.update("\n".join([*out.out, *out.err]))
        box.set_class(bool(out.err), "failed")
        box.display = True
        line = self.query_one("#fetch-line", Static)
        line.set_class(not result.failed, "ok")
        line.update(f"{fetch_summary(result)} in {result.seconds:.1f} s")
        self.app.notify(
            fetch_summary(result), severity="warning" if result.failed else "information"
        )
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.workers.cancel_group(self, "fetch")
        self.dismiss(self.result)
