"""The master's config file: ``STATE_DIR/config.toml``, read with tomllib.

The ``[history]`` table says how many ended processes are remembered, per
node, and for how long.  The master announces it to every worker at the
handshake, so the master's view and each worker's records keep the same
ones, and the view after a worker restart is the view before it::

    [history]
    keep = 500                          # ended processes per node (newest kept)
    max_age = "7d"                      # and none older: seconds, or "90s" "30m" "12h" "7d"

The ``[ssh]`` table says how deploys reach the workers' sshd::

    [ssh]
    user = "root"                       # default: the user running the master
    key = "~/.ssh/id_ed25519"           # default: paramiko's own key lookup
    port = 22                           # default: the port each worker advertises
    known_hosts = "STATE_DIR/known_hosts"   # the default; relative = under STATE_DIR
    trust_unknown_host_keys = false     # true records unknown host keys on first use
    stall_timeout = 30                  # seconds a transfer may make no progress
    keep_open = 60                      # seconds an idle connection is kept for the next; 0: none

The ``[jobs]`` table says how long a job's working directories stay on the
nodes once it has ended (``fetch --purge`` removes them at once; ``rm APP``
too); without it they stay until then::

    [jobs]
    keep_workdirs = "3d"                # seconds, or "90s" "30m" "12h" "7d"

A missing file means every default.  A bad file is a `ConfigError` whose
message is one line naming the file and the key.
"""

from __future__ import annotations

import getpass
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.toml"
_SSH_KEYS = (
    "user",
    "key",
    "port",
    "known_hosts",
    "trust_unknown_host_keys",
    "stall_timeout",
    "keep_open",
)
MAX_STALL = 3600.0  # seconds: ssh.stall_timeout at most
MAX_KEEP_OPEN = 86400.0  # seconds: ssh.keep_open at most
_HISTORY_KEYS = ("keep", "max_age")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(Exception):
    """The config file is unreadable or wrong; the message is one line."""


@dataclass(frozen=True)
class SshConfig:
    """How the master connects to each worker's sshd for a deploy.

    ``port`` None means the port the worker advertises (``--ssh-port``);
    ``key`` None means paramiko's default lookup (agent, ~/.ssh/id_*).
    """

    user: str
    known_hosts: Path
    key: Path | None = None
    port: int | None = None
    trust_unknown_host_keys: bool = False
    # Seconds a transfer to a node may make no progress before it fails.
    stall_timeout: float = 30.0
    # Seconds an idle SSH connection to a node stays open for the next deploy,
    # bundle or fetch to reuse (OpenSSH's ControlPersist); 0 closes each after use.
    keep_open: float = 60.0


@dataclass(frozen=True)
class History:
    """Ended processes remembered per node: the newest ``keep``, none older than ``max_age`` s."""

    keep: int = 500
    max_age: float = 7 * 86400.0


def _read(state_dir: Path) -> tuple[Path, dict[str, Any]]:
    path = state_dir / CONFIG_NAME
    try:
        with path.open("rb") as f:
            return path, tomllib.load(f)
    except FileNotFoundError:
        return path, {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load_history(state_dir: Path) -> History:
    """The ``[history]`` settings of ``STATE_DIR/config.toml`` (defaults when absent)."""
    path, data = _read(state_dir)
    table = data.get("history", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: history: expected a table [history]")
    unknown = sorted(set(table) - set(_HISTORY_KEYS))
    if unknown:
        known = ", ".join(_HISTORY_KEYS)
        raise ConfigError(f"{path}: history.{unknown[0]}: unknown key (known: {known})")
    history = History()
    keep, max_age = history.keep, history.max_age
    if "keep" in table:
        keep = table["keep"]
        if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= 1_000_000:
            raise ConfigError(f"{path}: history.keep: expected 0-1000000, got {keep!r}")
    if "max_age" in table:
        seconds = _duration(table["max_age"])
        if seconds is None:
            raise ConfigError(
                f"{path}: history.max_age: expected seconds or 90s/30m/12h/7d, "
                f"got {table['max_age']!r}"
            )
        max_age = seconds
    return History(keep, max_age)


def load_keep_workdirs(state_dir: Path) -> float | None:
    """``[jobs] keep_workdirs`` in seconds; None when unset (kept until fetch --purge or rm)."""
    path, data = _read(state_dir)
    table = data.get("jobs", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: jobs: expected a table [jobs]")
    unknown = [k for k in table if k != "keep_workdirs"]
    if unknown:
        raise ConfigError(f"{path}: jobs.{unknown[0]}: unknown key (known: keep_workdirs)")
    if "keep_workdirs" not in table:
        return None
    seconds = _duration(table["keep_workdirs"])
    if seconds is None:
        raise ConfigError(
            f"{path}: jobs.keep_workdirs: expected seconds or 90s/30m/12h/7d, "
            f"got {table['keep_workdirs']!r}"
        )
    return seconds


def _duration(value: object) -> float | None:
    """Seconds in ``value`` (a positive number, or text like "12h"); None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 < value < float("inf") else None
    if not isinstance(value, str) or len(value) < 2 or value[-1] not in _UNITS:
        return None
    number = value[:-1].strip()
    if not number.isascii() or not number.isdigit() or int(number) == 0:
        return None
    return float(int(number) * _UNITS[value[-1]])


def default_ssh(state_dir: Path) -> SshConfig:
    return SshConfig(user=getpass.getuser(), known_hosts=state_dir / "known_hosts")


def load_ssh(state_dir: Path) -> SshConfig:
    """The ``[ssh]`` settings of ``STATE_DIR/config.toml`` (defaults when absent)."""
    path, data = _read(state_dir)
    ssh = data.get("ssh", {})
    if not isinstance(ssh, dict):
        raise ConfigError(f"{path}: ssh: expected a table [ssh]")
    return _ssh_from(path, state_dir, ssh)


def _ssh_from(path: Path, state_dir: Path, ssh: dict[str, Any]) -> SshConfig:
    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{path}: ssh.{key}: expected {expected}, got {ssh[key]!r}")

    unknown = sorted(set(ssh) - set(_SSH_KEYS))
    if unknown:
        known = ", ".join(_SSH_KEYS)
        raise ConfigError(f"{path}: ssh.{unknown[0]}: unknown key (known: {known})")
    config = default_ssh(state_dir)
    user, key, port, known_hosts = config.user, config.key, config.port, config.known_hosts
    trust, stall = config.trust_unknown_host_keys, config.stall_timeout
    keep_open = config.keep_open
    if "user" in ssh:
        if not isinstance(ssh["user"], str) or not ssh["user"].strip():
            raise bad("user", "a user name")
        user = ssh["user"].strip()
    if "key" in ssh:
        if not isinstance(ssh["key"], str) or not ssh["key"].strip():
            raise bad("key", "a path to a private key")
        key = _path(ssh["key"], state_dir)
    if "port" in ssh:
        value = ssh["port"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise bad("port", "a port number 1-65535")
        port = value
    if "known_hosts" in ssh:
        if not isinstance(ssh["known_hosts"], str) or not ssh["known_hosts"].strip():
            raise bad("known_hosts", "a path")
        known_hosts = _path(ssh["known_hosts"], state_dir)
    if "trust_unknown_host_keys" in ssh:
        if not isinstance(ssh["trust_unknown_host_keys"], bool):
            raise bad("trust_unknown_host_keys", "true or false")
        trust = ssh["trust_unknown_host_keys"]
    if "stall_timeout" in ssh:
        value = ssh["stall_timeout"]
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not number or not 0 < value <= MAX_STALL:
            raise bad("stall_timeout", f"seconds, more than 0 and at most {MAX_STALL:g}")
        stall = float(value)
    if "keep_open" in ssh:
        value = ssh["keep_open"]
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not number or not 0 <= value <= MAX_KEEP_OPEN:
            raise bad("keep_open", f"seconds, from 0 (close after each use) to {MAX_KEEP_OPEN:g}")
        keep_open = float(value)
    return SshConfig(user, known_hosts, key, port, trust, stall, keep_open)


def ssh_table(config: SshConfig) -> str:
    """``config`` as the ``[ssh]`` table of a config.toml (`load_ssh` reads it back)."""

    def quoted(text: str) -> str:
        return json.dumps(text)  # a JSON string is a TOML basic string

    lines = ["[ssh]", f"user = {quoted(config.user)}"]
    if config.key is not None:
        lines.append(f"key = {quoted(str(config.key))}")
    if config.port is not None:
        lines.append(f"port = {config.port}")
    lines.append(f"known_hosts = {quoted(str(config.known_hosts))}")
    lines.append(f"trust_unknown_host_keys = {str(config.trust_unknown_host_keys).lower()}")
    if config.stall_timeout != SshConfig.stall_timeout:
        lines.append(f"stall_timeout = {config.stall_timeout:g}")
    if config.keep_open != SshConfig.keep_open:
        lines.append(f"keep_open = {config.keep_open:g}")
    return "\n".join(lines) + "\n"


def _path(text: str, state_dir: Path) -> Path:
    """``~`` and a literal ``STATE_DIR`` expanded; a relative path is under STATE_DIR."""
    text = text.strip()
    if text == "STATE_DIR" or text.startswith("STATE_DIR/"):
        text = str(state_dir) + text.removeprefix("STATE_DIR")
    path = Path(text).expanduser()
    return path if path.is_absolute() else state_dir / path
