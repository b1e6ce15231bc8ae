"""The long-running verbs: ``corral master`` and ``corral worker``."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.client import state_dir
from corral.master.verbs.base import CommandError, UsageError
from corral.transport.addresses import WILDCARDS, split_hostport

if TYPE_CHECKING:
    from corral.master.control import Master, MasterConfig
    from corral.tui.settings import Settings

Dashboard = Callable[..., Any]


def _note(line: str) -> None:
    print(f"corral: {line}", file=sys.stderr)


def check_address(flag: str, text: str, default_port: int) -> None:
    try:
        split_hostport(text, default_port)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None


def load_dashboard(config: str | None = None, headless: bool = False) -> Dashboard | None:
    """`tui.app.run_dashboard` with its settings; None to run headless.

    None also (with a one-line note) when the dashboard cannot run here.
    The settings file (``config``, else the default one) is read before
    anything starts: a bad one is a usage error.  ``config`` is checked even
    when no dashboard runs; the default file only when one does.
    """
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    runs = tty and not headless
    settings = read_settings(config) if runs or config is not None else None
    if not (headless or tty):
        _note("not a terminal: running headless")
    if not runs:
        return None
    try:
        from corral.tui.app import run_dashboard
    except ImportError as e:
        _note(f"the dashboard is not available ({e}): running headless")
        return None
    return functools.partial(run_dashboard, settings=settings)


def read_settings(config: str | None) -> Settings | None:
    """The dashboard's settings file, read; None without Textual (the dashboard cannot run)."""
    try:
        from corral.tui.settings import SettingsError, load
    except ImportError:
        return None
    try:
        return load(config)
    except SettingsError as e:
        raise UsageError(str(e)) from None


def log_to(path: Path | None) -> None:
    """Warnings (a refused worker, a bad frame) to stderr, or to a file under a dashboard."""
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
    if path is None:
        logging.basicConfig(level=logging.WARNING, format=fmt, stream=sys.stderr)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format=fmt, filename=str(path))


def run_master(
    master: Master,
    dashboard: Dashboard | None,
    on_ready: Any = None,
    announce: Callable[[str], None] | None = None,
    **shown: Any,
) -> int:
    """Serve ``master`` under the dashboard, or headless; returns the exit status.

    ``shown`` goes to the dashboard: ``reach`` (how another shell reaches this
    master), ``demo`` (q ends a demo), ``deploy_notice`` (why deploys cannot work).
    """
    if dashboard is None:
        from corral.master.headless import serve
        from corral.transport.loop import run as run_loop

        if announce is None:
            return run_loop(serve(master, ready=on_ready))
        return run_loop(serve(master, announce, ready=on_ready))
    return int(dashboard(master, on_ready=on_ready, **shown) or 0)


def reach_line(state: Path, pointer: bool = False) -> str:
    """The command another shell of this user runs to reach the master with ``state``.

    Plain ``corral nodes`` when the client finds ``state`` unaided: it is
    the default state dir and no variable points elsewhere, or (``pointer``)
    a demo's pointer names it and nothing else is configured.
    """
    from corral.client import STATE_ENV, demo_state_dir, nothing_configured
    from corral.master.state import default_state_dir

    if pointer:
        found = demo_state_dir() == state
    else:
        env = os.environ.get(STATE_ENV, "").strip()
        found = nothing_configured() and state == default_state_dir()
        found = found or (env != "" and Path(env).expanduser() == state)
    return "corral nodes" if found else f"CORRAL_STATE_DIR={state} corral nodes"


def master_config(args: argparse.Namespace) -> MasterConfig:
    from corral.master.control import MasterConfig
    from corral.master.etcd import parse_urls

    check_address("--listen", args.listen, 7070)
    check_address("--api", args.api, 7071)
    given = getattr(args, "advertise", None)
    advertise = (given or "").strip().removeprefix("[").removesuffix("]")
    if given is not None:
        bad = not advertise or len(advertise) > 253 or any(c in advertise for c in " \t/[]@")
        if bad or advertise in WILDCARDS:
            raise UsageError(
                f"--advertise: bad host {given!r}: give the address or name other machines "
                "reach this master at, e.g. 10.0.0.1"
            )
    etcd: list[str] = []
    if getattr(args, "etcd", None) is not None:
        try:
            etcd = parse_urls(args.etcd)
        except ValueError as e:
            raise UsageError(str(e)) from None
    name = getattr(args, "name", None) or ""
    if name and (len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name)):
        raise UsageError(f"--name: bad master name {name!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    return MasterConfig(
        listen=args.listen,
        api=args.api,
        state_dir=state_dir(args.state_dir),
        heartbeat=args.heartbeat,
        etcd=etcd,
        name=name,
        lease=getattr(args, "lease", 5.0),
        advertise=advertise,
    )


def master(args: argparse.Namespace) -> int:
    from corral.master.control import Master

    config = master_config(args)
    dashboard = load_dashboard(args.config, headless=args.headless)
    log_to(None if dashboard is None else config.state_dir / "master.log")
    shown: dict[str, Any] = {} if dashboard is None else {"reach": reach_line(config.state_dir)}
    return run_master(Master(config), dashboard, **shown)


# --- worker ---------------------------------------------------------------------------
def worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker daemon's own flags, or the documented ones if it is not installed."""
    try:
        daemon_worker = importlib.import_module("corral.daemon.worker")
    except ImportError as e:
        parser.set_defaults(worker_missing=str(e))
        parser.add_argument("--master", metavar="HOST:PORT", required=True)
        parser.add_argument("--name", metavar="NAME")
        parser.add_argument("--root", metavar="DIR")
        parser.add_argument("--token-file", metavar="F")
        return
    daemon_worker.add_arguments(parser)
    parser.set_defaults(worker_main=daemon_worker.main)


def worker(args: argparse.Namespace) -> int:
    run = getattr(args, "worker_main", None)
    if run is None:
        why = getattr(args, "worker_missing", "corral.daemon.worker not found")
        raise CommandError(f"the worker daemon is not available here ({why})")
    status = run(args)
    return int(status or 0)
