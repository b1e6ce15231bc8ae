"""The ``/`` filter line above the processes table."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    """Typing filters live; Enter keeps the filter, Escape clears it."""

    BINDINGS = [
        Binding("escape", "clear_filter", "Clear", tooltip="Clear the filter (Enter keeps it)")
    ]

    class Done(Message):
        """The operator left the filter line."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            placeholder="filter: node:NAME app:APP state:STATE or any text",
            **kwargs,  # type: ignore[arg-type]
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Done())

    def action_clear_filter(self) -> None:
        self.value = ""
        self.post_message(self.Done())
