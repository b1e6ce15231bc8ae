"""The dashboard's settings: a TOML file the operator keeps, read once at start.

The file is ``--config PATH``, else ``$XDG_CONFIG_HOME/corral/dashboard.toml``
(``~/.config/corral/dashboard.toml``); a missing default file means the
defaults.  Every key is optional::

    theme = "nord"                       # a Textual theme (ctrl+p, "Theme")

    [processes]
    columns = ["key", "app", "command", "state", "cpu", "run"]   # which, in order
    filter = "state:running app:web"     # the filter line at start

    [keys]
    launch = "L"                         # an action's key(s): "L", "L,f2" or ["L", "f2"]

A bad file is refused as a whole with one line naming the file and the key
(`SettingsError`): the dashboard does not start on half its settings.  The
file is the operator's: the dashboard writes back only the theme chosen in
the palette, on exit, by replacing that one line (`save_theme`), so every
other key and comment stays as written.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.keys import Keys, _character_to_key, format_key, key_to_character
from textual.theme import BUILTIN_THEMES

from corral.tui.widgets.procs import COLUMN_NAMES, columns_named

FILE_NAME = "dashboard.toml"
TOP = ("theme", "processes", "keys")
PROCESSES = ("columns", "filter")
MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})
NAMED_KEYS = frozenset(k.value.rpartition("+")[2] for k in Keys if not k.value.startswith("<"))


class SettingsError(Exception):
    """The settings file cannot be used; the message is the one line to print."""


@dataclass(frozen=True)
class Settings:
    """What the file asked for; None / empty: the dashboard's own default."""

    path: Path | None = None  # where the theme is saved; None: nowhere
    columns: tuple[str, ...] | None = None
    filter: str = ""
    keys: Mapping[str, str] = field(default_factory=dict)  # binding id -> "key,key"
    theme: str | None = None


# --- where -----------------------------------------------------------------------------
def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/corral/dashboard.toml``, ``~/.config/...`` when unset or relative."""
    base = environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "corral" / FILE_NAME


def shown(path: Path) -> str:
    """``path`` as the operator would type it: ``~/...`` under the home directory."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def load(config: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """The settings from ``config``, else from the default file if there is one."""
    path = Path(config) if config is not None else default_path(environ)
    where = str(config) if config is not None else shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if config is not None:
            raise SettingsError(f"{where}: no such file") from None
        return Settings(path=path)
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"{where}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse(text, path, where)


# --- reading ---------------------------------------------------------------------------
def parse(text: str, path: Path | None = None, where: str = "settings") -> Settings:
    """Check every key of the file's ``text``; `SettingsError` names the first bad one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{where}: not TOML: {e}") from None
    try:
        _known(data, TOP, "")
        processes = _table(data, "processes")
        _known(processes, PROCESSES, "processes.")
        return Settings(
            path=path,
            columns=_columns(processes.get("columns")),
            filter=_string(processes.get("filter", ""), "processes.filter"),
            keys=_keys(_table(data, "keys")),
            theme=_theme(data.get("theme")),
        )
    except SettingsError as e:
        raise SettingsError(f"{where}: {e}") from None


def _known(table: Mapping[str, Any], known: Iterable[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise SettingsError(f"{prefix}{key}: unknown setting (known: {', '.join(known)})")


def _table(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise SettingsError(f"{name}: expected a table ([{name}]), got {_kind(value)}")
    return value


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{key}: expected a string, got {_kind(value)}")
    return value


def _q(text: str) -> str:
    """``text`` quoted as TOML writes a string."""
    return json.dumps(text, ensure_ascii=False)


_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}


def _kind(value: object) -> str:
    """A TOML value's type, as the error names it."""
    return _KINDS.get(type(value), "a table" if isinstance(value, dict) else type(value).__name__)


def _columns(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise SettingsError(
            f"processes.columns: expected a list of column names, got {_kind(value)}"
        )
    if not value:
        raise SettingsError("processes.columns: empty (name at least one column)")
    seen: list[str] = []
    for i, name in enumerate(value):
        key = f"processes.columns[{i}]"
        _string(name, key)
        try:
            (column,) = columns_named([name])
        except ValueError:
            known = ", ".join(COLUMN_NAMES)
            raise SettingsError(f"{key}: unknown column {_q(name)} (known: {known})") from None
        if column in seen:
            raise SettingsError(f"{key}: column {_q(name)} given twice")
        seen.append(column)
    return tuple(seen)


def _theme(value: object) -> str | None:
    if value is None:
        return None
    name = _string(value, "theme")
    if name not in BUILTIN_THEMES:
        close = difflib.get_close_matches(name, BUILTIN_THEMES, n=3)
        guess = f"did you mean {' or '.join(close)}? " if close else ""
        known = ", ".join(sorted(BUILTIN_THEMES))
        raise SettingsError(f"theme: unknown theme {_q(name)} ({guess}known: {known})")
    return name


# --- keys ------------------------------------------------------------------------------
def scopes() -> list[tuple[str, list[Binding]]]:
    """The main screen's bindings by where they work; the first is the whole screen's.

    A key bound in a pane shadows the screen's key while that pane has the
    focus, and the app's keys work everywhere: a rebound key must stay clear
    of both.  Panes never see each other's keys.
    """
    from corral.tui.app import CorralApp
    from corral.tui.widgets.dashboard import Dashboard
    from corral.tui.widgets.log_pane import LogPane
    from corral.tui.widgets.nodes import NodesTable
    from corral.tui.widgets.procs import ProcsTable

    where: list[tuple[str, type[DOMNode]]] = [
        ("anywhere", Dashboard),
        ("the app", CorralApp),
        ("the processes pane", ProcsTable),
        ("the nodes pane", NodesTable),
        ("the log pane", LogPane),
    ]
    return [(name, _flat(cls._merge_bindings().key_to_bindings.values())) for name, cls in where]


def _flat(lists: Iterable[list[Binding]]) -> list[Binding]:
    return [b for bindings in lists for b in bindings]


def actions() -> dict[str, Binding]:
    """The bindings a file may rebind, by id (the action's name): those that have an id."""
    out: dict[str, Binding] = {}
    for _, bindings in scopes():
        for b in bindings:
            if b.id is not None:
                out.setdefault(b.id, b)
    return out


def _keys(table: Mapping[str, Any]) -> dict[str, str]:
    if not table:
        return {}
    known = actions()
    keymap: dict[str, str] = {}
    for action, value in table.items():
        if action not in known:
            names = ", ".join(sorted(known))
            raise SettingsError(f"keys.{action}: unknown action (known: {names})")
        keymap[action] = ",".join(_key_list(value, f"keys.{action}"))
    _check_clashes(keymap)
    return keymap


def _key_list(value: object, where: str) -> list[str]:
    """Textual's key names for one action: ``"L"``, ``"L,f2"`` or ``["L", "f2"]``."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise SettingsError(f"{where}: expected a key or a list of keys, got {_kind(value)}")
    keys = [_key(item.strip(), where) for item in items]
    for key in keys:
        if keys.count(key) > 1:
            raise SettingsError(f"{where}: key {_q(format_key(key))} given twice")
    return keys


def _key(text: str, where: str) -> str:
    """One key as Textual names it (``?`` is ``question_mark``); unknown names refused."""
    if len(text) == 1:
        return _character_to_key(text)
    *mods, base = text.split("+")
    if mods == ["shift"] and len(base) == 1 and base.isalpha():
        return base.upper()  # the terminal sends shift+l as "L"
    ok = bool(base) and all(m in MODIFIERS for m in mods)
    if ok and len(base) > 1:
        ok = base in NAMED_KEYS or key_to_character(base) is not None
    if not ok:
        raise SettingsError(f"{where}: unknown key {_q(text)} (e.g. L, ctrl+l, f2, space, enter)")
    return text if len(base) > 1 else "+".join([*mods, _character_to_key(base)])


def _check_clashes(keymap: Mapping[str, str]) -> None:
    """A rebound key must not be another action's key where both can fire."""
    found = scopes()
    everywhere = {found[0][0], found[1][0]}  # the screen's keys and the app's
    for name, bindings in found:
        for action, keys in keymap.items():
            if not any(b.id == action for b in bindings):
                continue  # ``action`` is not bound here
            for other, others in found:
                if other == name or everywhere & {name, other}:  # two panes never meet
                    _clash(action, keys, keymap, others, "" if other == name else other)


def _clash(
    action: str, keys: str, keymap: Mapping[str, str], others: list[Binding], where: str
) -> None:
    for other in others:
        if other.id == action:
            continue
        their = keymap.get(other.id, other.key) if other.id is not None else other.key
        for key in keys.split(","):
            if key in their.split(","):
                place = f" in {where}" if where else ""
                raise SettingsError(
                    f"keys.{action}: {_q(format_key(key))} is already the key of "
                    f"{_name(other)}{place}"
                )


def _name(binding: Binding) -> str:
    return binding.id or binding.action.rpartition(".")[2]


def rebind(
    sections: Iterable[tuple[str, list[BindingType]]], keymap: Mapping[str, str]
) -> list[tuple[str, list[BindingType]]]:
    """``sections`` (see `help_sections`) with the keys the keymap gave: for help and palette."""

    def swap(b: BindingType) -> BindingType:
        if isinstance(b, Binding) and b.id is not None and b.id in keymap:
            return b.with_key(keymap[b.id])
        return b

    return [(where, [swap(b) for b in bindings]) for where, bindings in sections]


# --- writing the theme back ------------------------------------------------------------
_THEME_LINE = re.compile(r"""^[ \t]*(theme|"theme"|'theme')[ \t]*=""")
_TABLE_LINE = re.compile(r"^[ \t]*\[")


def save_theme(path: Path, theme: str) -> None:
    """Set ``theme = ...`` in the file at ``path``, every other line as it was.

    The file is replaced atomically (a temporary file beside it, renamed
    over it), keeping its mode.  `SettingsError` if the file changed into
    something this cannot edit safely; OSError if it cannot be written.
    """
    target = path.resolve() if path.is_symlink() else path
    try:
        old = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = None
    new = _with_theme(old or "", theme)
    _check_edit(old or "", new, theme, shown(path))
    _write_atomically(target, new)


def _with_theme(text: str, theme: str) -> str:
    line = f"theme = {json.dumps(theme)}\n"
    lines = text.splitlines(keepends=True)
    for i, old in enumerate(lines):
        if _TABLE_LINE.match(old):
            break
        if _THEME_LINE.match(old):
            comment = _trailing_comment(old)
            lines[i] = line if not comment else f"{line[:-1]}  {comment}\n"
            return "".join(lines)
    else:
        i = len(lines)
    if i and not lines[i - 1].endswith("\n"):
        lines[i - 1] += "\n"
    return "".join([*lines[:i], line, *(["\n"] if i < len(lines) else []), *lines[i:]])


def _trailing_comment(line: str) -> str:
    """The ``# ...`` after a simple ``theme = "name"`` value, if any."""
    m = re.match(r"""^[^=]*=\s*("[^"\\]*"|'[^']*')\s*(#.*)?$""", line.rstrip("\n"))
    return (m.group(2) or "") if m else ""


def _check_edit(old: str, new: str, theme: str, where: str) -> None:
    """The edit changed the theme and nothing else, or it is not made."""
    try:
        before = tomllib.loads(old)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{where}: theme not saved: the file is not TOML now: {e}") from None
    try:
        ok = tomllib.loads(new) == {**before, "theme": theme}
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        raise SettingsError(f'{where}: theme not saved: its line is not a plain theme = "..."')


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
