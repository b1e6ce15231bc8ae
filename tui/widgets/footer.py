"""A footer that shows the keys that fit, the most useful first, and never a cut label.

Textual's footer lays every key out in a row and cuts the last one off
("^d Rm a") when the terminal is narrow.  `KeyFooter` measures each key
as the footer draws it and keeps, in ``priority`` order, those that fit
beside the palette key; the rest are one ``?`` away.  Each modal screen
yields its own, so a dialog shows its keys and not the main screen's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

PALETTE_EXTRA = 2  # the palette key's left border and right padding
# Dialog screens get "-short" below 30 lines: less padding, so more shows (see app.tcss).
DIALOG_BREAKPOINTS = [(0, "-short"), (30, "-tall")]


def key_width(key_display: str, description: str) -> int:
    """Cells one key takes in a (non-compact) footer: " key " then "description "."""
    return cell_len(key_display) + 2 + (cell_len(description) + 1 if description else 0)


class KeyFooter(Footer):
    """The footer's keys, dropped lowest priority first until they fit the width."""

    def __init__(self, priority: Sequence[str] = (), **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.priority = tuple(priority)
        self._width = 0
        self.dropped: list[str] = []  # actions left out at this width (for tests)

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        yield from self._keys()

    def _keys(self) -> Iterator[Widget]:
        active = self.screen.active_bindings
        items: dict[str, tuple[Binding, bool, str]] = {}
        for _node, binding, enabled, tooltip in active.values():
            if binding.show:
                items.setdefault(binding.action, (binding, enabled, tooltip))
        palette = None
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            found = active.get(self.app.COMMAND_PALETTE_BINDING)
            if found is not None:
                palette = found
        room = self._width or self.app.size.width
        if palette is not None:
            b = palette[1]
            room -= key_width(self.app.get_key_display(b), b.description) + PALETTE_EXTRA
        order = list(items)
        rank = {a: (self.priority.index(a) if a in self.priority else len(order) + i)
                for i, a in enumerate(order)}  # fmt: skip
        keep, used = set(), 0
        for action in sorted(order, key=rank.__getitem__):
            b = items[action][0]
            width = key_width(self.app.get_key_display(b), b.description)
            if used + width <= room:
                keep.add(action)
                used += width
        self.dropped = [a for a in order if a not in keep]
        for action in order:
            if action in keep:
                b, enabled, tooltip = items[action]
                yield self._unbound(
                    FooterKey(
                        b.key,
                        self.app.get_key_display(b),
                        b.description,
                        b.action,
                        disabled=not enabled,
                        tooltip=tooltip,
                    )
                )
        if palette is not None:
            _node, b, enabled, tooltip = palette
            yield FooterKey(
                b.key,
                self.app.get_key_display(b),
                b.description,
                b.action,
                classes="-command-palette",
                disabled=not enabled,
                tooltip=b.tooltip or b.description,
            )

    # Memory (issue 11 item 8): Textual's footer binds each key's ``compact``
    # to the footer's (data_bind), which adds a watcher on the footer that is
    # only dropped when ``compact`` changes: every recompose kept its dead
    # keys alive (75 MiB a minute in bench/soak.py, the selected row
    # changing with the churn).  Keys take the value
    # instead (set above), and bindings republished unchanged (each
    # selection, each focus) do not rebuild them.
    _shown: tuple[object, ...] | None = None

    def _signature(self) -> tuple[object, ...]:
        """What the keys shown depend on: the active bindings and the width."""
        active = self.screen.active_bindings
        keys = tuple((b, enabled, tip) for _node, b, enabled, tip in active.values())
        return (keys, self._width or self.app.size.width, self.compact, self.show_command_palette)

    def _unbound(self, key: FooterKey) -> FooterKey:
        key.set_reactive(FooterKey.compact, self.compact)  # its watcher sets the class at mount
        return key

    async def recompose(self) -> None:
        if not self.is_attached or self._pruning:  # as Widget.recompose: gone with its screen
            return
        shown = self._signature()
        if shown == self._shown:
            return
        self._shown = shown
        await super().recompose()

    def on_resize(self, event: Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self.call_after_refresh(self.recompose)
